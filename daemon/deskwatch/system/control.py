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

Nothing a client sends can take the button away: each request is served on its own
thread (at most a few at once; more are told "busy"), must arrive within a deadline
for the whole connection, at most 4 KiB and 8 levels deep, and always gets an answer;
the daemon's watchdog watches :meth:`ControlServer.progress`, so a wedged server gets
the daemon restarted.

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
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from deskwatch.domain import PauseInfo, rfc3339
from deskwatch_contract.jsonutil import JsonRejected, loads_object
from deskwatch_contract.sqlite import disk_trouble

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 4096
MAX_DEPTH = 8
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
    """Serves the control socket; ``start()``/``stop()`` from the daemon.

    One accept thread and one short-lived thread per connection, at most
    :attr:`max_clients` at once (a client beyond that is told "busy" at once). A request
    must arrive whole within :attr:`request_seconds` (a deadline for the connection, not
    per read, so a client trickling a byte at a time is cut off too), be at most
    ``MAX_REQUEST`` bytes and nested at most ``MAX_DEPTH`` levels. Every request gets an
    answer, an error included; nothing a client sends can end a thread. :meth:`progress`
    tells the daemon's watchdog whether the server is alive and not stuck in a handler.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: Handler,
        *,
        status: Status | None = None,
        mode: int = 0o660,
        max_clients: int = 8,
        request_seconds: float = 2.0,
        handler_seconds: float = 30.0,
    ):
        self.path = Path(path)
        self.handler = handler
        self.status = status or (lambda: {})
        self.mode = mode
        self.max_clients = max_clients
        self.request_seconds = request_seconds
        self.handler_seconds = handler_seconds
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(max_clients)
        self._alive = time.monotonic()
        self._busy_since: dict[int, float] = {}  # thread ident -> when its handler call began
        self._lock = threading.Lock()

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
        sock.listen(64)
        sock.settimeout(0.5)
        self._sock = sock
        self._stop.clear()
        self._alive = time.monotonic()
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
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # e.g. a failing SD card turned read-only: the stop goes on
            log.warning(
                "control socket %s left in place (%s); the next start removes it",
                self.path,
                disk_trouble(self.path.parent, exc),
            )

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def progress(self) -> float:
        """For the watchdog: when the server last showed it works (monotonic seconds).

        The accept loop's last turn, unless a handler call has been running longer than
        ``handler_seconds`` (a deadlock): then the time it began, so the watchdog sees a stall.
        """
        now = time.monotonic()
        with self._lock:
            stuck = [t for t in self._busy_since.values() if now - t > self.handler_seconds]
        return min([self._alive, *stuck])

    # -- serving ------------------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            self._alive = time.monotonic()
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("control socket accept failed")
                self._stop.wait(0.1)
                continue
            try:
                self._dispatch(conn)
            except Exception:  # never let one connection end the server
                log.exception("control socket: could not serve a connection")
                conn.close()

    def _dispatch(self, conn: socket.socket) -> None:
        if not self._slots.acquire(blocking=False):
            _reply(conn, {"ok": False, "error": "busy: too many requests at once; try again in a moment"}, 0.2)
            conn.close()
            return
        try:
            threading.Thread(target=self._serve_one, args=(conn,), name="control-request", daemon=True).start()
        except BaseException:
            self._slots.release()
            raise

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            with conn:
                try:
                    raw = _read_request(conn, time.monotonic() + self.request_seconds)
                    reply = self._respond_timed(raw)
                except RequestError as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                except OSError as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                _reply(conn, reply, 1.0)
        except Exception:  # a bug: log it; the server goes on
            log.exception("control socket: request failed")
        finally:
            self._slots.release()

    def _respond_timed(self, raw: bytes) -> dict[str, Any]:
        me = threading.get_ident()
        with self._lock:
            self._busy_since[me] = time.monotonic()
        try:
            return self.respond(raw)
        finally:
            with self._lock:
                self._busy_since.pop(me, None)

    def respond(self, raw: bytes) -> dict[str, Any]:
        """The reply to one request line (also used directly by tests). Never raises."""
        try:
            request = loads_object(raw, max_bytes=MAX_REQUEST, max_depth=MAX_DEPTH)
        except JsonRejected as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        command = request.get("command")
        if command not in COMMANDS:
            return {"ok": False, "error": f"unknown command {str(command)[:40]!r} (known: {', '.join(COMMANDS)})"}
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


class RequestError(Exception):
    """The client's request could not be read; the message says why."""


def _read_request(conn: socket.socket, deadline: float) -> bytes:
    """One line, read before ``deadline`` (monotonic) and no longer than ``MAX_REQUEST``."""
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RequestError("no complete request line in time; send one JSON object and a newline")
        conn.settimeout(left)
        try:
            chunk = conn.recv(1024)
        except TimeoutError:
            raise RequestError("no complete request line in time; send one JSON object and a newline") from None
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST + 1:
            raise RequestError(f"request longer than {MAX_REQUEST} bytes")
    line = buf.split(b"\n", 1)[0]
    if len(line) > MAX_REQUEST:
        raise RequestError(f"request longer than {MAX_REQUEST} bytes")
    return line


def _reply(conn: socket.socket, reply: dict[str, Any], timeout: float) -> None:
    """Send the answer; a client that does not read it within ``timeout`` loses it."""
    with contextlib.suppress(OSError):
        conn.settimeout(timeout)
        conn.sendall(json.dumps(reply).encode() + b"\n")


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


def _read_answer(conn: socket.socket, deadline: float) -> bytes:
    """The answer's line, all of it by ``deadline`` (TimeoutError otherwise: a byte now and
    then must not hold the command) and at most MAX_REQUEST bytes (ValueError otherwise).
    Whoever answers on the socket is the daemon's user; the command may be root's."""
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        conn.settimeout(left)
        chunk = conn.recv(1024)
        if not chunk:
            break
        buf += chunk
        if len(buf.split(b"\n", 1)[0]) > MAX_REQUEST:
            raise ValueError("answer too long")
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
        data = _read_answer(s, time.monotonic() + timeout)
    except TimeoutError:
        raise ControlUnavailable(f"the daemon did not answer on {p} within {timeout:g} s") from None
    except ValueError:
        raise ControlUnavailable(f"unreadable answer on {p}: longer than {MAX_REQUEST} bytes") from None
    finally:
        s.close()
    if not data:
        raise ControlUnavailable(f"the daemon closed {p} without answering")
    try:
        reply = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested beyond the parser's depth
        raise ControlUnavailable(f"unreadable answer on {p}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("status", {}), dict):
        raise ControlUnavailable(f"unreadable answer on {p}: not the daemon's")
    if not reply.get("ok"):
        raise ControlRejected(str(reply.get("error") or "rejected"))
    return dict(reply)
