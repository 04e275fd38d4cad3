"""The appliance's root file system, installed once per test session (see deskwatch_dev.imageroot).

The chroot checks of the install layer and the emulator boot share it: the install layer
runs once. On arm64 the base is the bootable machine (kernel, init, udev), so the same
tree boots in qemu-system-aarch64; elsewhere it is the plain base and only the chroot
checks run. The trusted update and job keys are throwaway ones made here.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deskwatch_contract.signing import generate_key
from deskwatch_dev import imageroot


@dataclass(frozen=True)
class ImageRoot:
    root: Path
    arch: str
    bootable: bool  # has a kernel, init and udev (the arm64 machine base)
    keys: Path  # updates/{key.pem,key.pub}, jobs/{key.pem,key.pub}: private halves stay here
    log: str


def make_keys(directory: Path) -> Path:
    for kind in ("updates", "jobs"):
        (directory / kind).mkdir(parents=True, exist_ok=True)
        private, public = generate_key()
        (directory / kind / "test.pub").write_bytes(public)
        (directory.parent / f"{kind}.pem").write_bytes(private)
    return directory


@pytest.fixture(scope="session")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageRoot]:
    why = imageroot.can_build()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("image")
    keys = make_keys(work / "keys" / "public")
    bootable = imageroot.ARCH == "arm64"
    tarball = imageroot.machine_tarball() if bootable else imageroot.base_tarball()
    root = work / "rootfs"
    log = imageroot.install_layer(root, tarball, keys=keys)
    (work / "install-layer.log").write_text(log)
    yield ImageRoot(root, imageroot.ARCH, bootable, keys.parent, log)
    leftover = imageroot.mounts_under(root)
    for m in reversed(leftover):
        subprocess.run(["umount", "-l", m], check=False)
    shutil.rmtree(root, ignore_errors=True)
    assert not leftover, f"install-layer.sh left mounts behind: {leftover}"
