"""Health says whether the worker's face template exists, so a fleet view can flag a desk nobody enrolled."""

from __future__ import annotations

from pathlib import Path

from deskwatch.app import identity_state
from deskwatch.config import Config, load_config_text


def config(tmp_path: Path, profile: str = "full") -> Config:
    return load_config_text(
        f"device: {{id: desk-1, site: acme, worker_id: w-1}}\nstate_dir: {tmp_path}\npolicy: {{profile: {profile}}}\n"
        + ("schedule: {mode: fixed, fixed_times: ['10:00']}\n" if profile == "uk" else "")
    )


def test_identity_state_follows_the_template_file_and_the_profile(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert identity_state(cfg) == "not_enrolled"
    (tmp_path / "templates").mkdir(mode=0o700)
    (tmp_path / "templates" / "w-1.npz").write_bytes(b"not read here")
    assert identity_state(cfg) == "enrolled"
    assert identity_state(config(tmp_path, "uk")) == "off"
