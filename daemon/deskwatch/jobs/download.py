"""Fetch a job's artifact and prove it is the one the signed document names (size and sha256).

Two ways, by who downloads:

- :func:`fetch` (the daemon, model jobs): into a file by name in the daemon's own directory;
- :func:`fetch_private` (root, software jobs): into a file without a name. Root downloads
  into ``<state_dir>/jobs``, a directory the daemon's user owns, and that user can rename
  any file there - e.g. an older bundle, signed all the same, over the one root just
  hashed. So the download has no name to swap (``O_TMPFILE``), is checked through the
  descriptor root keeps, and that descriptor is what the installer reads.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from deskwatch.system.files import create_new, open_dir, remove, replace_within
from deskwatch_contract.jobs import Artifact

CHUNK = 256 * 1024


class DownloadFailed(Exception):
    """The artifact could not be fetched or is not the one the job names."""


def _stream(artifact: Artifact, fd: int, timeout: float) -> None:
    """Write the artifact to ``fd`` (no more than the bytes the job names), sync it and
    check what went out: size and sha256 as the job names them."""
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(artifact.url, timeout=timeout) as response:
            while chunk := response.read(CHUNK):
                size += len(chunk)
                if size > artifact.bytes:
                    raise DownloadFailed(f"{artifact.url} is larger than the {artifact.bytes} bytes the job names")
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        os.fsync(fd)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadFailed(f"cannot download {artifact.url}: {exc}") from None
    _verify(artifact, digest.hexdigest(), size)


def _verify(artifact: Artifact, sha256: str, size: int) -> None:
    if size != artifact.bytes or sha256 != artifact.sha256:
        raise DownloadFailed(f"{artifact.url} is not the artifact the job names (sha256 {sha256[:12]}…, {size} bytes)")


def _read_back(artifact: Artifact, fd: int) -> None:
    """What ``fd`` holds, read from its first byte, is the artifact (what the installer
    will read, not only what went out); left at the first byte."""
    digest, size = hashlib.sha256(), 0
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, CHUNK):
        size += len(chunk)
        digest.update(chunk)
    _verify(artifact, digest.hexdigest(), size)
    os.lseek(fd, 0, os.SEEK_SET)


def fetch(artifact: Artifact, dest: Path, *, timeout: float = 60.0) -> Path:
    """Download ``artifact`` to ``dest`` (via a temporary file beside it); DownloadFailed otherwise."""
    tmp = dest.with_name(dest.name + ".part")
    # a link planted at the .part name is replaced, not followed
    fd = create_new(tmp, 0o644)
    try:
        _stream(artifact, fd, timeout)
    except BaseException:
        remove(tmp)
        raise
    finally:
        os.close(fd)
    replace_within(dest.parent, tmp.name, dest.name)
    return dest


def _nameless_file(directory: Path) -> int:
    """A new file in ``directory`` (reached without following links) that has no name:
    nobody else can open, replace or rename it; it is gone when its descriptor is closed."""
    dir_fd = open_dir(directory)
    try:
        try:
            return os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        # a filesystem without O_TMPFILE: a 0600 file of root's own, its name removed at once
        name = f".download-{secrets.token_hex(8)}"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        return fd
    finally:
        os.close(dir_fd)


def fetch_private(artifact: Artifact, directory: Path, *, timeout: float = 60.0) -> BinaryIO:
    """Download ``artifact`` into a file without a name in ``directory``, check it through
    that descriptor and return it open at its first byte; DownloadFailed otherwise.

    Read it through the returned file only: there is no name to open it by again."""
    try:
        fd = _nameless_file(directory)
    except OSError as exc:
        raise DownloadFailed(f"cannot create the download in {directory}: {exc}") from None
    try:
        _stream(artifact, fd, timeout)
        _read_back(artifact, fd)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
