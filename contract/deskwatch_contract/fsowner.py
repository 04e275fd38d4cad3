"""Root working in a directory another user owns does so with that user's rights.

Root's tools (``sudo deskwatch enroll``, ``aim``, ``selftest``, ``history``) write into the
service user's state directory, where every name is the service user's to choose: a link
``templates -> /etc/sudoers.d`` or ``audit.sqlite3 -> /etc/nologin`` put there by a
compromised daemon would have root chown, chmod, create or rewrite whatever it names.
Checking each name first leaves a race (the link can be put back between the check and
the use), and SQLite opens its files by name. So while root works there,
:func:`as_owner_of` makes the calling thread's *filesystem* ids the directory owner's
(``setfsuid(2)``/``setfsgid(2)``: per thread, for file access only; root's capabilities
over files are dropped meanwhile): the kernel then judges every open, create, chmod and
chown as it would for that user, and what is created belongs to that user, as the daemon
needs. Root's supplementary groups are kept (they cannot be changed for one thread).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_QUERY = 0xFFFFFFFF  # (uid_t)-1: an invalid id, so the call changes nothing and returns the current one


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # the C library Python itself runs on


def _set_fs_ids(uid: int, gid: int) -> bool:
    """The thread's filesystem ids := (uid, gid); True when both took effect."""
    libc = _libc()
    if uid == 0:  # back to root first: setting the group needs root's capabilities
        libc.setfsuid(uid)
        libc.setfsgid(gid)
    else:
        libc.setfsgid(gid)
        libc.setfsuid(uid)
    return bool(libc.setfsuid(_QUERY) == uid and libc.setfsgid(_QUERY) == gid)


def fs_uid() -> int:
    """This thread's filesystem uid (the effective uid where there is no such thing)."""
    if not sys.platform.startswith("linux"):
        return os.geteuid()
    return int(_libc().setfsuid(_QUERY))


@contextmanager
def as_owner_of(directory: str | os.PathLike[str]) -> Iterator[tuple[int, int] | None]:
    """Within the block, this thread reaches files as the owner of ``directory`` when the
    process is root and the directory is another user's; yields that (uid, gid), else None
    (nothing changes: not root, a directory root owns, one that does not exist yet, or
    already switched by an enclosing block). PermissionError if the switch cannot be made:
    going on as root is what this exists to prevent."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or fs_uid() != 0:
        yield None
        return
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        yield None
        return
    if st.st_uid == 0:
        yield None
        return
    before = int(_libc().setfsgid(_QUERY))
    if not _set_fs_ids(st.st_uid, st.st_gid):
        _set_fs_ids(0, before)
        raise PermissionError(
            errno.EPERM,
            f"cannot act as the owner (uid {st.st_uid}) of {directory}, and will not write there as root "
            "(this process lacks CAP_SETUID/CAP_SETGID)",
        )
    try:
        yield st.st_uid, st.st_gid
    finally:
        _set_fs_ids(0, before)
