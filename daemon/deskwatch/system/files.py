"""Writing files that survive a power cut and cannot be redirected through a planted link.

Root writes into directories the service user owns (``<state_dir>/jobs/done``, the
download of a software update): a name there may be a symbolic link someone put there
to make root write through it (``done/x.tmp -> /etc/shadow``). So a temporary file is
created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` after whatever was at its name is unlinked
(``unlink(2)`` removes a link, never its target), owned with ``fchown(2)`` on the open
descriptor, synced, renamed over the final name (``rename(2)`` replaces a link, never
writes through it) and the directory synced, so after a power cut the name holds either
the old or the new content.

The directory itself is reached the same careful way (:func:`open_dir`): the service
user could replace ``jobs/done`` (or ``jobs``) with a link to ``/etc``, and every step of
the write above would then happen there. So the path is walked one component at a time
with ``O_NOFOLLOW``, and the name operations (unlink, create, rename, sync) are made
relative to the directory's descriptor. A symbolic link on the way is followed only
where nobody else could have put it: in a directory owned by root (or by this process's
own user) that neither group nor others may write (``/var/run -> /run`` is fine).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINKS = 40  # as the kernel's own limit (ELOOP)


class UnsafePath(OSError):
    """A directory on the way is reached through a link someone else could have planted."""


def _trusted(dir_fd: int) -> bool:
    """Could only root or this process's own user have put an entry in this directory?"""
    st = os.fstat(dir_fd)
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_dir(path: Path) -> int:
    """A descriptor on the directory ``path``, reached without following a link that a
    less trusted user could have planted (see the module doc); UnsafePath otherwise."""
    parts = list(Path(os.path.abspath(path)).parts[1:])
    fd = os.open("/", _DIR)
    links = 0
    try:
        while parts:
            name = parts.pop(0)
            if name in ("", "."):
                continue
            try:
                child = os.open(name, _DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not stat.S_ISLNK(
                    os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                ):
                    raise
                if not _trusted(fd):
                    raise UnsafePath(
                        errno.ELOOP, f"{path}: {name!r} is a link in a directory others can change; not following it"
                    ) from None
                links += 1
                if links > MAX_LINKS:
                    raise UnsafePath(errno.ELOOP, f"{path}: too many links") from None
                target = os.readlink(name, dir_fd=fd)
                if os.path.isabs(target):
                    os.close(fd)
                    fd = os.open("/", _DIR)
                parts = [p for p in Path(target).parts if p != "/"] + parts
                continue
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def create_new(path: Path, mode: int = 0o644) -> int:
    """A descriptor on a new, empty regular file at ``path``; whatever was there is unlinked first."""
    dir_fd = open_dir(path.parent)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=dir_fd)
        return os.open(path.name, _CREATE, mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def ensure_dir(path: Path, mode: int = 0o755) -> None:
    """``mkdir -p path``, each directory reached and made as :func:`open_dir` reaches them."""
    try:
        os.close(open_dir(path))
        return
    except FileNotFoundError:
        pass
    if path.parent == path:
        raise FileNotFoundError(errno.ENOENT, f"{path} does not exist")
    ensure_dir(path.parent, mode)
    fd = open_dir(path.parent)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path.name, mode, dir_fd=fd)
    finally:
        os.close(fd)
    os.close(open_dir(path))  # what is there now is a directory reached safely


def remove(path: Path) -> None:
    """Unlink ``path`` if it exists (a link is removed, never its target; its directory is
    reached as :func:`open_dir` reaches it)."""
    try:
        fd = open_dir(path.parent)
    except FileNotFoundError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=fd)
    finally:
        os.close(fd)


def _sync(dir_fd: int) -> None:
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise


def fsync_dir(path: Path) -> None:
    """Make renames and creations in ``path`` durable (filesystems without directory fsync: skipped)."""
    fd = open_dir(path)
    try:
        _sync(fd)
    finally:
        os.close(fd)


def replace_within(directory: Path, src: str, dst: str) -> None:
    """Rename ``src`` over ``dst``, both names in ``directory``, and make it durable."""
    with SafeDir(directory) as reached:
        reached.rename(src, dst)


def fill(fd: int, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Write all of ``data`` to the new file ``fd``, set its mode (and owner, when root),
    sync it and close the descriptor."""
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
    if os.path.abspath(tmp.parent) != os.path.abspath(path.parent):
        raise ValueError(f"{tmp} is not in the directory of {path}")
    dir_fd = open_dir(path.parent)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp.name, dir_fd=dir_fd)
        fd = os.open(tmp.name, _CREATE, mode, dir_fd=dir_fd)
        try:
            fill(fd, data, mode, owner)
            os.replace(tmp.name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp.name, dir_fd=dir_fd)
            raise
        _sync(dir_fd)
    finally:
        os.close(dir_fd)


class SafeDir:
    """A directory reached by :func:`open_dir`, used by name: nothing done here follows a
    link, whoever owns the directory. For root reading the service user's job queue."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = open_dir(path)

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def names(self, suffix: str = "") -> list[str]:
        """The entries ending in ``suffix``, oldest modification first."""
        found = []
        for name in os.listdir(self.fd):
            if name.endswith(suffix):
                with contextlib.suppress(FileNotFoundError):
                    found.append((os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mtime_ns, name))
        return [name for _, name in sorted(found)]

    def read_bytes(self, name: str, limit: int) -> bytes:
        """The content of the regular file ``name`` (not a link, a FIFO or a device), at most
        ``limit`` bytes; OSError otherwise."""
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, f"{self.path / name} is not a regular file")
            if st.st_size > limit:
                raise OSError(errno.EFBIG, f"{self.path / name} is larger than {limit} bytes")
            chunks, size = [], 0
            while chunk := os.read(fd, 1 << 16):
                size += len(chunk)
                if size > limit:
                    raise OSError(errno.EFBIG, f"{self.path / name} is larger than {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        """``src`` over ``dst`` in this directory, durably."""
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        _sync(self.fd)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def claim(self, src: str, dst: str) -> None:
        """Make the regular file ``src`` this process's own (owner and mode 0600, durably)
        and rename it to ``dst``: a name in another user's directory that only this process
        could have made (see :meth:`owns`)."""
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, f"{self.path / src} is not a regular file")
            os.fchown(fd, os.geteuid(), os.getegid())
            os.fchmod(fd, 0o600)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.rename(src, dst)

    def owns(self, name: str) -> bool:
        """Is ``name`` a regular file of this process's own user (not a link, not planted)?"""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
