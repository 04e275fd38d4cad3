"""sd_notify: tell systemd the daemon is ready, what it is doing, and that it is alive.

:class:`Notifier` sends ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and ``STOPPING=1``
through systemd-python's ``systemd.daemon.notify`` when it is installed, otherwise
with a plain ``AF_UNIX`` datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the
abstract namespace). Without ``NOTIFY_SOCKET`` (started by hand, in tests) every
call is a no-op that returns False.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Sender = Callable[[str], bool]


def socket_send(state: str, address: str | None = None) -> bool:
    """Send one notification datagram; True when it was sent."""
    address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address[0] == "@":
        target = "\0" + address[1:]
    elif address[0] == "/":
        target = address
    else:  # vsock or garbage: not for an appliance daemon
        log.debug("NOTIFY_SOCKET %r is not a unix socket; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address, exc)
        return False


def _systemd_python_sender() -> Sender | None:
    try:  # by name: the repo's systemd/ unit directory would shadow it for mypy
        daemon: Any = importlib.import_module("systemd.daemon")
    except ImportError:
        return None

    def send(state: str) -> bool:
        if not os.environ.get("NOTIFY_SOCKET"):
            return False
        return bool(daemon.notify(state))

    return send


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd expects pings within, in seconds, or None.

    None when ``WATCHDOG_USEC`` is unset/invalid, or ``WATCHDOG_PID`` names another
    process (the variables were inherited by a child). Ping at least every half of it.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


class Notifier:
    """The daemon's line to systemd. All methods return True when a message was sent."""

    def __init__(self, sender: Sender | None = None, *, use_systemd_python: bool = True) -> None:
        if sender is None:
            sender = _systemd_python_sender() if use_systemd_python else None
            self.backend = "systemd-python" if sender is not None else "socket"
            sender = sender or socket_send
        else:
            self.backend = "custom"
        self._send = sender
        self._last_status: str | None = None

    @property
    def enabled(self) -> bool:
        """True when systemd asked for notifications (NOTIFY_SOCKET is set)."""
        return bool(os.environ.get("NOTIFY_SOCKET"))

    def notify(self, *states: str) -> bool:
        text = "\n".join(states)
        try:
            return self._send(text)
        except Exception as exc:
            log.warning("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        """READY=1: models loaded, first broker connection attempted."""
        states = ["READY=1"]
        if status:
            states.append("STATUS=" + _one_line(status))
            self._last_status = status
        return self.notify(*states)

    def status(self, text: str) -> bool:
        """STATUS=...: shown by ``systemctl status deskwatch``; repeats are not resent."""
        if text == self._last_status:
            return False
        self._last_status = text
        return self.notify("STATUS=" + _one_line(text))

    def watchdog(self) -> bool:
        """WATCHDOG=1: only call while the daemon is making progress."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        states = ["STOPPING=1"]
        if status:
            states.append("STATUS=" + _one_line(status))
        return self.notify(*states)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def status_line(
    *,
    next_scan: str | None,
    outbox_depth: int | None,
    broker: str,
    degraded: str | None = None,
) -> str:
    """The STATUS= text in words, e.g.
    ``next scan 14:32 UTC · outbox 0 queued · broker connected``."""
    parts = [f"next scan {next_scan}" if next_scan else "no scan scheduled"]
    if outbox_depth is not None:
        parts.append(f"outbox {outbox_depth} queued")
    parts.append(f"broker {broker}")
    if degraded:
        parts.append(f"DEGRADED: {degraded}")
    return " · ".join(parts)
