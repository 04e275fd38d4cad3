"""The ``vision`` config section."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.schema import setting


@dataclass(frozen=True)
class LightConfig:
    """Thresholds of the pixel-statistics check that gates every other rule."""

    low_light_luma: float = setting(40.0, doc="Mean brightness (0-255) below which the frame is too dark to check anything: low_light.", minimum=0.0, maximum=255.0)
    dark_pixel_luma: float = setting(30.0, doc="A pixel darker than this counts as dark.", minimum=0.0, maximum=255.0)
    obstructed_detail: float = setting(2.0, doc="Mean gradient below which the view has no detail at all (lens covered, camera facing a wall): camera_obstructed.", minimum=0.0, maximum=100.0)
    obstructed_contrast: float = setting(8.0, doc="Brightness spread below which a bright but featureless frame counts as obstructed.", minimum=0.0, maximum=128.0)


@dataclass(frozen=True)
class VisionConfig:
    """On-device detectors."""

    light: LightConfig = field(default_factory=LightConfig, metadata={"doc": "Light and obstruction check."})
