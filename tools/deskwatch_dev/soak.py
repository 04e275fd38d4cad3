"""``make soak``: weeks of the appliance's life in minutes - the long shift.

The real daemon (``deskwatch.app.Daemon`` with every real stage: the replay camera on the
bundled demo frames, the real detectors, the policy, the SQLite outbox and audit trail, the
MQTT client) runs in a child process against a real Mosquitto on loopback, on a *simulated*
clock: the daemon's injected :class:`~deskwatch.schedule.Clock` (and the outbox's wall and
monotonic clocks) move on by the time the daemon asks to wait, so nights, the pauses between
scans and the away confirmation cost no real time. Scans, publishing and SQLite are real.
(libfaketime was tried first: its sped-up clocks hang CPython's ``Event.wait``.)

Over ``--days`` simulated days (shifts Mon-Fri 08:00-17:00, random scans at
``--scans-per-hour``, a pause of the worker every day that runs past its time) the parent
stops the child at every simulated hour and measures it from outside: RSS, open file
descriptors, threads, the SQLite files (outbox, audit, WALs), their rows, the log's size.
A broker outage of ``--outage-days`` starts at day ``--outage-at``: the outbox grows (with
``--outbox-max-bytes`` small enough that its cap is met, so that what is evicted first shows),
then drains when the broker returns. At the end it checks against what a subscriber received:
every event's ``seq`` once and in order (nothing lost but what the outbox counted), evidence
evicted before anything else, nothing in the outbox or the audit trail older than retention.

Prints one line a simulated day and a summary (``--json`` for the figures as JSON); exits 1
when something grew without levelling off or a check failed.

    PYTHONPATH=daemon:contract:tools .venv/bin/python -m deskwatch_dev.soak [--days 30] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deskwatch_dev.devservers import MOSQUITTO, free_port, wait_port

REPO = Path(__file__).resolve().parents[2]
FRAMES = REPO / "demo" / "frames"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday
HOUR = 3600.0
DAY = 86400.0


# -- the child: the daemon on a simulated clock ---------------------------------------------


class SimClock:
    """The daemon's clock, simulated: ``wait`` returns at once (unless the event is set) and
    moves the clock on by the time asked for; real time passing (a scan's work) passes too.

    ``on_hour(sim_time)`` is called from ``wait`` each time a simulated hour boundary is passed:
    the soak's handshake with its parent (the daemon's loop thread is the only caller of
    ``wait``, so the daemon is between two steps of its loop there)."""

    def __init__(self, start: datetime, on_hour: Callable[[float], None]) -> None:
        self._real0 = time.monotonic()
        self._wall0 = start.timestamp()
        self.offset = 0.0
        self._on_hour = on_hour
        self._next_hour = self._wall0 + HOUR

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return self._wall0 + (self.monotonic() - self._real0)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def synchronised(self) -> bool | None:
        return True

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        target = self.monotonic() + max(0.0, seconds)
        while not event.is_set():
            # stop at each hour boundary on the way (the parent measures and may stop the broker)
            step = min(target, self.monotonic() + (self._next_hour - self.time()))
            self.offset += max(0.0, step - self.monotonic())
            if self.time() >= self._next_hour - 1e-6:
                self._next_hour += HOUR
                self._on_hour(self.time())
            if self.monotonic() >= target - 1e-6:
                break
        time.sleep(0)  # let the publisher thread in
        return event.is_set()


def run_child(config: str) -> int:
    """The daemon as ``deskwatch run`` builds it, on a :class:`SimClock`; hour handshakes on
    stdin/stdout with the parent."""
    from deskwatch.vision.memory import lean_process

    lean_process()
    from deskwatch.config import load_config
    from deskwatch.system.logs import setup_logging

    cfg = load_config(config)
    setup_logging(cfg.service.log_level, device_id=cfg.device.id)
    from deskwatch import app
    from deskwatch.delivery import outbox as outbox_module

    handshake_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed goes to the log, not into the handshake
    daemon: app.Daemon | None = None
    pauses_at: set[int] = set()

    def on_hour(sim: float) -> None:
        handshake_out.write(f"hour {sim:.0f}\n")
        answer = sys.stdin.readline().strip()
        if answer == "stop" and daemon is not None:
            daemon.request_stop()
        elif answer == "pause" and daemon is not None and int(sim // DAY) not in pauses_at:
            # the worker fetches water for 10 minutes and is back after 25: the pause expires,
            # pause_overrun is reported
            pauses_at.add(int(sim // DAY))
            with contextlib.suppress(Exception):
                daemon.handle_command("pause", {"reason": "fetch water", "minutes": 10}, source="local")

    clock = SimClock(START, on_hour)
    real_outbox = outbox_module.Outbox

    class SimOutbox(real_outbox):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("wall_clock", clock.time)
            kwargs.setdefault("monotonic_clock", clock.monotonic)
            super().__init__(*args, **kwargs)

    outbox_module.Outbox = SimOutbox  # type: ignore[misc]
    # the loop wakes at least every TICK_SECONDS of simulated time: a minute is plenty for the
    # pause expiry and health (every 60 s by default), and a night then costs 1440 turns, not 17280
    app.Daemon.TICK_SECONDS = 60.0
    vision = app.build_vision(cfg)
    delivery = app.build_delivery(cfg, models=vision.model_hashes())
    real_progress = delivery.progress
    delivery.progress = lambda: real_progress() + clock.offset  # type: ignore[method-assign]
    daemon = app.Daemon(cfg, clock=clock, parts=app.Parts(vision=vision, delivery=delivery))
    if daemon.control is not None:  # its progress is real time, the watchdog's clock simulated
        control_progress = daemon.control.progress
        daemon.control.progress = lambda: control_progress() + clock.offset  # type: ignore[method-assign]
    return daemon.run()


# -- the parent: broker, subscriber, measurements -------------------------------------------


class Broker:
    """Mosquitto on a fixed loopback port that can be stopped and started again; persistent
    sessions survive (the subscriber's queue of what arrives while it reconnects)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        conf = root / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {root}/",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        log = open(self.root / "mosquitto.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.root / "mosquitto.conf")], stdout=log, stderr=log)
        log.close()
        wait_port(self.port, 10, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def prepare_frames(out: Path, burst: int) -> Path:
    """The demo's scenes (worker, empty desk, dark room, covered lens) a burst each."""
    from deskwatch_dev.demo import prepare_frames as demo_frames

    return demo_frames(out, burst)


def write_config(out: Path, port: int, frames: Path, args: argparse.Namespace) -> Path:
    cfg = out / "config.yaml"
    cfg.write_text(f"""\
device: {{id: desk-soak, site: soak-site, worker_id: w-soak}}
mqtt: {{host: 127.0.0.1, port: {port}, tls: {{enabled: false}}}}
camera: {{backend: replay, source: {frames}, burst_frames: 3, burst_seconds: 0.6}}
schedule:
  timezone: UTC
  shifts: [{{days: [mon, tue, wed, thu, fri], start: "08:00", end: "17:00"}}]
  mode: random
  scans_per_hour: {args.scans_per_hour}
  min_gap_minutes: 0
policy: {{profile: full}}
outbox: {{max_bytes: {args.outbox_max_bytes}}}
evidence: {{retention_days: 20}}
service: {{log_level: info}}
state_dir: {out / "state"}
""")
    return cfg


def table_rows(path: Path) -> dict[str, int]:
    """Rows of each table of a SQLite file (read-only; {} when it cannot be read now)."""
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return {}
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            n: int(db.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0]) for n in names if n != "sqlite_sequence"
        }
    except sqlite3.Error:
        return {}
    finally:
        db.close()


def oldest(path: Path, sql: str) -> float | None:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute(sql).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return None if row is None or row[0] is None else row[0]


def sample(pid: int, state: Path, log: Path, sim: float) -> dict[str, Any]:
    status = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "Threads"):
                status[key] = int(value.split()[0])
    files = {p.name: p.stat().st_size for p in sorted(state.glob("*.sqlite3*")) if p.is_file()}
    audit = next(iter(sorted(state.glob("audit*.sqlite3"))), state / "audit.sqlite3")
    oldest_audit = oldest(audit, "SELECT MIN(started_at) FROM scans")
    oldest_evidence = oldest(state / "outbox.sqlite3", "SELECT MIN(created) FROM messages WHERE kind = 'evidence'")
    return {
        "sim_day": round((sim - START.timestamp()) / DAY, 3),
        "rss_mb": round(status.get("VmRSS", 0) / 1024, 1),
        "anon_mb": round(status.get("RssAnon", 0) / 1024, 1),
        "threads": status.get("Threads", 0),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "files": files,
        "outbox_rows": table_rows(state / "outbox.sqlite3"),
        "audit_rows": table_rows(audit),
        "log_bytes": log.stat().st_size if log.exists() else 0,
        "oldest_audit_scan": oldest_audit,
        "oldest_queued_evidence": oldest_evidence,
    }


class Subscriber:
    """``mosquitto_sub`` with a persistent session: what the central side received."""

    def __init__(self, port: int, out: Path) -> None:
        self.path = out / "received.txt"
        self.evidence_path = out / "received-evidence.txt"
        base = [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-c"]
        self.procs = [
            subprocess.Popen(
                [
                    *base,
                    "-i",
                    "soak-events",
                    "-t",
                    "deskwatch/v1/+/+/event",
                    "-t",
                    "deskwatch/v1/+/+/scan",
                    "-F",
                    "%t %p",
                ],
                stdout=open(self.path, "ab"),  # noqa: SIM115
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [*base, "-i", "soak-evidence", "-t", "deskwatch/v1/+/+/evidence/#", "-F", "%t %l"],
                stdout=open(self.evidence_path, "ab"),  # noqa: SIM115
                stderr=subprocess.DEVNULL,
            ),
        ]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)

    def events(self) -> tuple[list[dict[str, Any]], int, int]:
        events: list[dict[str, Any]] = []
        scans = 0
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            topic, _, payload = line.partition(" ")
            if topic.endswith("/scan"):
                scans += 1
            elif topic.endswith("/event"):
                with contextlib.suppress(ValueError):
                    events.append(json.loads(payload))
        images = len(self.evidence_path.read_text().splitlines()) if self.evidence_path.exists() else 0
        return events, scans, images


def check_delivery(events: list[dict[str, Any]], health: dict[str, Any]) -> list[str]:
    """Every seq once, in order, none missing but what the outbox counted lost or evicted."""
    problems = []
    seqs = [int(e["seq"]) for e in events if "seq" in e]
    dups = len(seqs) - len(set(seqs))
    if dups:
        problems.append(f"{dups} events received twice")
    out_of_order = sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    if out_of_order:
        problems.append(f"{out_of_order} events received out of order")
    if seqs:
        missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
        counted = int(health.get("evicted", {}).get("event", 0)) + int(health.get("lost_events", 0))
        if len(missing) > counted:
            problems.append(f"{len(missing)} events never received (seq {missing[:5]}...), {counted} counted")
    return problems


def growth(series: list[float], *, tolerance: float) -> float:
    """How much the last third of the run grew over its middle third (0 when level)."""
    n = len(series)
    if n < 6:
        return 0.0
    mid = max(series[n // 3 : 2 * n // 3])
    last = max(series[2 * n // 3 :])
    return max(0.0, last - mid - tolerance)


def run_parent(args: argparse.Namespace) -> int:
    out = Path(tempfile.mkdtemp(prefix="deskwatch-soak-", dir=args.dir))
    frames = prepare_frames(out, 3)
    (out / "broker").mkdir()
    broker = Broker(out / "broker")
    broker.start()
    sub = Subscriber(broker.port, out)
    cfg = write_config(out, broker.port, frames, args)
    log_path = out / "daemon.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("daemon", "contract", "tools"))}
    env.pop("NOTIFY_SOCKET", None)
    with open(log_path, "ab") as log_fh:
        child = subprocess.Popen(
            [sys.executable, "-m", "deskwatch_dev.soak", "--child", str(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_fh,
            env=env,
            text=True,
            bufsize=1,
        )
    assert child.stdin is not None and child.stdout is not None
    state = out / "state"
    samples: list[dict[str, Any]] = []
    outage = (START.timestamp() + args.outage_at * DAY, START.timestamp() + (args.outage_at + args.outage_days) * DAY)
    broker_up = True
    peak_outbox: dict[str, int] = {}
    t0 = time.monotonic()
    result = 1
    try:
        for line in child.stdout:
            if not line.startswith("hour "):
                continue
            sim = float(line.split()[1])
            answer = "go"
            if broker_up and outage[0] <= sim < outage[1]:
                broker.stop()
                broker_up = False
                say(
                    args, f"soak: day {(sim - START.timestamp()) / DAY:.1f}: broker stopped for {args.outage_days} days"
                )
            elif not broker_up and sim >= outage[1]:
                broker.start()
                broker_up = True
                say(args, f"soak: day {(sim - START.timestamp()) / DAY:.1f}: broker back")
            when = datetime.fromtimestamp(sim, UTC)
            if when.weekday() < 5 and when.hour == 11:
                answer = "pause"
            if (sim - START.timestamp()) % (args.sample_hours * HOUR) < 1:
                s = sample(child.pid, state, log_path, sim)
                s["real_s"] = round(time.monotonic() - t0, 1)
                s["broker_up"] = broker_up
                samples.append(s)
                depth = s["outbox_rows"].get("messages", 0)
                if depth >= peak_outbox.get("messages", 0):
                    peak_outbox = dict(s["outbox_rows"])
                if when.hour == 0:  # with --json, stdout is the JSON alone
                    print(day_line(s), file=sys.stderr if args.json else sys.stdout, flush=True)
            if sim >= START.timestamp() + args.days * DAY or time.monotonic() - t0 > args.max_real_seconds:
                answer = "stop"
            child.stdin.write(answer + "\n")
            child.stdin.flush()
            if answer == "stop":
                break
        code = child.wait(60)
        if not broker_up:
            broker.start()
        time.sleep(1.0)
        result = report(args, samples, sub, out, code, peak_outbox, time.monotonic() - t0)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        sub.stop()
        broker.stop()
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
        else:
            say(args, f"soak: kept {out}")
    return result


def say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def day_line(s: dict[str, Any]) -> str:
    f = s["files"]
    return (
        f"day {s['sim_day']:5.1f}  rss {s['rss_mb']:6.1f} MB  fds {s['fds']:3d}  threads {s['threads']:2d}  "
        f"outbox {f.get('outbox.sqlite3', 0) / 1e6:5.2f}+{f.get('outbox.sqlite3-wal', 0) / 1e6:4.2f} MB "
        f"{s['outbox_rows'].get('messages', 0):5d} msgs  audit {f.get('audit.sqlite3', 0) / 1e6:5.2f}+"
        f"{f.get('audit.sqlite3-wal', 0) / 1e6:4.2f} MB {s['audit_rows'].get('scans', 0):5d} scans "
        f"{s['audit_rows'].get('events', 0):5d} events  log {s['log_bytes'] / 1e6:5.2f} MB  "
        f"(real {s['real_s']:.0f} s){'' if s['broker_up'] else '  BROKER DOWN'}"
    )


def last_health(state: Path) -> dict[str, Any]:
    """The outbox's own counts: evicted per kind (its counters table) and events counted lost
    (the sequence counters' ``lost.events``), as health reports them."""
    rows: dict[str, Any] = {"evicted": {}}
    try:
        db = sqlite3.connect(f"file:{state / 'outbox.sqlite3'}?mode=ro", uri=True)
        for name, value in db.execute("SELECT name, value FROM counters"):
            if name.startswith("evicted."):
                rows["evicted"][name.split(".", 1)[1]] = value
        db.close()
        db = sqlite3.connect(f"file:{state / 'counters.sqlite3'}?mode=ro", uri=True)
        row = db.execute("SELECT value FROM counters WHERE name = 'lost.events'").fetchone()
        rows["lost_events"] = int(row[0]) if row else 0
        db.close()
    except sqlite3.Error:
        pass
    return rows


def report(
    args: argparse.Namespace,
    samples: list[dict[str, Any]],
    sub: Subscriber,
    out: Path,
    code: int | None,
    peak_outbox: dict[str, int],
    real: float,
) -> int:
    problems: list[str] = []
    if code != 0:
        problems.append(f"the daemon exited with {code} (log: {out / 'daemon.log'})")
    events, scans, images = sub.events()
    counts = last_health(out / "state")
    problems += check_delivery(events, counts)
    # what the outbox evicted during the outage: evidence first, events only with nothing else left
    ev = counts["evicted"]
    if ev.get("event", 0) and (ev.get("evidence", 0) == 0 or ev.get("health", 0) == 0):
        problems.append(f"events evicted before evidence and health: {ev}")
    # only samples after the first retention period count for levelling off
    steady = [s for s in samples if s["sim_day"] >= 21 and s["broker_up"]]
    limits = {
        "rss_mb": 8.0,
        "fds": 0,
        "threads": 0,
        "log_bytes_per_day": 0,
    }
    for key in ("rss_mb", "fds", "threads"):
        grew = growth([float(s[key]) for s in steady], tolerance=limits[key])
        if grew:
            problems.append(f"{key} still grows after day 21 (+{grew:g} over the last third)")
    for name in ("outbox.sqlite3", "audit.sqlite3", "audit.sqlite3-wal", "outbox.sqlite3-wal"):
        series = [float(s["files"].get(name, 0)) for s in steady]
        grew = growth(series, tolerance=256 * 1024)
        if grew:
            problems.append(f"{name} still grows after day 21 (+{grew / 1e6:.2f} MB over the last third)")
    for table in ("scans", "events"):
        grew = growth([float(s["audit_rows"].get(table, 0)) for s in steady], tolerance=60)
        if grew:
            problems.append(f"audit table {table} still grows after day 21 (+{grew:g} rows)")
    for s in samples:
        sim_now = START.timestamp() + s["sim_day"] * DAY
        if s["oldest_queued_evidence"] is not None and sim_now - s["oldest_queued_evidence"] > 20 * DAY + 2 * DAY:
            problems.append(f"day {s['sim_day']}: evidence older than 20 days still queued")
            break
    for s in samples:
        old = s["oldest_audit_scan"]
        if old is not None:
            age = (
                datetime.fromtimestamp(START.timestamp() + s["sim_day"] * DAY, UTC) - datetime.fromisoformat(old)
            ) / timedelta(days=1)
            if age > 21.01:  # purged daily: at most a day past retention
                problems.append(f"day {s['sim_day']}: the audit trail holds a scan {age:.1f} days old")
                break
    summary = {
        "sim_days": samples[-1]["sim_day"] if samples else 0,
        "real_seconds": round(real, 1),
        "scans_received": scans,
        "events_received": len(events),
        "evidence_received": images,
        "outbox_evicted": counts["evicted"],
        "outbox_lost_events": counts.get("lost_events", 0),
        "outbox_peak_rows": peak_outbox,
        "first": samples[0] if samples else None,
        "day_21": next((s for s in samples if s["sim_day"] >= 21), None),
        "last": samples[-1] if samples else None,
        "problems": problems,
    }
    if args.json:
        print(json.dumps({**summary, "samples": samples}, indent=1))
    else:
        print(
            f"soak: {summary['sim_days']:.1f} simulated days in {real:.0f} s: {scans} scan records, {len(events)} "
            f"events, {images} evidence images received; outbox peak {json.dumps(peak_outbox)}, evicted "
            f"{json.dumps(counts['evicted'])}"
        )
        for p in problems:
            print(f"soak: PROBLEM: {p}")
        print("soak: OK" if not problems else f"soak: FAILED ({len(problems)} problems)")
    return 0 if not problems else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="make soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    ap.add_argument("--days", type=float, default=30.0, help="simulated days (default 30)")
    ap.add_argument("--scans-per-hour", type=float, default=2.0, help="random scans per shift hour (default 2)")
    ap.add_argument("--outage-at", type=float, default=8.0, help="simulated day the broker stops (default 8)")
    ap.add_argument("--outage-days", type=float, default=3.0, help="how long it stays down (default 3)")
    ap.add_argument(
        "--outbox-max-bytes",
        type=int,
        default=2 * 1024 * 1024,
        help="outbox.max_bytes (default 2 MiB: met in the outage)",
    )
    ap.add_argument("--sample-hours", type=int, default=6, help="measure every N simulated hours (default 6)")
    ap.add_argument("--max-real-seconds", type=float, default=540.0, help="stop early after this long (default 540)")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None, help="where the run's files go")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args.child)
    if not os.path.exists(MOSQUITTO):
        sys.exit("soak: mosquitto is not installed; run 'make install' (it installs Debian's mosquitto)")
    return run_parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
