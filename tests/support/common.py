"""Fixtures every area uses: the repository and its test photos, a fake clock, a config writer."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "tests" / "data" / "photos"
# Added for the phone work (issue 12): phones held in the hand, phones lying near someone,
# and hands or objects at the face with no phone (hard negatives). The floors of the first
# landing were measured on the other photos; the phone tests hold their own for these.
PHONE_SETS_ADDED = ("phone_hand_", "phone_desk_", "nophone_hand_")


def in_first_set(name: str) -> bool:
    """A photo of the set the first landing's floors were measured on."""
    return not name.startswith(PHONE_SETS_ADDED)


class FakeClock:
    """Wall and monotonic time that only move when told to (or when someone waits)."""

    def __init__(self, start: datetime | None = None):
        self._wall = start or datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # a Monday
        self._mono = 1000.0
        self.waits: list[float] = []
        self.synced: bool | None = True  # what the time service says (a test sets False: not synchronised)

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def synchronised(self) -> bool | None:
        return self.synced

    def advance(self, seconds: float) -> None:
        self._wall += timedelta(seconds=seconds)
        self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """The wall clock jumps (NTP sync, wrong RTC); monotonic time does not."""
        self._wall += timedelta(seconds=seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.waits.append(seconds)
        self.advance(max(0.0, seconds))
        return event.is_set()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def photos() -> Path:
    if not (PHOTOS / "labels.yaml").exists():
        pytest.fail(f"test photos not found at {PHOTOS}: the repository is incomplete")
    return PHOTOS


@pytest.fixture
def photo_labels(photos: Path) -> dict[str, dict[str, object]]:
    data = yaml.safe_load((photos / "labels.yaml").read_text())
    return {entry["file"]: entry for entry in data["files"]}


MINIMAL_CONFIG = """\
device: {id: desk-1, site: site-a, worker_id: w-1}
mqtt: {host: 127.0.0.1, port: 1883, tls: {enabled: false}}
camera: {backend: replay, source: SOURCE, burst_frames: 3, burst_seconds: 0.2}
schedule:
  shifts: [{days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00"}]
  mode: interval
  interval_seconds: 5
state_dir: STATE
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a valid config (optionally with extra YAML merged on top) and return its path."""

    def write(extra: str = "", *, source: str | None = None, name: str = "config.yaml") -> Path:
        text = MINIMAL_CONFIG.replace("SOURCE", source or str(PHOTOS / "single_01.jpg"))
        text = text.replace("STATE", str(tmp_path / "state"))
        data = yaml.safe_load(text)
        for key, value in (yaml.safe_load(textwrap.dedent(extra)) or {}).items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
