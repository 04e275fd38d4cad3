"""An enrolment survives a power cut right after it: the technician enrols the worker, then
unplugs the device to carry it to the desk.

A real ext4 on a loop device, mounted with a long journal commit interval (as a quiet card
may go seconds between commits); the "power cut" is a copy of the disk image taken right
after the enrolment returned, checked by e2fsck (journal replay) as the next boot would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deskwatch.vision.identity import save_templates


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def card(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(the mounted state directory, the disk image behind it)."""
    missing = [t for t in ("mount", "losetup", "mkfs.ext4", "e2fsck", "debugfs") if shutil.which(t) is None]
    why = "needs root (mount, losetup)" if os.geteuid() != 0 else ", ".join(missing) and f"missing {missing}"
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    back, mnt = tmp_path / "back", tmp_path / "mnt"
    back.mkdir()
    mnt.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=48M", "tmpfs", str(back))
    image = back / "disk.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    _run("mkfs.ext4", "-q", "-E", "nodiscard", str(image))
    loop = _run("losetup", "-f", "--show", str(image))
    try:
        _run("mount", "-o", "commit=300", loop, str(mnt))
        try:
            state = mnt / "state"
            state.mkdir(mode=0o700)
            os.sync()
            yield state, image
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True)
        subprocess.run(["umount", str(back)], capture_output=True)


def after_power_cut(image: Path, directory: str) -> list[str]:
    """The names in ``directory`` on the card as the next boot finds it."""
    snap = image.with_name("after-cut.img")
    shutil.copyfile(image, snap)  # what the loop device had written: the power goes now
    subprocess.run(["e2fsck", "-fy", str(snap)], capture_output=True)  # exit 1: the journal replayed
    listing = _run("debugfs", "-R", f"ls {directory}", str(snap))
    # "12  (12) .    13  (12) ..    14  (4072) w-1.npz": inode, (record length), name
    return sorted(name for name in re.findall(r"\(\d+\)\s+(\S+)", listing) if name not in (".", ".."))


def test_an_enrolment_is_on_the_card_when_the_power_goes_right_after_it(card: tuple[Path, Path]) -> None:
    """Before: the file was fsynced, the rename into place was not: the card held only
    templates/.tmp-xxxx.npz (the worker's biometric data under a name nothing reads or
    deletes), and the worker was not enrolled."""
    state, image = card
    save_templates(state, "w-1", np.ones((3, 128)), backend="tflite", model_sha256="0" * 64)
    assert after_power_cut(image, "/state/templates") == ["w-1.npz"]


def test_a_write_a_power_cut_stopped_leaves_no_templates_behind(card: tuple[Path, Path]) -> None:
    state, _ = card
    (state / "templates").mkdir(mode=0o700)
    (state / "templates" / ".tmp-cut0001.npz").write_bytes(b"half an enrolment")
    save_templates(state, "w-1", np.ones((3, 128)), backend="tflite", model_sha256="0" * 64)
    assert sorted(p.name for p in (state / "templates").iterdir()) == ["w-1.npz"]
