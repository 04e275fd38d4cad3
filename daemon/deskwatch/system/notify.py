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
    """Send one notification datagram; True when it was sent (a failure is a warning)."""
    try:
        return _send_datagram(state, address)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address or os.environ.get("NOTIFY_SOCKET", ""), exc)
        return False


def _send_datagram(state: str, address: str | None = None) -> bool:
    """:func:`socket_send` that raises OSError when the datagram cannot be sent."""
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
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(target)
        sock.sendall(state.encode("utf-8"))
    return True


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
            sender = sender or _send_datagram
        else:
            self.backend = "custom"
        self._send = sender
        self._last_status: str | None = None
        self._failing: str | None = None  # the error of a spell of failed notifications
        self._lost = 0  # notifications lost in it

    @property
    def enabled(self) -> bool:
        """True when systemd asked for notifications (NOTIFY_SOCKET is set)."""
        return bool(os.environ.get("NOTIFY_SOCKET"))

    def notify(self, *states: str) -> bool:
        """Send; a failure is said once a spell (the watchdog pings every few seconds: a line
        each would fill the journal), and again when notifications go through again."""
        text = "\n".join(states)
        try:
            sent = self._send(text)
        except Exception as exc:
            self._lost += 1
            if self._failing != str(exc):
                self._failing = str(exc)
                log.warning(
                    "cannot notify systemd through NOTIFY_SOCKET %s (%s): while this lasts systemd gets no "
                    "status and no watchdog pings from the daemon, and restarts it when the unit's watchdog "
                    "runs out; further failures like this are not logged one by one",
                    os.environ.get("NOTIFY_SOCKET", ""),
                    exc,
                )
            return False
        if self._failing is not None:
            log.info("systemd is notified again (%d notifications were lost)", self._lost)
            self._failing, self._lost = None, 0
        return sent

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
