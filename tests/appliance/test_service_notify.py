"""sd_notify through a real AF_UNIX datagram socket, both backends; the progress watchdog."""

from __future__ import annotations

import pytest

from deskwatch.system import notify
from deskwatch.system.notify import Notifier, socket_send, status_line, watchdog_interval
from deskwatch.system.watchdog import ProgressWatchdog, WatchdogThread, tick_interval

BACKENDS = ["socket", "systemd-python"]


def make_notifier(backend: str) -> Notifier:
    if backend == "systemd-python":
        pytest.importorskip("systemd.daemon")
        n = Notifier()
        assert n.backend == "systemd-python"
        return n
    n = Notifier(use_systemd_python=False)
    assert n.backend == "socket"
    return n


@pytest.mark.parametrize("backend", BACKENDS)
def test_lifecycle_messages_arrive(backend, notify_socket) -> None:
    n = make_notifier(backend)
    assert n.enabled
    assert n.ready("models loaded, broker connecting")
    assert notify_socket.receive() == "READY=1\nSTATUS=models loaded, broker connecting"
    assert n.status("next scan 14:32 UTC\n· outbox 0")
    assert notify_socket.receive() == "STATUS=next scan 14:32 UTC · outbox 0"
    assert n.watchdog()
    assert notify_socket.receive() == "WATCHDOG=1"
    assert n.stopping("shutting down")
    assert notify_socket.receive() == "STOPPING=1\nSTATUS=shutting down"
    assert notify_socket.pending() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_abstract_namespace_socket(backend, abstract_notify_socket) -> None:
    n = make_notifier(backend)
    assert n.watchdog()
    assert abstract_notify_socket.receive() == "WATCHDOG=1"


def test_repeated_status_not_resent(notify_socket) -> None:
    n = Notifier(use_systemd_python=False)
    assert n.status("a")
    assert not n.status("a")
    assert n.status("b")
    assert notify_socket.pending() == ["STATUS=a", "STATUS=b"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_op_without_notify_socket(backend, monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = make_notifier(backend)
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False


def test_socket_gone_is_a_warning_not_a_crash(tmp_path, caplog) -> None:
    assert socket_send("WATCHDOG=1", str(tmp_path / "missing")) is False
    assert "sd_notify" in caplog.text
    assert socket_send("WATCHDOG=1", "vsock:2:3") is False


def test_watchdog_interval() -> None:
    import os

    pid = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "90000000", "WATCHDOG_PID": pid}) == 90.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "90000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None
    assert tick_interval(90.0) == 30.0
    assert tick_interval(None) == 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hung_scan_loop_stops_pings(notify_socket, caplog) -> None:
    caplog.set_level("INFO", logger="deskwatch.system.watchdog")  # the recovery is INFO, the stall ERROR
    clock = FakeClock()
    dog = ProgressWatchdog(Notifier(use_systemd_python=False), clock, stall_after=60)
    publisher_progress = [clock.now]
    dog.register("scan_loop", allowance=120)
    dog.watch("publisher", lambda: publisher_progress[0])

    assert dog.tick()
    assert notify_socket.receive() == "WATCHDOG=1"

    # both make progress: pings continue
    clock.now += 50
    dog.beat("scan_loop")
    publisher_progress[0] = clock.now
    assert dog.tick()
    assert notify_socket.receive() == "WATCHDOG=1"

    # the camera read hangs: the scan loop stops beating, the publisher carries on
    for _ in range(3):
        clock.now += 50
        publisher_progress[0] = clock.now
        dog.tick()
    # 50 s and 100 s are within the 120 s allowance, 150 s is not
    assert notify_socket.pending() == ["WATCHDOG=1", "WATCHDOG=1"]
    assert dog.stalled() == {"scan_loop": 150.0}
    assert not dog.tick()
    assert notify_socket.pending() == []
    assert "scan_loop made no progress for 150 s" in caplog.text

    # it recovers: pings resume
    dog.beat("scan_loop")
    assert dog.tick()
    assert notify_socket.pending() == ["WATCHDOG=1"]
    assert "progress again" in caplog.text
    assert [r.levelname for r in caplog.records if "progress again" in r.getMessage()] == ["INFO"]


def test_stalled_publisher_stops_pings(notify_socket) -> None:
    clock = FakeClock()
    dog = ProgressWatchdog(Notifier(use_systemd_python=False), clock, stall_after=30)
    dog.watch("publisher", lambda: 1000.0)
    dog.beat("scan_loop")
    clock.now += 31
    dog.beat("scan_loop")
    assert not dog.tick()
    assert notify_socket.pending() == []


def test_broken_probe_counts_as_stalled(notify_socket) -> None:
    clock = FakeClock()
    dog = ProgressWatchdog(Notifier(use_systemd_python=False), clock, stall_after=10)

    def probe() -> float:
        raise RuntimeError("publisher gone")

    dog.watch("publisher", probe)
    assert dog.tick()  # fresh at registration
    clock.now += 11
    assert not dog.tick()


def test_thread_pings_through_socket(notify_socket) -> None:
    dog = ProgressWatchdog(Notifier(use_systemd_python=False), stall_after=60)
    dog.register("scan_loop")
    thread = WatchdogThread(dog, interval=0.05)
    thread.start()
    try:
        assert notify_socket.receive() == "WATCHDOG=1"
        assert notify_socket.receive() == "WATCHDOG=1"
    finally:
        thread.stop()
    assert not thread.is_alive()


def test_status_line_in_words() -> None:
    assert (
        status_line(next_scan="14:32 UTC", outbox_depth=3, broker="connected")
        == "next scan 14:32 UTC · outbox 3 queued · broker connected"
    )
    assert "DEGRADED: camera unplugged" in status_line(
        next_scan=None, outbox_depth=None, broker="down", degraded="camera unplugged"
    )
    assert notify.status_line(next_scan=None, outbox_depth=0, broker="x").startswith("no scan")


def test_stall_after_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ProgressWatchdog(Notifier(use_systemd_python=False), stall_after=0)
