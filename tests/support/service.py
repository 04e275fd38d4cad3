"""Fixtures for the appliance tests: a real sd_notify socket, and a systemd-style watchdog env."""

from __future__ import annotations

import gc
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.address = address  # as it goes into NOTIFY_SOCKET ("@name" = abstract)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def receive(self, timeout: float = 5.0) -> str:
        """The next datagram's text; raises TimeoutError if none arrives."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode("utf-8")
        except TimeoutError as exc:
            raise TimeoutError("no sd_notify message arrived") from exc

    def pending(self) -> list[str]:
        """Every datagram already waiting, without blocking."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        return out

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    """A bound notify socket (filesystem path), exported as NOTIFY_SOCKET."""
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer.
    directory = tempfile.mkdtemp(prefix="dw-notify-")
    ns = NotifySocket(os.path.join(directory, "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", ns.address)
    yield ns
    ns.close()
    os.rmdir(directory)


@pytest.fixture
def abstract_notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    """A notify socket in the abstract namespace (NOTIFY_SOCKET=@name), as systemd uses."""
    ns = NotifySocket(f"@deskwatch-test-{os.getpid()}-{id(monkeypatch)}")
    monkeypatch.setenv("NOTIFY_SOCKET", ns.address)
    yield ns
    ns.close()


# -- the daemon's user, played by nobody ---------------------------------------------------------
NOBODY_UID = 65534


@dataclass
class ServiceUser:
    """The appliance's ``deskwatch`` user, played by ``nobody`` (this machine has no such
    user): its ids, and a directory tree under /tmp that it can reach (pytest's own temporary
    directories are root's alone)."""

    uid: int
    gid: int
    base: Path
    children: list[list[str]] = field(default_factory=list)  # argv of each child started as the user
    child_groups: list[list[int]] = field(default_factory=list)


@pytest.fixture
def deskwatch_user(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceUser]:
    """``pwd`` answers for ``deskwatch`` with nobody's ids, and a child process started as that
    user (``subprocess.run(..., user=...)``) is a fork of this test that drops to its uid, gid
    and groups and runs ``deskwatch`` there: nobody may not execute this test's interpreter
    (it lives under /root), but everything the command opens it opens with the user's rights."""
    if os.geteuid() != 0:
        pytest.skip("playing another user needs root")
    nobody = pwd.getpwuid(NOBODY_UID)
    fake = pwd.struct_passwd(("deskwatch", "x", nobody.pw_uid, nobody.pw_gid, "deskwatch", "/nonexistent", ""))
    getpwnam, getpwuid = pwd.getpwnam, pwd.getpwuid
    monkeypatch.setattr(pwd, "getpwnam", lambda name: fake if name == "deskwatch" else getpwnam(name))
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: fake if uid == nobody.pw_uid else getpwuid(uid))
    base = Path(tempfile.mkdtemp(prefix="deskwatch-user-"))
    base.chmod(0o755)
    user = ServiceUser(nobody.pw_uid, nobody.pw_gid, base)
    real_run = subprocess.run

    def run(argv: Any, *args: Any, **kw: Any) -> Any:
        if kw.get("user") is None:
            return real_run(argv, *args, **kw)
        assert argv[1:3] == ["-m", "deskwatch"], argv
        user.children.append(list(argv))
        user.child_groups.append(list(kw.get("extra_groups") or []))
        return _forked(argv[3:], kw)

    monkeypatch.setattr(subprocess, "run", run)
    try:
        yield user
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _forked(argv: list[str], kw: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``deskwatch argv`` in a forked child with the ids ``kw`` names; its stdout captured,
    its stderr copied to ours afterwards (so that capsys sees both)."""
    from deskwatch.cli import main

    gc.collect()  # what earlier tests left (a TFLite interpreter) is finalised here, not in the child
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 70
            gc.disable()  # a native library's threads did not survive the fork: no finaliser may run
            try:
                sys.stdout, sys.stderr = out, err
                os.setgroups(list(kw.get("extra_groups") or []))
                os.setgid(kw["group"])
                os.setuid(kw["user"])
                os.chdir(kw.get("cwd") or "/")
                try:
                    code = main(argv)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:
                err.write(f"child failed: {exc!r}\n")
            finally:
                out.flush()
                err.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        sys.stderr.write(err.read())
        return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), stdout=out.read())
