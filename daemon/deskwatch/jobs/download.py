"""Fetch a job's artifact and prove it is the one the signed document names (size and sha256).

Two ways, by who downloads:

- :func:`fetch` (the daemon, model jobs): into a file by name in the daemon's own directory;
- :func:`fetch_private` (root, software jobs): into a file without a name. Root downloads
  into ``<state_dir>/jobs``, a directory the daemon's user owns, and that user can rename
  any file there - e.g. an older bundle, signed all the same, over the one root just
  hashed. So the download has no name to swap (``O_TMPFILE``), is checked through the
  descriptor root keeps, and that descriptor is what the installer reads.

A download has a deadline: the signed size at :data:`MIN_RATE`, and never less than
:data:`FLOOR_S`. The read timeout alone is per read, so a server (or anyone on the path of
an ``http://`` URL) that sends a byte now and then, just inside it, would hold root's job
runner - and every job queued behind it - for size x timeout. At the deadline the
connection's socket is shut down, which ends a read blocked in it wherever it is: in the
TLS handshake, the headers or the body.

A download needs room: the signed size and :data:`HEADROOM` for the daemon's own writes
(its queue, evidence, journal) must be free on the file system before the first byte is
fetched, or the job fails naming both. A disk that fills up during the download all the
same (the daemon wrote meanwhile) fails the job the same way; what was downloaded is gone
(the nameless file with its descriptor, the ``.part`` file removed).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import secrets
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from deskwatch.system.files import create_new, open_dir, remove, replace_within
from deskwatch_contract.jobs import Artifact

CHUNK = 256 * 1024
MIN_RATE = 256 * 1024  # bytes/s (2 Mbit/s): slower than this, a download is given up
FLOOR_S = 120.0  # however small the artifact
HEADROOM = 32 * 1024 * 1024  # bytes left free beside a download, for the daemon's own writes


class DownloadFailed(Exception):
    """The artifact could not be fetched or is not the one the job names."""


class _Deadline:
    """Shuts down every connection a download opens once its time is up."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        # a descriptor of our own on the socket: TLS takes the original over, and ours is never reused
        mine = sock.dup()
        with self._lock:
            self._sockets.append(mine)
            if self.expired:
                self._shut(mine)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.end

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _watched(base: type[http.client.HTTPConnection], deadline: _Deadline) -> Any:
    """``base`` whose sockets ``deadline`` may shut down (each registered as it is created)."""

    class Watched(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # http.client makes each connection's socket with self._create_connection
            create: Callable[..., socket.socket] = getattr(self, "_create_connection", socket.create_connection)

            def created(*a: Any, **kw: Any) -> socket.socket:
                sock = create(*a, **kw)
                deadline.watch(sock)
                return sock

            self._create_connection = created

    return Watched


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(_watched(http.client.HTTPConnection, deadline), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            context = getattr(self, "_context", None)
            return self.do_open(_watched(http.client.HTTPSConnection, deadline), req, context=context)

    return urllib.request.build_opener(HTTP(), HTTPS())


def shown(url: str) -> str:
    """The URL for the journal and the job's progress: without a user name or password in it,
    and without its query and fragment, where a presigned download's token lives
    (``?X-Amz-Signature=...``, ``?token=...``): ``https://host/path?...``."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    rest = "?..." if parts.query or parts.fragment else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + rest


def deadline_for(size: int, *, min_rate: float = MIN_RATE, floor: float = FLOOR_S) -> float:
    """Seconds a download of ``size`` bytes may take."""
    return max(floor, size / min_rate)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def _free(fd: int) -> int:
    st = os.fstatvfs(fd)
    return st.f_bavail * st.f_frsize


def _no_room(artifact: Artifact, where: Path, free: int, written: int | None = None) -> DownloadFailed:
    """The job's failure: ``free`` bytes were free before the download, ``written`` of the
    artifact's bytes were on disk when it filled up (None: the download never started)."""
    needed = artifact.bytes + HEADROOM
    what = (
        f"{where} filled up during the download ({written} of {artifact.bytes} bytes written, removed again; "
        f"{_mib(free)} was free when it started)"
        if written is not None
        else f"not enough free space in {where} for the download: {_mib(free)} free"
    )
    return DownloadFailed(
        f"{what}, {_mib(needed)} needed (the job's {artifact.bytes} bytes and {_mib(HEADROOM)} kept for "
        f"the daemon); nothing was installed: free space there or give the data partition more room "
        f"(image-build/README.md), then send the job again"
    )


def _stream(artifact: Artifact, fd: int, timeout: float, seconds: float, where: Path) -> None:
    """Write the artifact to ``fd`` (no more than the bytes the job names) within ``seconds``,
    sync it and check what went out: size and sha256 as the job names them. ``where``: the
    directory ``fd``'s file is in, named when there is no room for the artifact."""
    free = _free(fd)
    if free < artifact.bytes + HEADROOM:
        raise _no_room(artifact, where, free)
    digest, size, written = hashlib.sha256(), 0, 0
    deadline = _Deadline(seconds)
    too_slow = f"{shown(artifact.url)}: not downloaded within {seconds:.0f} s (the job's {artifact.bytes} bytes)"
    try:
        with _opener(deadline).open(artifact.url, timeout=timeout) as response:
            while chunk := response.read(CHUNK):
                if deadline.passed():
                    raise DownloadFailed(too_slow)
                size += len(chunk)
                if size > artifact.bytes:
                    raise DownloadFailed(
                        f"{shown(artifact.url)} is larger than the {artifact.bytes} bytes the job names"
                    )
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    written += n
                    view = view[n:]
        if deadline.passed():
            raise DownloadFailed(too_slow)
        os.fsync(fd)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _no_room(artifact, where, free, written) from None
        if deadline.passed():
            raise DownloadFailed(too_slow) from None
        raise DownloadFailed(f"cannot download {shown(artifact.url)}: {exc}") from None
    finally:
        deadline.close()
    _verify(artifact, digest.hexdigest(), size)


def _verify(artifact: Artifact, sha256: str, size: int) -> None:
    if size != artifact.bytes or sha256 != artifact.sha256:
        raise DownloadFailed(
            f"{shown(artifact.url)} is not the artifact the job names (sha256 {sha256[:12]}…, {size} bytes)"
        )


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


def fetch(
    artifact: Artifact,
    dest: Path,
    *,
    timeout: float = 60.0,
    min_rate: float = MIN_RATE,
    floor: float = FLOOR_S,
) -> Path:
    """Download ``artifact`` to ``dest`` (via a temporary file beside it); DownloadFailed otherwise.

    ``timeout``: for each read; the whole download: :func:`deadline_for`."""
    seconds = deadline_for(artifact.bytes, min_rate=min_rate, floor=floor)
    tmp = dest.with_name(dest.name + ".part")
    # a link planted at the .part name is replaced, not followed
    fd = create_new(tmp, 0o644)
    try:
        _stream(artifact, fd, timeout, seconds, dest.parent)
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


def fetch_private(
    artifact: Artifact,
    directory: Path,
    *,
    timeout: float = 60.0,
    min_rate: float = MIN_RATE,
    floor: float = FLOOR_S,
) -> BinaryIO:
    """Download ``artifact`` into a file without a name in ``directory``, check it through
    that descriptor and return it open at its first byte; DownloadFailed otherwise.

    Read it through the returned file only: there is no name to open it by again.
    ``timeout``: for each read; the whole download: :func:`deadline_for`."""
    seconds = deadline_for(artifact.bytes, min_rate=min_rate, floor=floor)
    try:
        fd = _nameless_file(directory)
    except OSError as exc:
        raise DownloadFailed(f"cannot create the download in {directory}: {exc}") from None
    try:
        _stream(artifact, fd, timeout, seconds, directory)
        _read_back(artifact, fd)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
