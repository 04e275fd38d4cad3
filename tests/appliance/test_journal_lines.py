"""What the daemon writes to the operator's journal (`journalctl -u deskwatch -f`), read as a
fleet operator and as the worker's privacy officer would read it: what the worker typed stays
out of it, a fault that lasts is not a line per retry, and the start says who and what the
device is."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from deskwatch.app import Daemon, Parts
from deskwatch.camera.fake import FakeCamera
from deskwatch.config import load_config
from deskwatch.system.logs import record_fields
from tests.support.common import FakeClock
from tests.support.fakes import RecordingDelivery, ScriptedVision, SilentNotifier
from tests.support.faultfs import FaultFs
from tests.support.mosquitto import MakeBroker


class Journal(logging.Handler):
    """Every record any deskwatch logger writes, as the journal would get it: the message,
    the structured fields and a traceback's text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> list[str]:
        out = []
        for r in self.records:
            fields = " ".join(f"{k}={v}" for k, v in record_fields(r).items())
            trace = logging.Formatter().formatException(r.exc_info) if r.exc_info else ""
            out.append(f"{r.levelname} {r.getMessage()} {fields} {trace}")
        return out


@pytest.fixture
def journal() -> Iterator[Journal]:
    handler = Journal()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def bright_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(30, 230, (240, 320, 3), dtype=np.uint8)]


def make_daemon(write_config: Callable[..., Path], clock: FakeClock, extra: str = "") -> Daemon:
    cfg = load_config(write_config(extra))
    return Daemon(
        cfg,
        clock=clock,
        parts=Parts(
            camera=FakeCamera(frames=bright_frames()),
            vision=ScriptedVision(),
            delivery=RecordingDelivery(),
            notifier=SilentNotifier(),
        ),
    )


REASON = "gynaecologist appointment Zq7"  # what a worker may well type, and must find nowhere else


def test_the_workers_pause_reason_stays_out_of_the_journal(
    write_config: Callable[..., Path], clock: FakeClock, journal: Journal
) -> None:
    """The worker types why they pause ("fetch water", or something they would tell nobody but
    the employer's record): the daemon wrote it into the journal at the pause, at its restore
    after a restart, at a clock correction during it, at its expiry and in the pause_overrun
    finding's line, where every operator tailing the fleet's logs (and every log shipper) reads
    it. The reason belongs in the worker's audit trail and the collector's record, not in the
    operator's journal; the lines still say that the worker paused, for how long and until when."""
    daemon = make_daemon(write_config, clock)
    daemon.handle_command("pause", {"request_id": "r1", "reason": REASON, "minutes": 30})
    clock.advance(60)
    clock.jump_wall(3 * 3600)  # timesyncd corrects the clock during the pause
    daemon._check_pause()
    daemon.audit.close()

    again = make_daemon(write_config, clock)  # restarted: the pause is restored
    assert again.policy.paused is not None and again.policy.paused.reason == REASON
    clock.advance(40 * 60)  # ended after its 30 min; the worker does not come back
    again._check_pause()
    clock.advance(5 * 60)
    again._check_pause()
    delivery = again.delivery
    assert isinstance(delivery, RecordingDelivery)
    (overrun,) = [e for e, _ in delivery.events if e["type"] == "pause_overrun"]
    assert REASON in overrun["detail"]  # the collector's record keeps what the worker said
    again.audit.close()

    texts = journal.texts()
    leaks = [t for t in texts if "Zq7" in t]
    assert not leaks, leaks
    said = "\n".join(texts)
    for line in ("paused by the worker (mqtt) for 30 min", "pause restored", "during the pause", "expired"):
        assert line in said, (line, said)
    assert "finding pause_overrun" in said


def _said(journal: Journal, logger: str, since: int = 0) -> list[logging.LogRecord]:
    """What `journalctl -u deskwatch` shows at its default level (info and above) from ``logger``."""
    return [r for r in journal.records[since:] if r.name == logger and r.levelno >= logging.INFO]


@pytest.mark.broker
def test_a_connection_that_keeps_dropping_is_said_once_not_once_a_second(
    tmp_path: Path, make_broker: MakeBroker, journal: Journal
) -> None:
    """Two devices with one identity (an SD card cloned to a second Pi, or one config copied to
    two devices) on one broker: each connection throws the other off. Each daemon wrote a
    'connected', a 'lost the connection' and a 'broker reachable after' line for every round,
    about two lines a second each, forever: 6,000 a device in an hour, journald's limit
    (10,000 in 30 s) soon reached on a busy box, and nothing but those lines to read. A
    connection that keeps dropping soon after it is made is now said once as such, and the
    rounds after it at debug level."""
    from deskwatch.app import build_delivery
    from tests.support.mosquitto import device_config

    broker = make_broker()
    twins = [build_delivery(device_config(tmp_path / f"state{n}", broker), version="t", models={}) for n in (1, 2)]
    for delivery in twins:
        delivery.start()
    try:
        time.sleep(10)
        rounds = [d.stats()["mqtt"]["connections"] for d in twins]
    finally:
        for delivery in twins:
            delivery.stop(2)
    assert min(rounds) >= 4, rounds  # they did throw each other off, round after round
    lines = [r.getMessage() for r in _said(journal, "deskwatch.delivery.client")]
    # each: no TLS to loopback, connected, thrown off, reachable and connected again, 'keeps
    # dropping', its goodbye at the stop (before: 3 lines a round, 40 rounds in these 10 s)
    assert len(lines) <= 2 * 7, "\n".join(lines)
    assert sum("keeps dropping" in line for line in lines) == 2, "\n".join(lines)


@pytest.mark.broker
def test_a_connection_that_keeps_dropping_names_the_likely_cause(
    tmp_path: Path, make_broker: MakeBroker, journal: Journal
) -> None:
    """The 'keeps dropping' line ended in 'reconnecting with backoff': nothing to act on, while
    the broker's own log names the cause. It now says what to look for there and what to do
    when it is a second device with this one's identity."""
    from deskwatch.app import build_delivery
    from tests.support.mosquitto import device_config

    broker = make_broker()
    twins = [build_delivery(device_config(tmp_path / f"state{n}", broker), version="t", models={}) for n in (1, 2)]
    for delivery in twins:
        delivery.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any("keeps dropping" in r.getMessage() for r in journal.records):
            time.sleep(0.1)
    finally:
        for delivery in twins:
            delivery.stop(2)
    line = next(r.getMessage() for r in journal.records if "keeps dropping" in r.getMessage())
    assert "Client acme/desk-a already connected" in line and "own device.id and certificate" in line, line
    broker.stop()  # its log, written to a file, is flushed at the exit
    assert "Client acme/desk-a already connected, closing old connection" in broker.log_text()  # as the line says


@pytest.mark.broker
def test_a_broker_that_stays_away_is_said_again_now_and_then(
    tmp_path: Path, make_broker: MakeBroker, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker is away for a day (the site's VPN down over a weekend). The daemon said so at
    the first failed attempt and then never again: an operator who began `journalctl -u deskwatch
    -f` an hour later saw scans and nothing about the broker. It is now said again once an hour
    (here: every 2 s) with how long it has lasted, the attempts and the queue, never at every
    attempt."""
    from deskwatch.app import build_delivery
    from deskwatch.delivery import client
    from tests.support.mosquitto import device_config

    monkeypatch.setattr(client, "STILL_SECONDS", 2.0, raising=False)  # not there before
    broker = make_broker()
    cfg = device_config(tmp_path / "state", broker)
    broker.stop()  # the port refuses connections from now on
    delivery = build_delivery(cfg, version="t", models={})
    delivery.start()
    try:
        time.sleep(7)
    finally:
        delivery.stop(2)
    attempts = [r for r in journal.records if "refused the TCP connection" in r.getMessage()]
    lines = [r.getMessage() for r in _said(journal, "deskwatch.delivery.client") if "refused" in r.getMessage()]
    assert len(attempts) >= 7, len(attempts)  # an attempt every 0.05-1 s
    assert lines[0].startswith("broker 127.0.0.1:") and "is it running" in lines[0], lines
    still = lines[1:]
    assert 2 <= len(still) <= 4, "\n".join(lines)
    assert all(line.startswith("still, for ") and " attempts; 0 messages queued): broker" in line for line in still)


def test_the_start_says_who_what_and_whether_ready_and_each_change_of_readiness_is_said(
    write_config: Callable[..., Path], clock: FakeClock, journal: Journal
) -> None:
    """A device in the full profile whose worker was never enrolled, and whose clock is not
    synchronised: nothing is checked against the worker's face and no scan is taken. The status
    said so (`systemctl status`, the status topic), the journal never did: its start line read
    like any other, and no line ever named either. The start now ends with the readiness
    (WARNING and the reasons when degraded, 'ready' at INFO else), and each reason that
    comes or goes later is one line."""
    clock.synced = False
    daemon = make_daemon(write_config, clock, extra="schedule: {require_synced_clock: true}")
    clock.advance(30)

    def stop_soon(event: object, seconds: float) -> bool:
        clock.synced = True  # timesyncd reached its server
        if clock.monotonic() > 1200:
            daemon.request_stop()
        return FakeClock.wait(clock, event, seconds)  # type: ignore[arg-type]

    clock.wait = stop_soon  # type: ignore[method-assign]
    daemon.run(install_signals=False)
    said = [(r.levelname, r.getMessage()) for r in _said(journal, "deskwatch.app")]
    started = [(level, m) for level, m in said if " started: " in m]
    assert len(started) == 1, said
    level, line = started[0]
    assert level == "WARNING", started
    assert "device site-a/desk-1, profile full, schedule interval, next scan " in line, line
    assert "DEGRADED: " in line and "worker w-1 not enrolled" in line and "clock: not synchronised" in line, line
    resolved = [(lv, m) for lv, m in said if m.startswith("resolved: clock: not synchronised")]
    assert len(resolved) == 1 and resolved[0][0] == "INFO", said
    assert not [m for _, m in said if m.startswith("degraded: ")], said  # nothing new came up


def test_a_ready_start_says_so_at_info(write_config: Callable[..., Path], clock: FakeClock, journal: Journal) -> None:
    daemon = make_daemon(write_config, clock, extra="policy: {profile: minimal}")
    daemon.run(max_scans=1, install_signals=False)
    (started,) = [r for r in _said(journal, "deskwatch.app") if " started: " in r.getMessage()]
    assert started.levelname == "INFO" and started.getMessage().endswith("; ready"), started.getMessage()
    assert "profile minimal" in started.getMessage() and "next scan " in started.getMessage()
    assert "; broker connected; " in started.getMessage(), started.getMessage()


def test_a_bad_config_under_systemd_is_an_error_in_the_journal_not_info(tmp_path: Path) -> None:
    """`deskwatch run` with a config it refuses exits 78 and systemd does not restart it: the
    problems it lists are all the operator has. They went to stderr as plain lines, which
    journald files at the unit's default priority, info: `journalctl -u deskwatch -p err` showed
    only systemd's 'Failed with result exit-code', not one of them. Under systemd (stderr is the
    journal stream) each line now carries the syslog prefix of an error."""
    import os
    import subprocess
    import sys

    from tests.support.common import REPO

    bad = tmp_path / "config.yaml"
    bad.write_text("device: {id: desk-1, site: site-a, worker_id: w-1}\nmqtt: {host: x, port: 99999}\nbogus: 1\n")
    stream = tmp_path / "stream"
    with open(stream, "w") as err:
        st = os.fstat(err.fileno())
        env = {
            **os.environ,
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
            "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("daemon", "contract")),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "deskwatch", "run", "--config", str(bad)],
            stderr=err,
            env=env,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 78
    lines = stream.read_text().splitlines()
    assert len(lines) >= 3 and "configuration error" in lines[0], lines
    assert all(line.startswith("<3>") for line in lines), lines
    assert any("mqtt.port = 99999" in line for line in lines), lines


@pytest.mark.broker
def test_activity_reports_and_a_flood_of_bad_commands_do_not_fill_the_journal(
    tmp_path: Path, make_broker: MakeBroker, journal: Journal
) -> None:
    """The desk companion reports idle time every 30 s, and each report was an INFO line
    ('command activity accepted (request None)'): 2,880 a day a desk, among a few dozen scans.
    And anyone who can publish on the desk's topics (a companion gone wrong in a loop, a test
    script left running) had each bad message written as a WARNING: 1,000 bad messages, 1,000
    lines, and past 10,000 in 30 s journald drops the daemon's own lines. A routine report is
    now a debug line; rejections of one command kind are said at most a few times a minute, and
    then how many more there were (all of them are counted in health, commands_rejected)."""
    import json
    from datetime import UTC, datetime

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from deskwatch.app import build_delivery
    from tests.support.mosquitto import device_config

    broker = make_broker()
    delivery = build_delivery(device_config(tmp_path / "state", broker), version="t", models={})
    delivery.on_command(lambda kind, body: None)
    delivery.start()
    flood = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood")
    flood.connect("127.0.0.1", broker.port)
    flood.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not delivery.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        topic = delivery.prefix + "activity"
        good = {"schema": "deskwatch.activity/1", "idle_seconds": 3, "source": "x11"}
        for _ in range(100):
            good["since"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            flood.publish(topic, json.dumps(good), qos=1)
        for n in range(1000):
            flood.publish(topic, b'{"schema": "nonsense", "n": %d}' % n, qos=1)
        deadline, seen, quiet_since = time.monotonic() + 60, -1, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 2:  # until it is all taken
            time.sleep(0.1)
            if (now := delivery.stats()["mqtt"]["commands_received"]) != seen:
                seen, quiet_since = now, time.monotonic()
        stats = delivery.stats()["mqtt"]
    finally:
        flood.loop_stop()
        flood.disconnect()
        delivery.stop(2)
    # (those beyond the 256 waiting are answered "busy" at once, not counted)
    assert stats["commands_received"] >= 900 and stats["commands_rejected"] >= 800, stats
    lines = [r.getMessage() for r in _said(journal, "deskwatch_contract.intake")]
    assert not [line for line in lines if "accepted" in line], lines[:5]
    assert 1 <= len(lines) <= 10, f"{len(lines)} lines: " + "\n".join(lines[:20])


def test_rejections_not_said_one_by_one_are_counted_in_the_next_line(journal: Journal) -> None:
    from deskwatch_contract.intake import CommandIntake

    now = [100.0]
    intake = CommandIntake(lambda kind, body: None, monotonic=lambda: now[0])
    for _ in range(20):
        assert not intake.handle("pause", b"{}").ok
    now[0] += 61
    intake.handle("pause", b"{}")
    lines = [r.getMessage() for r in _said(journal, "deskwatch_contract.intake")]
    assert len(lines) == 6, lines
    assert "not said one by one" in lines[4] and "15 more pause commands" in lines[5], lines


def test_the_stop_says_what_is_left_to_send(
    write_config: Callable[..., Path], clock: FakeClock, journal: Journal
) -> None:
    """Stopped during an outage (a restart, an update, a power-down by the worker) the daemon
    said 'deskwatch stopped after 3 scans' and no word of the 40 messages still on the card: the
    operator could not tell whether stopping it then lost anything. The stop line now names the
    device and what is still queued (sent after the next start), or that nothing is."""

    class Backlog(RecordingDelivery):
        def outbox_depth(self) -> int:
            return 40

    cfg = load_config(write_config())
    parts = Parts(
        camera=FakeCamera(frames=bright_frames()),
        vision=ScriptedVision(),
        delivery=Backlog(),
        notifier=SilentNotifier(),
    )
    Daemon(cfg, clock=clock, parts=parts).run(max_scans=1, install_signals=False)
    (stopped,) = [r.getMessage() for r in _said(journal, "deskwatch.app") if "stopped after" in r.getMessage()]
    assert "device site-a/desk-1" in stopped and "40 messages still queued" in stopped, stopped
    make_daemon(write_config, clock).run(max_scans=1, install_signals=False)
    last = [r.getMessage() for r in _said(journal, "deskwatch.app") if "stopped after" in r.getMessage()][-1]
    assert last.endswith("nothing left to send"), last


def test_the_pause_reason_stays_out_of_systemctl_status(write_config: Callable[..., Path], clock: FakeClock) -> None:
    """STATUS= (what `systemctl status deskwatch` shows, to any user of the device, and what the
    unit's status line in a fleet's monitoring scrapes) began 'paused (<the worker's reason>)'.
    It now says until when the worker is paused, not why."""
    daemon = make_daemon(write_config, clock)
    daemon.handle_command("pause", {"request_id": "r1", "reason": REASON, "minutes": 30})
    status = daemon.status_text()
    assert status.startswith("paused until 09:30:00 UTC · "), status
    assert "Zq7" not in status


def test_a_notify_socket_that_fails_is_said_once_not_at_every_ping(
    tmp_path: Path, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd's notify socket refusing the daemon's datagrams (gone while systemd re-executes,
    or full under load: EAGAIN) made every notification a WARNING 'sd_notify failed: [Errno 2]
    No such file or directory' - with the watchdog on, one every 0.7 s (the demo's daemon under
    NOTIFY_SOCKET=/tmp/nonexist.sock WATCHDOG_USEC=2000000 wrote 40 in 30 s), saying nothing of
    what it means. It is said once, with the consequence, and once when it works again."""
    import socket

    from deskwatch.system.notify import Notifier

    path = tmp_path / "notify.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = Notifier(use_systemd_python=False)
    for _ in range(50):
        assert not notifier.watchdog()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert notifier.watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"
    lines = [(r.levelname, r.getMessage()) for r in _said(journal, "deskwatch.system.notify")]
    assert len(lines) == 2, lines
    assert lines[0][0] == "WARNING" and "watchdog" in lines[0][1] and "restarts it" in lines[0][1], lines
    assert lines[1] == ("INFO", "systemd is notified again (50 notifications were lost)"), lines


def test_a_remote_scan_on_a_card_that_refuses_writes_is_said_without_tracebacks(
    write_config: Callable[..., Path], clock: FakeClock, journal: Journal, fault_fs: FaultFs
) -> None:
    """The card under the state directory turned read-only (a failing SD card): every cmd/scan
    from the console wrote two full tracebacks ('could not write remote_scan_accepted to the
    audit trail', then ..._refused), an expected fault of the card dressed as a bug, and never
    what was wrong with the disk. The trail's own way is used now, as for pauses and scans: the
    disk's trouble and what to do once, then one line per entry not recorded."""
    from deskwatch_contract.intake import CommandRejected

    state = fault_fs.ext4_on_tmpfs() / "state"
    daemon = make_daemon(write_config, clock, extra=f"state_dir: {state}")
    fault_fs.force_read_only()
    for n in range(3):
        with pytest.raises(CommandRejected, match="audit trail cannot be written"):
            daemon.handle_command("scan", {"request_id": f"r{n}"})
    daemon.audit.close()
    said = [r for r in journal.records if "remote_scan" in r.getMessage() and r.levelno >= logging.ERROR]
    assert said and not [r for r in said if r.exc_info], [r.getMessage() for r in said if r.exc_info]
    assert sum("read-only" in r.getMessage() for r in said) >= 1, [r.getMessage() for r in said]


def test_a_job_outcome_the_card_cannot_queue_is_said_once_not_at_every_turn(
    tmp_path: Path, journal: Journal, fault_fs: FaultFs
) -> None:
    """A model job finished while the card under the state directory turned read-only (a
    failing SD card): its outcome could not be queued for the collector, and at every turn of
    the daemon's loop (every 5 s) the daemon wrote 'job j-7 (model): succeeded' and 'its outcome
    could not be queued ... tried again later' again - 34,000 lines a day until the card was
    replaced. The trouble is said once (and again if it changes), the outcome is tried again
    quietly, and its line comes when it is queued."""
    import json

    from deskwatch.delivery.outbox import Outbox
    from deskwatch.jobs.agent import JobAgent

    state = fault_fs.ext4_on_tmpfs() / "state"
    box = Outbox(state, max_bytes=10**8, max_messages=1000, max_age_days=20)
    agent = JobAgent(
        site="site-a",
        device_id="desk-1",
        version="0.2.0",
        state_dir=state,
        publish=lambda payload: box.put("result", "jobs/progress", payload),
        models_dir=tmp_path / "models",
        model_check=lambda new_dir, file: None,
        swap=lambda directory: None,
        keys_dir=tmp_path,
    )
    agent.done_dir.mkdir(parents=True)
    (agent.done_dir / "j-7.json").write_text(json.dumps({"job_id": "j-7", "status": "succeeded", "kind": "model"}))
    fault_fs.force_read_only()
    try:
        for _ in range(20):  # 20 turns of the loop: 100 s
            agent.tick()
    finally:
        box.close()
    lines = [r.getMessage() for r in _said(journal, "deskwatch.jobs.agent")]
    assert len(lines) <= 2, lines
    assert any("could not be queued" in line for line in lines), lines


@pytest.mark.broker
def test_caps_a_read_only_card_refuses_are_said_once_without_a_traceback_a_minute(
    tmp_path: Path, make_broker: MakeBroker, journal: Journal, fault_fs: FaultFs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card turned read-only (a failing SD card) with a message past the outbox's age cap
    queued: the publisher's cap pass, every minute, could not delete it and wrote 'outbox caps
    could not be applied; retrying in 60 s' with a full traceback, every minute for as long as
    the card stayed so - an expected fault of the card as a bug, and no word of the disk. It is
    said once with the disk's trouble and what to do; the pass is tried again quietly."""
    from deskwatch.app import build_delivery
    from deskwatch.delivery import client
    from deskwatch.delivery.outbox import Outbox
    from tests.support.mosquitto import device_config

    monkeypatch.setattr(client, "CAPS_EVERY_SECONDS", 0.2)
    state = fault_fs.ext4_on_tmpfs() / "state"
    old = Outbox(state, max_bytes=10**8, max_messages=1000, max_age_days=20, wall_clock=lambda: time.time() - 3 * 86400)
    old.put("health", "health", {"n": 1}, offline=True)  # queued three days ago
    old.close()
    broker = make_broker()
    cfg = device_config(state, broker, extra="outbox: {max_age_days: 1}")
    broker.stop()  # nothing is sent: the message stays queued
    delivery = build_delivery(cfg, version="t", models={})
    fault_fs.force_read_only()
    delivery.start()
    try:
        time.sleep(3)  # about 15 cap passes
    finally:
        delivery.stop(2)
    said = [r for r in journal.records if r.name == "deskwatch.delivery.client" and "caps" in r.getMessage()]
    loud = [r for r in said if r.levelno >= logging.WARNING]
    assert len(said) >= 5, [r.getMessage() for r in said]  # the pass was tried again and again
    assert len(loud) == 1 and not loud[0].exc_info, [(r.getMessage(), bool(r.exc_info)) for r in loud]
    assert "read-only" in loud[0].getMessage(), loud[0].getMessage()


def test_a_presigned_download_url_leaves_its_token_out_of_the_journal(tmp_path: Path) -> None:
    """A software or model job's artifact is often a presigned URL (S3: ?X-Amz-Signature=...;
    others: ?token=..., or user:password@host): a credential, valid for hours or days to anyone
    who reads it. The daemon wrote the whole URL into the journal at the download step and
    into every failure ('cannot download https://...?X-Amz-Signature=...: ...'). The host and
    path say which artifact; the token stays out."""
    import socket

    from deskwatch.jobs.download import DownloadFailed, fetch
    from deskwatch_contract.jobs import Artifact

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once it is closed
    url = f"http://fleet:pw-Zq7@127.0.0.1:{port}/b/deskwatch-0.3.bin?X-Amz-Signature=sig-Zq7&X-Amz-Expires=86400"
    with pytest.raises(DownloadFailed) as failed:
        fetch(Artifact(url, "0" * 64, 1000), tmp_path / "b.bin")
    assert "Zq7" not in str(failed.value), failed.value
    assert f"127.0.0.1:{port}/b/deskwatch-0.3.bin?..." in str(failed.value), failed.value
    from deskwatch.jobs.download import shown

    assert shown(url) == f"http://127.0.0.1:{port}/b/deskwatch-0.3.bin?..."
    source = (Path(__file__).parents[2] / "daemon/deskwatch/jobs/agent.py").read_text()
    assert "detail=shown(art.url)" in source  # the download step's line and progress too


def test_a_missing_webcam_is_our_one_error_not_opencvs_warning_as_info(capfd: pytest.CaptureFixture[str]) -> None:
    """With the USB webcam unplugged, each attempt to open it also had OpenCV print its own
    '[ WARN:0@6.8] global cap.cpp:212 open VIDEOIO(V4L2): backend is generally available but
    can't be used to capture by name' on stderr, which journald files at info - a 'WARN' of the
    wrong priority beside the daemon's own error, saying less than it. OpenCV's own lines below
    an error stay out; the daemon's error says what to check."""
    from deskwatch.camera import CameraError
    from deskwatch.camera.config import CameraConfig
    from deskwatch.camera.v4l2 import V4l2Camera

    camera = V4l2Camera(CameraConfig(backend="v4l2", source="/dev/video-not-there"))
    with pytest.raises(CameraError, match="is the webcam plugged in"):
        camera.open()
    assert "WARN" not in capfd.readouterr().err


RECOVERIES = [
    ("daemon/deskwatch/jobs/agent.py", "job outcomes are written down again"),
    ("daemon/deskwatch/delivery/outbox.py", "the connection session number is written down again"),
    ("daemon/deskwatch/delivery/outbox.py", "the disk has room again"),
    ("daemon/deskwatch/delivery/outbox.py", "outbox: delivered messages are deleted again"),
    ("daemon/deskwatch/system/watchdog.py", "is making progress again; watchdog pings resume"),
    ("daemon/deskwatch/app.py", "health is queued again"),
    ("daemon/deskwatch/audit.py", "audit trail: the collector's view of this desk's findings is saved now"),
    ("daemon/deskwatch/audit.py", "audit trail: the record of scan %s is written now"),
    ("daemon/deskwatch/audit.py", "audit trail: written again"),
]


@pytest.mark.parametrize(("path", "words"), RECOVERIES)
def test_a_fault_that_ends_is_said_at_info_not_as_a_warning(path: str, words: str) -> None:
    """`journalctl -u deskwatch -p warning` is to show faults only (228e3d6: findings are
    NOTICE for that reason), but the lines saying a fault is over ('health is queued again',
    'the disk has room again', 'watchdog pings resume', ...) were WARNINGs: the filtered view
    filled with good news, and a fleet's alerting on warnings alerted on recoveries. They are
    INFO, as the daemon's other 'again' lines are; the fault itself stays an ERROR/WARNING."""
    import ast

    from tests.support.common import REPO

    tree = ast.parse((REPO / path).read_text())
    levels = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and words in node.args[0].value
        ):
            levels.add(node.func.attr)
    assert levels == {"info"}, (path, words, levels)


def test_a_scan_the_outbox_cannot_queue_is_said_as_the_disks_trouble_not_a_traceback(
    write_config: Callable[..., Path], clock: FakeClock, journal: Journal
) -> None:
    """The outbox refused a scan's record (the card full past the room kept for it, or turned
    read-only: sqlite3 raises 'disk I/O error', as the real outbox does on a read-only ext4):
    each such scan wrote 'scan (schedule) failed; the daemon carries on' with a full traceback,
    an expected fault of the card as a bug, and no word of the disk. It is one ERROR line with
    the disk's trouble and what to do; a bug keeps its traceback."""
    import sqlite3

    class RefusingOutbox(RecordingDelivery):
        def send_scan(self, payload: object, events: object = ()) -> list[str]:
            raise sqlite3.OperationalError("disk I/O error")

    cfg = load_config(write_config())
    parts = Parts(
        camera=FakeCamera(frames=bright_frames()),
        vision=ScriptedVision(),
        delivery=RefusingOutbox(),
        notifier=SilentNotifier(),
    )
    daemon = Daemon(cfg, clock=clock, parts=parts)
    daemon._scan("schedule")
    daemon.audit.close()
    (said,) = [r for r in journal.records if r.name == "deskwatch.app" and "scan (schedule)" in r.getMessage()]
    assert said.levelname == "ERROR" and not said.exc_info, (said.getMessage(), bool(said.exc_info))
    assert "not queued for delivery" in said.getMessage() and "disk I/O error" in said.getMessage(), said.getMessage()


def test_a_scan_the_trail_cannot_record_says_what_is_wrong_with_the_disk(
    write_config: Callable[..., Path], clock: FakeClock, journal: Journal, fault_fs: FaultFs
) -> None:
    """The card turned read-only: each scheduled scan was refused (rightly: the worker could not
    see it in their trail) with 'scan not taken, the camera stays closed: it cannot be recorded
    in the audit trail (OperationalError: disk I/O error)' - SQLite's words, not the disk's
    trouble or what to do. The first says it in full (read-only, dmesg, fsck or a new card),
    the ones after it in a line each."""
    state = fault_fs.ext4_on_tmpfs() / "state"
    daemon = make_daemon(write_config, clock, extra=f"state_dir: {state}")
    fault_fs.force_read_only()
    for _ in range(3):
        daemon._scan("schedule")
    lines = [r.getMessage() for r in journal.records if r.getMessage().startswith("scan not taken")]
    assert len(lines) == 3, lines
    assert "read-only" in lines[0] and "dmesg" in lines[0], lines[0]
    assert all("dmesg" not in line for line in lines[1:]), lines


def test_a_camera_failure_says_when_it_is_tried_again(
    write_config: Callable[..., Path], clock: FakeClock, journal: Journal
) -> None:
    """'camera failed: cannot open /dev/video0: is the webcam plugged in ...; retrying in 5 s':
    in the random schedule the next attempt is the next scan, perhaps half an hour later, and an
    operator who replugged the webcam and watched for 5 s saw nothing happen. The line says
    that the next scan tries again, and not before when."""
    from deskwatch.camera import CameraError

    camera = FakeCamera(frames=bright_frames())
    camera.fail_open = CameraError("cannot open /dev/video0: is the webcam plugged in?")
    cfg = load_config(write_config())
    parts = Parts(camera=camera, vision=ScriptedVision(), delivery=RecordingDelivery(), notifier=SilentNotifier())
    daemon = Daemon(cfg, clock=clock, parts=parts)
    daemon._scan("schedule")
    daemon.audit.close()
    (line,) = [r.getMessage() for r in journal.records if r.getMessage().startswith("camera failed")]
    assert line.endswith("; tried again at the next scan, not sooner than in 5 s"), line


def test_every_job_the_device_rejects_unread_is_said_not_only_the_first(tmp_path: Path, journal: Journal) -> None:
    """A job document the device cannot open (not JSON, signed by a key it does not hold) is
    rejected before its job id can be read: job 'unknown'. ed8499b made a repeated
    (job, status, step) a DEBUG line, meant for an outcome tried again at every turn of the loop,
    so that after the first such rejection of the day every later one - the real update job the
    operator is waiting for, refused for a key the device lacks - left no line in the journal."""
    from deskwatch.jobs.agent import JobAgent

    agent = JobAgent(
        site="site-a",
        device_id="desk-1",
        version="0.2.0",
        state_dir=tmp_path / "state",
        publish=lambda payload: None,
        models_dir=tmp_path / "models",
        model_check=lambda new_dir, file: None,
        swap=lambda directory: None,
        keys_dir=tmp_path / "keys",
    )
    agent.handle_notify(b"this is no job")  # in the morning: a test message on the wrong topic
    agent.handle_notify(b'{"payload": "e30", "signatures": [{"kid": "k-2027", "sig": "AAAA"}]}')  # the update
    lines = [r.getMessage() for r in _said(journal, "deskwatch.jobs.agent") if r.levelno >= logging.WARNING]
    assert len(lines) == 2 and all("rejected" in line for line in lines), lines
