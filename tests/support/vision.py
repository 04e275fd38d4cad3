"""Vision fixtures: configs, the pipeline built once per session, the labelled photos
and their analyses (int8 pipeline, float objects) computed once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from deskwatch.config import Config, load_config_text
from tests.support.common import PHOTOS, REPO, in_first_set

MODELS = REPO / "models"


def vision_config(state_dir: Path, **vision: Any) -> Config:
    """A valid config for the vision stage (repo models, full profile)."""
    doc: dict[str, Any] = {
        "device": {"id": "desk-test", "site": "test", "worker_id": "w-test"},
        "mqtt": {"host": "localhost"},
        "state_dir": str(state_dir),
        "vision": vision,
    }
    profile = vision.pop("profile", None)
    if profile:
        doc["policy"] = {"profile": profile}
        if profile == "uk":
            doc["schedule"] = {"mode": "fixed", "fixed_times": ["10:00"]}
    return load_config_text(yaml.safe_dump(doc))


@dataclass
class Photo:
    file: str
    labels: dict[str, Any]
    image: np.ndarray

    @property
    def category(self) -> str:
        return self.file.split("_")[0]


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def camera_burst(image: np.ndarray, frames: int, noise: float = 2.0) -> list[np.ndarray]:
    """``frames`` copies of a photo as a still scene through a camera, as the bench makes
    them (seeded by the photo, so a test sees the same burst each run)."""
    from deskwatch.commands.bench import camera_burst as burst

    return burst(image, frames, seed=len(image), noise=noise)


@pytest.fixture(scope="session")
def labelled_photos() -> list[Photo]:
    if not (PHOTOS / "labels.yaml").exists():
        pytest.fail(f"test photos not found at {PHOTOS}: the repository is incomplete")
    labels = yaml.safe_load((PHOTOS / "labels.yaml").read_text())["files"]
    return [Photo(f["file"], f, load_rgb(PHOTOS / f["file"])) for f in labels]


@pytest.fixture(scope="session")
def first_set_photos(labelled_photos: list[Photo]) -> list[Photo]:
    """The photos the first landing's floors were measured on (see ``in_first_set``)."""
    return [p for p in labelled_photos if in_first_set(p.file)]


@pytest.fixture(scope="session")
def vision_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vision-state")


@pytest.fixture(scope="session")
def int8_vision(vision_state: Path) -> Any:
    """The pipeline as the daemon builds it (int8 detector, phone pass), once."""
    from deskwatch.app import build_vision

    vision = build_vision(vision_config(vision_state, object_precision="int8"))
    yield vision
    vision.close()


@pytest.fixture(scope="session")
def int8_analyses(int8_vision: Any, labelled_photos: list[Photo]) -> dict[str, Any]:
    """file -> FrameAnalysis of every labelled photo (int8 pipeline)."""
    return {p.file: int8_vision.analyze(p.image) for p in labelled_photos}


@pytest.fixture(scope="session")
def float_detections(vision_state: Path, labelled_photos: list[Photo]) -> dict[str, Any]:
    """file -> detections of the float reference detector (objects only)."""
    from deskwatch.vision.objects import ObjectDetector
    from deskwatch.vision.pipeline import OBJECT_MODELS
    from deskwatch.vision.runtime import ModelStore

    cfg = vision_config(vision_state)
    store = ModelStore(cfg.vision)
    detector = ObjectDetector(
        store.load(OBJECT_MODELS["float"]),
        thresholds=cfg.vision.label_thresholds,
        default_threshold=cfg.vision.object_threshold,
        nms_iou=cfg.vision.object_nms_iou,
    )
    out = {p.file: detector.detect(p.image) for p in labelled_photos}
    store.close()
    return out
