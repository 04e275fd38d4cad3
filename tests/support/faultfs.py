"""Small real filesystems that fail on demand, for the collector's storage-fault tests.

- :meth:`FaultFs.tmpfs`: a tmpfs of a few MiB; :meth:`FaultFs.fill` takes its last byte
  (SQLite then fails with ``database or disk is full``).
- :meth:`FaultFs.ext4_on_tmpfs`: ext4 on a loop device whose backing file lives on a small
  tmpfs. Filling that tmpfs (:meth:`FaultFs.starve_backing`) makes the loop device fail its
  writes, so the ext4 above sees real I/O errors (``disk I/O error`` in SQLite) and then,
  with ``errors=remount-ro``, turns itself read-only.
- :meth:`FaultFs.force_read_only`: ext4's own error path (``/sys/fs/ext4/<dev>/trigger_fs_error``)
  turns the mounted filesystem read-only under open files, as a failing disk would.
- :meth:`FaultFs.repair`: what an operator does next: free the backing store, unmount,
  ``e2fsck -fy``, mount again.

Needs root (mount, losetup); without it the fixture fails in CI and skips elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


class FaultFs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.mnt = root / "mnt"
        self.back = root / "back"
        self.mnt.mkdir()
        self.back.mkdir()
        self.loop: str | None = None
        self._mounted: list[Path] = []

    def tmpfs(self, size_mib: int = 3) -> Path:
        _run("mount", "-t", "tmpfs", "-o", f"size={size_mib}M,mode=0700", "tmpfs", str(self.mnt))
        self._mounted.append(self.mnt)
        return self.mnt

    def ext4_on_tmpfs(self, backing_mib: int = 6, disk_mib: int = 32) -> Path:
        _run("mount", "-t", "tmpfs", "-o", f"size={backing_mib}M", "tmpfs", str(self.back))
        self._mounted.append(self.back)
        image = self.back / "disk.img"
        with open(image, "wb") as f:
            f.truncate(disk_mib * 1024 * 1024)  # sparse: most of it has no backing yet
        _run("mkfs.ext4", "-q", "-E", "nodiscard", str(image))
        self.loop = _run("losetup", "-f", "--show", str(image))
        _run("blockdev", "--setrw", self.loop)
        _run("mount", "-o", "errors=remount-ro", self.loop, str(self.mnt))
        self._mounted.insert(0, self.mnt)
        return self.mnt

    def fill(self, where: Path | None = None) -> None:
        target = (where or self.mnt) / "filler"
        # unbuffered: a buffered file keeps what the last write could not place and fails
        # again when it is closed, outside the suppress
        with open(target, "wb", buffering=0) as f, contextlib.suppress(OSError):
            chunk = b"\0" * 65536
            while True:
                f.write(chunk)

    def starve_backing(self) -> None:
        self.fill(self.back)

    def force_read_only(self) -> None:
        assert self.loop is not None
        Path(f"/sys/fs/ext4/{Path(self.loop).name}/trigger_fs_error").write_text("deskwatch fault test\n")

    def free(self, where: Path | None = None) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove((where or self.mnt) / "filler")

    def repair(self) -> None:
        """Free the backing store, unmount, check and mount the ext4 again (files must be closed)."""
        assert self.loop is not None
        self.free(self.back)
        _run("umount", str(self.mnt))
        subprocess.run(["e2fsck", "-fy", self.loop], capture_output=True)  # exit 1: errors corrected
        _run("mount", "-o", "errors=remount-ro", self.loop, str(self.mnt))

    def cleanup(self) -> None:
        for path in self._mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        if self.loop is not None:
            subprocess.run(["losetup", "-d", self.loop], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def fault_fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFs]:
    missing = [tool for tool in ("mount", "losetup", "mkfs.ext4", "e2fsck") if shutil.which(tool) is None]
    why = ""
    if os.geteuid() != 0:
        why = "the storage-fault tests mount small filesystems: run them as root"
    elif missing:
        why = f"missing {', '.join(missing)} (Debian: mount, util-linux, e2fsprogs)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    fs = FaultFs(tmp_path_factory.mktemp("faultfs"))
    try:
        yield fs
    finally:
        fs.cleanup()
