"""Fixtures for the appliance tests: a real sd_notify socket, and a systemd-style watchdog env."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
