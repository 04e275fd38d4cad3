"""The local control socket cannot be knocked over: deep JSON, slow clients, floods, bugs.

The worker's pause button goes through this socket; before, one 3 KB nested request
killed its only thread (``deskwatch pause`` then answered 69 while the daemon kept
scanning) and one silent client blocked every pause.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deskwatch.system.control import ControlServer, send_control
from deskwatch.system.watchdog import ProgressWatchdog
from tests.support.faultfs import FaultFs


class Pings:
    def __init__(self) -> None:
        self.count = 0

    def watchdog(self) -> bool:
        self.count += 1
        return True


class Worker:
    """The daemon's side: pause/resume with a status, and a way to make the handler misbehave."""

    def __init__(self) -> None:
        self.paused = False
        self.fail: BaseException | None = None
        self.block = threading.Event()
        self.blocking = False

    def handle(self, kind: str, body: dict[str, Any]) -> None:
        if self.blocking:
            self.block.wait(30)
        if self.fail is not None:
            raise self.fail
        self.paused = kind == "pause"

    def status(self) -> dict[str, Any]:
        return {"paused": self.paused}


@pytest.fixture
def served(tmp_path: Path) -> Any:
    worker = Worker()
    server = ControlServer(tmp_path / "control.sock", worker.handle, status=worker.status, request_seconds=1.0)
    server.start()
    yield worker, server
    worker.block.set()
    server.stop()


def raw_request(path: Path, data: bytes, timeout: float = 5.0) -> dict[str, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    s.sendall(data)
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    s.close()
    return dict(json.loads(reply))


def test_deeply_nested_json_is_answered_and_the_socket_keeps_serving(served: Any) -> None:
    worker, server = served
    deep = b'{"command": "pause", "x": ' + b"[" * 1500 + b"]" * 1500 + b"}\n"  # ~3 KB, what killed the old thread
    reply = raw_request(server.path, deep)
    assert reply["ok"] is False and "nested deeper" in reply["error"]
    huge = b"[" * 100_000 + b"\n"
    assert "longer than 4096" in raw_request(server.path, huge)["error"]
    assert raw_request(server.path, b"\xff\xfe\n")["error"] == "bad request: payload is not UTF-8"
    assert send_control(server.path, "pause", reason="fetch water", minutes=5)["status"] == {"paused": True}
    assert worker.paused


def test_a_silent_client_does_not_block_the_pause_button(served: Any) -> None:
    _, server = served
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(server.path))  # connects and says nothing
    t0 = time.monotonic()
    assert send_control(server.path, "pause", reason="fetch water", minutes=5)["ok"] is True
    assert time.monotonic() - t0 < 0.5  # served at once, not after the silent one's timeout
    silent.settimeout(5)
    answer = json.loads(silent.recv(4096))
    assert answer["ok"] is False and "in time" in answer["error"]
    assert time.monotonic() - t0 < 2.5  # the silent one was cut off after its deadline (1 s)
    silent.close()


def test_a_client_trickling_bytes_is_cut_off_by_the_connection_deadline(served: Any) -> None:
    _, server = served
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(server.path))
    t0 = time.monotonic()
    try:
        for ch in b'{"command": "status"' * 20:  # one byte every 0.1 s: each read is quick, the whole is not
            s.sendall(bytes([ch]))
            time.sleep(0.1)
    except OSError:  # the server answered and closed: stop sending, read its answer
        pass
    s.settimeout(5)
    answer = s.recv(4096)
    assert json.loads(answer)["error"].startswith("bad request: no complete request line in time")
    assert time.monotonic() - t0 < 2.0
    s.close()


def test_a_flood_of_connections_is_answered_and_leaves_the_server_working(served: Any) -> None:
    _, server = served
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            reply = raw_request(server.path, b'{"command": "status"}\n', timeout=10)
        except OSError as exc:  # the listen backlog may refuse some outright: a clear error to the client
            reply = {"ok": False, "error": f"refused: {exc}"}
        with lock:
            answers.append(reply)

    threads = [threading.Thread(target=client) for _ in range(300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(answers) == 300  # nobody hangs
    ok = [a for a in answers if a["ok"]]
    busy = [a for a in answers if not a["ok"] and a["error"].startswith("busy")]
    assert len(ok) + len(busy) + sum(1 for a in answers if a.get("error", "").startswith("refused")) == 300
    assert len(ok) >= 8
    assert send_control(server.path, "status")["ok"] is True


def test_a_failing_handler_gets_an_answer_every_time(served: Any) -> None:
    worker, server = served
    worker.fail = RecursionError("maximum recursion depth exceeded")
    for _ in range(3):
        reply = raw_request(server.path, b'{"command": "pause", "reason": "x", "minutes": 5}\n')
        assert reply == {"ok": False, "error": "internal error in the daemon (see its log)"}
    worker.fail = None
    assert send_control(server.path, "resume")["ok"] is True


def test_the_watchdog_notices_a_wedged_handler(tmp_path: Path) -> None:
    worker = Worker()
    server = ControlServer(tmp_path / "c.sock", worker.handle, status=worker.status, handler_seconds=0.3)
    pings = Pings()
    watchdog = ProgressWatchdog(pings, time.monotonic, stall_after=0.5)
    watchdog.watch("control_socket", server.progress)
    server.start()
    try:
        assert watchdog.tick() and pings.count == 1
        worker.blocking = True  # a handler that never returns (a deadlock)
        threading.Thread(target=raw_request, args=(server.path, b'{"command": "resume"}\n', 10), daemon=True).start()
        time.sleep(1.2)
        assert send_control(server.path, "status")["ok"] is True  # others are still served...
        assert watchdog.tick() is False  # ...but the watchdog stops pinging, so systemd restarts us
        worker.block.set()
        time.sleep(0.3)
        assert watchdog.tick() is True
    finally:
        worker.block.set()
        server.stop()


def test_the_watchdog_notices_a_wedged_accept_loop(tmp_path: Path) -> None:
    worker = Worker()
    server = ControlServer(tmp_path / "c.sock", worker.handle, status=worker.status)
    pings = Pings()
    watchdog = ProgressWatchdog(pings, time.monotonic, stall_after=1.0)
    server.start()
    watchdog.watch("control_socket", server.progress)
    release = threading.Event()

    class Wedged:
        def accept(self) -> Any:
            release.wait(30)  # the accept loop hangs (nothing it could catch)
            raise OSError("closed")

        def close(self) -> None:
            release.set()

    real = server._sock
    assert real is not None
    server._sock = Wedged()  # type: ignore[assignment]
    real.close()  # the loop's pending accept() ends; the next one hangs
    time.sleep(1.8)
    assert watchdog.tick() is False and pings.count == 0
    server.stop()


def _answering(path: Path, answer: bytes, *, every: float = 0.0) -> threading.Thread:
    """Something on the socket's path that answers one request with ``answer`` (a byte each
    ``every`` seconds when set): whoever can write the state directory, the daemon's user."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        conn.recv(4096)
        try:
            for i in range(0, len(answer), 1 if every else len(answer)):
                conn.sendall(answer[i : i + (1 if every else len(answer))])
                time.sleep(every)
        except OSError:
            pass
        conn.close()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    "answer",
    [
        b'{"ok": true, "x": "' + b"a" * 5000 + b'"}\n',
        b"[" * 3000 + b"]" * 3000 + b"\n",
        b"[1]\n",
        b'{"ok": true, "status": "paused"}\n',
        b"\xff\xfe\n",
    ],
    ids=["long", "nested", "a list", "status not an object", "not UTF-8"],
)
def test_the_cli_takes_no_answer_on_trust(tmp_path: Path, answer: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """`sudo deskwatch pause` (root, or the worker) reads the answer of whatever listens on the
    socket in the daemon's user's directory: an answer that is not the daemon's was an
    'internal error' with a traceback; it is now 'unreadable answer'."""
    from deskwatch.cli import main

    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(f"device: {{id: d, site: s, worker_id: w-1}}\nmqtt: {{host: localhost}}\nstate_dir: {state}\n")
    from deskwatch.system.control import control_socket_path

    _answering(control_socket_path(state), answer)
    assert main(["pause", "--config", str(config), "--minutes", "5", "--reason", "break"]) == 69
    err = capsys.readouterr().err
    assert "unreadable answer on" in err and "internal error" not in err


def test_an_answer_trickled_a_byte_at_a_time_is_given_up_at_the_deadline(tmp_path: Path) -> None:
    """Each read waited up to the timeout afresh: a byte every 0.4 s with a 1 s timeout held
    the command for as long as the answer lasted (4 KiB: 27 minutes; at 4 s a byte, hours)."""
    from deskwatch.system.control import ControlUnavailable

    path = tmp_path / "s.sock"
    _answering(path, b'{"ok": true, "status": {}}' + b" " * 40 + b"\n", every=0.4)
    t0 = time.monotonic()
    with pytest.raises(ControlUnavailable, match=r"did not answer on .* within 1 s"):
        send_control(path, "status", timeout=1.0)
    assert time.monotonic() - t0 < 3


def test_the_pause_the_daemon_reports_is_shown_not_obeyed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reason in the answer is printed on the terminal of whoever paused (root's too): its
    control characters are written out, as history does."""
    from deskwatch.cli import main
    from deskwatch.system.control import control_socket_path

    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(f"device: {{id: d, site: s, worker_id: w-1}}\nmqtt: {{host: localhost}}\nstate_dir: {state}\n")
    status = {"paused": True, "reason": "x\x1b]0;TITLE\x07", "minutes": 5, "ends_at": "2026-12-01T10:00:00Z"}
    _answering(control_socket_path(state), json.dumps({"ok": True, "status": status}).encode() + b"\n")
    assert main(["pause", "--config", str(config), "--minutes", "5", "--reason", "break"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert 'Paused: "x\\x1b]0;TITLE\\x07" for 5 min' in out


def test_a_read_only_disk_does_not_turn_the_stop_into_an_internal_error(
    fault_fs: FaultFs, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing SD card turned read-only while the daemon ran: at its stop, removing the
    socket file raised "Read-only file system" out of the shutdown ('internal error in run',
    a traceback, exit 70) and what came after it in the shutdown (the outbox's and the audit
    trail's close) was skipped. The file is now left with a line saying so; the next start
    removes it, as it does after a crash."""
    path = fault_fs.ext4_on_tmpfs() / "state" / "control.sock"
    worker = Worker()
    server = ControlServer(path, worker.handle, status=worker.status)
    server.start()
    fault_fs.force_read_only()
    with caplog.at_level(logging.WARNING):
        server.stop()
    (said,) = [r.getMessage() for r in caplog.records if "control socket" in r.getMessage()]
    assert "read-only" in said and "next start" in said, said
    fault_fs.repair()
    again = ControlServer(path, worker.handle, status=worker.status)
    again.start()
    try:
        assert send_control(path, "pause", reason="water", minutes=5)["ok"]
    finally:
        again.stop()
    assert not path.exists()
