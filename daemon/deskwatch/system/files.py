"""Writing files that survive a power cut and cannot be redirected through a planted link.

Root writes into directories the service user owns (``<state_dir>/jobs/done``, the
download of a software update): a name there may be a symbolic link someone put there
to make root write through it (``done/x.tmp -> /etc/shadow``). So a temporary file is
created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` after whatever was at its name is unlinked
(``unlink(2)`` removes a link, never its target), owned with ``fchown(2)`` on the open
descriptor, synced, renamed over the final name (``rename(2)`` replaces a link, never
writes through it) and the directory synced, so after a power cut the name holds either
the old or the new content.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create_new(path: Path, mode: int = 0o644) -> int:
    """A descriptor on a new, empty regular file at ``path``; whatever was there is unlinked first."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return os.open(path, _CREATE, mode)


def fsync_dir(path: Path) -> None:
    """Make renames and creations in ``path`` durable (filesystems without directory fsync: skipped)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def write_atomically(
    path: Path,
    data: bytes,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    *,
    tmp: Path | None = None,
) -> None:
    """``path`` := ``data`` (mode ``mode``, owned by ``owner`` when root), whole or not at all.

    ``tmp`` (default ``.<name>.tmp`` beside ``path``) must be in the same directory."""
    tmp = tmp or path.with_name(f".{path.name}.tmp")
    fd = create_new(tmp, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
