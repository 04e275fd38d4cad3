"""The ``policy`` config section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config.schema import setting


@dataclass(frozen=True)
class PolicyConfig:
    """Which checks run and how strict they are."""

    profile: Literal["full", "uk", "minimal"] = setting("full", doc="Jurisdiction profile: full (every rule, random scans), uk (no random scans, no identity check: scheduled desk checks only), minimal (presence and lighting, no images leave the device).")
    persistence: float = setting(0.6, doc="Share of a burst's frames in which a condition must be seen before it becomes a finding.", minimum=0.1, maximum=1.0)
