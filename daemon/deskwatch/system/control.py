"""The local control socket: how ``deskwatch pause`` / ``deskwatch resume`` on the
device reach the running daemon.

A unix stream socket at ``<state_dir>/control.sock`` (mode 0660: the daemon's user
and group; the state directory itself is 0700, so only the daemon user and root get
in). One request per connection, one JSON object per line each way::

    -> {"command": "pause", "reason": "fetch water", "minutes": 5}
    <- {"ok": true, "status": {"paused": true, "reason": "fetch water", "ends_at": "...", ...}}
    -> {"command": "resume"}
    <- {"ok": true, "was_paused": true, "status": {"paused": false}}
    -> {"command": "status"}
    <- {"ok": false, "error": "why"}        # on a rejected request

The daemon wires it as ``ControlServer(control_socket_path(state_dir), handler, status=...)``
where ``handler(kind, body)`` is the same function MQTT commands go to (it raises an
exception whose message is the reason on a rejected request) and ``status()``
returns :func:`pause_status` of the policy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from deskwatch.domain import PauseInfo, rfc3339

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 4096
COMMANDS = ("pause", "resume", "status")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path minus the NUL

Handler = Callable[[str, dict[str, Any]], "dict[str, Any] | None"]
Status = Callable[[], dict[str, Any]]


class ControlUnavailable(Exception):
    """The daemon is not running (no socket, nobody listening, or no permission)."""


class ControlRejected(Exception):
    """The daemon answered ok:false; the message is its reason."""


class PauseState(Protocol):
    """The part of the policy the status answer reads."""

    @property
    def paused(self) -> PauseInfo | None: ...

    def pre_scan(self, now: datetime) -> str | None: ...


def control_socket_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / SOCKET_NAME


def pause_status(policy: PauseState, now: datetime) -> dict[str, Any]:
    """What ``deskwatch pause``/``resume``/``status`` print: the pause as the policy sees it."""
    policy.pre_scan(now)  # applies an expiry that is due
    info = policy.paused
    if info is None:
        return {"paused": False}
    return {
        "paused": True,
        "reason": info.reason,
        "minutes": info.minutes,
        "started_at": rfc3339(info.started_at),
        "ends_at": rfc3339(info.ends_at),
        "remaining_seconds": max(0, round(info.remaining_seconds(now))),
        "source": info.source,
    }


class ControlServer:
    """Serves the control socket from one thread; ``start()``/``stop()`` from the daemon."""

    def __init__(
        self, path: str | os.PathLike[str], handler: Handler, *, status: Status | None = None, mode: int = 0o660
    ):
        self.path = Path(path)
        self.handler = handler
        self.status = status or (lambda: {})
        self.mode = mode
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            raise OSError(
                f"control socket path {self.path} is longer than {_SUN_PATH_MAX} bytes; use a shorter state_dir"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists() or self.path.is_socket():
            if _answers(self.path):
                raise OSError(f"another deskwatch daemon is serving {self.path}")
            self.path.unlink()  # left over from a crash
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, self.mode)
        sock.listen(8)
        sock.settimeout(0.5)
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()
        log.info("control socket listening at %s", self.path)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("control socket accept failed")
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    request = _read_line(conn)
                    reply = self.respond(request)
                except (OSError, ValueError) as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def respond(self, raw: bytes) -> dict[str, Any]:
        """The reply to one request line (also used directly by tests)."""
        try:
            request = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"ok": False, "error": "bad request: not a JSON object"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "bad request: not a JSON object"}
        command = request.get("command")
        if command not in COMMANDS:
            return {"ok": False, "error": f"unknown command {command!r} (known: {', '.join(COMMANDS)})"}
        body = {k: v for k, v in request.items() if k != "command"}
        try:
            if command == "status":
                return {"ok": True, "status": self.status()}
            before = self.status()
            extra = self.handler(command, body) or {}
            reply: dict[str, Any] = {"ok": True, **extra, "status": self.status()}
            if command == "resume":
                reply["was_paused"] = bool(before.get("paused"))
            log.info("control socket: %s accepted", command)
            return reply
        except (KeyError, TypeError) as exc:
            return {"ok": False, "error": f"bad request: missing or wrong field {exc}"}
        except Exception as exc:  # the handler's rejection (CommandRejected, PauseError, ValueError)
            if type(exc).__name__ in ("CommandRejected", "PauseError", "ValueError", "ControlRejected"):
                log.info("control socket: %s rejected: %s", command, exc)
                return {"ok": False, "error": str(exc)}
            log.exception("control socket: %s failed", command)
            return {"ok": False, "error": "internal error in the daemon (see its log)"}


def _read_line(conn: socket.socket) -> bytes:
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(1024)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise ValueError("request too long")
    return buf.split(b"\n", 1)[0]


def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def send_control(path: str | os.PathLike[str], command: str, timeout: float = 5.0, **body: Any) -> dict[str, Any]:
    """Send one request to the daemon; the reply (``ok`` true). Raises
    :class:`ControlUnavailable` when nobody listens, :class:`ControlRejected` on ok:false."""
    p = Path(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(p))
        except FileNotFoundError:
            raise ControlUnavailable(f"no control socket at {p}") from None
        except PermissionError:
            raise ControlUnavailable(f"no permission to use {p} (run as root or the deskwatch user)") from None
        except OSError as exc:
            raise ControlUnavailable(f"nobody is listening on {p} ({exc.strerror or exc})") from None
        s.sendall(json.dumps({"command": command, **body}).encode() + b"\n")
        data = _read_line(s)
    except TimeoutError:
        raise ControlUnavailable(f"the daemon did not answer on {p} within {timeout:g} s") from None
    finally:
        s.close()
    if not data:
        raise ControlUnavailable(f"the daemon closed {p} without answering")
    try:
        reply = json.loads(data)
    except json.JSONDecodeError:
        raise ControlUnavailable(f"unreadable answer on {p}") from None
    if not reply.get("ok"):
        raise ControlRejected(str(reply.get("error") or "rejected"))
    return dict(reply)
