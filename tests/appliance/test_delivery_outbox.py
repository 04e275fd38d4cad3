"""The outbox keeps what the broker has not acknowledged, in order, within its caps."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskwatch.delivery.outbox import Outbox, is_damaged
from deskwatch_contract.sqlite import DatabaseUnavailable
from tests.support.faultfs import FaultFs


class WallClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(tmp_path: Path, **caps: float) -> Outbox:
    opts = {"max_bytes": 10_000_000, "max_messages": 10_000, "max_age_days": 20}
    opts.update(caps)
    return Outbox(tmp_path, **opts)  # type: ignore[arg-type]


def event(n: int) -> dict[str, object]:
    return {"schema": "deskwatch.event/1", "event_id": f"e{n}", "type": "phone_use", "replayed": False}


def test_messages_come_back_in_write_order_until_acknowledged(tmp_path: Path) -> None:
    box = make(tmp_path)
    for n in range(5):
        box.put_event(event(n))
    box.put("scan", "scan", {"scan_id": "s1"})
    pending = box.pending()
    assert [m.topic for m in pending] == ["event"] * 5 + ["scan"]
    assert [json.loads(m.payload)["seq"] for m in pending[:5]] == [1, 2, 3, 4, 5]
    box.ack_many([pending[0].id, pending[2].id])
    assert [json.loads(m.payload)["event_id"] for m in box.pending()[:3]] == ["e1", "e3", "e4"]
    assert box.pending(after_id=pending[3].id)[0].id == pending[4].id
    assert box.stats()["depth"] == 4


def test_seq_and_queue_survive_a_restart_and_are_replays(tmp_path: Path) -> None:
    box = make(tmp_path)
    box.put_event(event(1))
    box.put_event(event(2))
    assert not any(m.replay for m in box.pending())
    box.close()
    box = make(tmp_path)
    assert all(m.replay for m in box.pending())
    assert box.put_event(event(3))["seq"] == 3
    assert not box.pending()[-1].replay  # written by this process while connected
    assert box.put_event(event(4), offline=True)["seq"] == 4
    assert box.pending()[-1].replay  # queued during an outage


def test_eviction_order_is_evidence_health_scan_then_events(tmp_path: Path) -> None:
    box = make(tmp_path, max_messages=100)
    jpeg = b"\xff\xd8" + b"x" * 1000
    for n in range(30):
        box.put_event(event(n), jpeg if n < 10 else None)  # 30 events + 10 evidence
    for n in range(30):
        box.put("health", "health", {"n": n}, qos=0)
    for n in range(60):
        box.put("scan", "scan", {"n": n})  # 160 rows offered, cap 100
    st = box.stats()
    assert st["depth"] == 100
    assert st["evicted"] == {"evidence": 10, "health": 20, "result": 0, "scan": 0, "event": 0}
    assert st["by_kind"] == {"evidence": 0, "health": 10, "result": 0, "scan": 60, "event": 30}
    # An event whose evidence was evicted says so instead of promising a JPEG.
    first = json.loads(box.pending()[0].payload)
    assert first["evidence"] is None and first["evidence_reason"] == "evicted"
    for n in range(30, 130):
        box.put_event(event(n))
    st = box.stats()
    assert st["by_kind"] == {"evidence": 0, "health": 0, "result": 0, "scan": 0, "event": 100}
    assert st["evicted"] == {"evidence": 10, "health": 30, "result": 0, "scan": 60, "event": 30}
    # The oldest events went first; the newest 100 remain, in order.
    seqs = [json.loads(m.payload)["seq"] for m in box.pending(limit=1000)]
    assert seqs == list(range(31, 131))
    box.close()
    assert make(tmp_path).stats()["evicted"]["event"] == 30  # counts are persisted


def test_byte_cap_evicts_evidence_before_anything_else(tmp_path: Path) -> None:
    box = make(tmp_path, max_bytes=100_000)
    for n in range(8):
        box.put_event(event(n), b"j" * 20_000)
    st = box.stats()
    assert st["bytes"] <= 100_000
    assert st["by_kind"]["event"] == 8
    assert st["evicted"]["evidence"] == 4 and st["evicted"]["event"] == 0


def test_age_cap_evicts_what_really_aged(tmp_path: Path) -> None:
    wall, mono = WallClock(), WallClock(0.0)
    box = Outbox(
        tmp_path,
        max_bytes=10**7,
        max_messages=1000,
        max_age_days=2,
        evidence_max_age_days=1,
        wall_clock=wall,
        monotonic_clock=mono,
    )
    box.put_event(event(1), b"jpeg")
    wall.t += 1.5 * 86400
    mono.t += 1.5 * 86400
    assert box.enforce_caps() == {"evidence": 1}
    assert box.stats()["oldest_age_s"] == pytest.approx(1.5 * 86400)
    wall.t += 1 * 86400
    mono.t += 1 * 86400
    assert box.enforce_caps() == {"event": 1}
    assert box.stats()["depth"] == 0


CHILD = textwrap.dedent(
    """
    import sys
    from deskwatch.delivery.outbox import Outbox
    box = Outbox(sys.argv[1], max_bytes=10**8, max_messages=10**6, max_age_days=20)
    n = 0
    while True:
        n += 1
        p = box.put_event({"event_id": f"{sys.argv[2]}-{n}"}, b"e" * 2000)
        print(p["seq"], p["event_id"], flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_loses_nothing_that_was_acknowledged_to_the_caller(tmp_path: Path) -> None:
    confirmed: dict[int, str] = {}
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), f"r{round_}"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for _ in range(40):
            seq, eid = proc.stdout.readline().split()
            confirmed[int(seq)] = eid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for line in proc.stdout:  # lines written before the kill landed
            if line.strip():
                seq, eid = line.split()
                confirmed[int(seq)] = eid
    box = make(tmp_path)
    seqs = [json.loads(m.payload)["seq"] for m in box.pending(limit=10**6) if m.kind == "event"]
    stored = {json.loads(m.payload)["seq"]: m.event_id for m in box.pending(limit=10**6) if m.kind == "event"}
    assert confirmed.items() <= stored.items()
    assert len(seqs) == len(stored)  # no seq used twice
    # A kill between reserving a number and queueing its event leaves a gap, never silently:
    gaps = set(range(1, box.last_seq + 1)) - set(stored)
    assert box.stats()["lost"]["events"] == len(gaps)


def test_an_unreadable_outbox_is_moved_aside_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "outbox.sqlite3").write_bytes(b"this is not a database, it is a failing SD card" * 100)
    box = make(tmp_path)
    box.put_event(event(1))
    assert box.stats()["depth"] == 1
    assert [p.name for p in tmp_path.glob("outbox.sqlite3.corrupt-*")]
    assert any("unreadable" in r.getMessage() for r in caplog.records)


def test_a_full_disk_costs_old_images_not_the_new_event(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = make(tmp_path)
    for n in range(20):
        box.put_event(event(n), b"j" * 20_000)
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count = {pages}")  # the file system has no room for one more page
    queued = box.put_event(event(99), b"k" * 20_000)
    assert queued["seq"] == 21
    st = box.stats()
    assert st["by_kind"]["event"] == 21 and st["evicted"]["evidence"] >= 1 and st["evicted"]["event"] == 0
    assert any("disk is full" in r.getMessage() for r in caplog.records)


def test_a_clock_sync_after_boot_does_not_age_out_fresh_events(tmp_path: Path) -> None:
    """A Pi without RTC boots weeks behind; NTP then jumps the clock forward."""
    wall, mono = WallClock(1_700_000_000.0), WallClock(50.0)
    box = Outbox(tmp_path, max_bytes=10**7, max_messages=1000, max_age_days=20, wall_clock=wall, monotonic_clock=mono)
    box.put_event(event(1), b"jpeg")  # queued at the stale boot time
    mono.t += 30
    wall.t += 30 + 40 * 86400  # time sync: 40 days forward
    box.put_event(event(2))
    assert box.enforce_caps() == {}
    assert box.stats()["depth"] == 3 and box.stats()["oldest_age_s"] == pytest.approx(30)
    mono.t += 21 * 86400  # and real ageing still counts
    wall.t += 21 * 86400
    assert box.enforce_caps() == {"event": 2, "evidence": 1}


# -- property: whatever the sequence of writes and acks, the caps and the order hold -------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 30_000)),  # evidence bytes (0: none)
        st.tuples(st.sampled_from(["scan", "health", "result"]), st.integers(0, 3_000)),
        st.tuples(st.just("ack"), st.integers(0, 5)),  # acknowledge the n oldest
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_caps_order_and_totals_hold_for_any_sequence(tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:  # type: ignore[type-arg]
    box = Outbox(tmp_path_factory.mktemp("prop"), max_bytes=40_000, max_messages=10, max_age_days=20)
    offered_events = acked_events = 0
    for op, n in ops:
        events_evicted_before = box.evicted["event"]
        if op == "event":
            offered_events += 1
            box.put_event(event(offered_events), b"j" * n if n else None)
        elif op == "ack":
            oldest = box.pending(limit=n)
            acked_events += sum(1 for m in oldest if m.kind == "event")
            box.ack_many([m.id for m in oldest])
        else:
            box.put(op, op, {"pad": "x" * n})
        rows = box.pending(limit=10_000)
        st_ = box.stats()
        assert st_["depth"] == len(rows) <= 10
        assert st_["bytes"] == sum(len(m.payload) for m in rows) <= 40_000
        assert [m.id for m in rows] == sorted(m.id for m in rows)
        # An event is only ever evicted when nothing less valuable is left to evict.
        if box.evicted["event"] > events_evicted_before:
            assert all(m.kind == "event" for m in rows), [m.kind for m in rows]
    seqs = [json.loads(m.payload)["seq"] for m in box.pending(limit=10_000) if m.kind == "event"]
    assert seqs == sorted(seqs) and len(seqs) + acked_events + box.evicted["event"] == offered_events
    box.close()


# -- losses: seq and session live apart from the queue; every loss is counted ---------------


def scan_events(scan: str, n: int) -> list[tuple[dict[str, object], bytes | None, None]]:
    return [({"event_id": f"{scan}-e{i}", "scan_id": scan, "type": "phone_use"}, b"j" * 500, None) for i in range(n)]


def test_a_scan_and_its_findings_are_queued_in_one_transaction(tmp_path: Path) -> None:
    box = make(tmp_path)
    queued = box.put_scan({"scan_id": "s1"}, scan_events("s1", 3))
    assert [p["seq"] for p in queued] == [1, 2, 3]
    assert [m.kind for m in box.pending()] == ["event", "evidence"] * 3 + ["scan"]


def test_a_scan_that_cannot_be_queued_leaves_nothing_half_queued_and_a_counted_gap(tmp_path: Path) -> None:
    box = make(tmp_path)
    box.put_event(event(0))
    broken = scan_events("s2", 3)
    broken[2] = ({"event_id": "s2-e2", "scan_id": "s2", "bad": float("nan")}, None, None)  # not valid JSON
    with pytest.raises(ValueError):
        box.put_scan({"scan_id": "s2"}, broken)
    assert [m.kind for m in box.pending()] == ["event"]  # neither s2's first two findings nor its record
    lost = box.stats()["lost"]
    assert lost["events"] == 3 and lost["last"]["seq_upto"] == 4
    assert box.put_event(event(5))["seq"] == 5  # the numbers 2-4 are never handed out again


def test_seq_and_session_survive_an_unreadable_outbox_and_the_loss_is_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = make(tmp_path)
    for n in range(6):
        box.put_event(event(n), b"j" * 100)
    box.ack_many([m.id for m in box.pending(limit=2)])  # seq 1 delivered; 5 events still queued
    assert box.next_session() == 1
    box.close()
    (tmp_path / "outbox.sqlite3").write_bytes(b"a failing SD card" * 500)
    (tmp_path / "outbox.sqlite3-wal").unlink(missing_ok=True)

    box = make(tmp_path)
    assert box.put_event(event(7))["seq"] == 7  # not 1: the collector sees the gap 2-6
    assert box.next_session() == 2
    lost = box.stats()["lost"]
    assert lost["events"] == 5 and lost["last"]["seq_upto"] == 6 and "unreadable" in lost["last"]["reason"]
    assert any("5 events are lost" in r.getMessage() for r in caplog.records)
    box.close()
    box = make(tmp_path)  # announced once, not at every start
    assert box.stats()["lost"]["events"] == 5


def test_readable_rows_of_a_damaged_outbox_are_queued_again(tmp_path: Path) -> None:
    box = make(tmp_path)
    for n in range(1, 301):
        box.put_event(event(n), b"j" * 3000)
    box.close()
    path = tmp_path / "outbox.sqlite3"
    data = bytearray(path.read_bytes())
    page = 4096
    half = (len(data) // page // 2) * page
    data[half : half + 8 * page] = b"\xff" * 8 * page  # eight pages in the middle are garbage
    path.write_bytes(bytes(data))

    box = make(tmp_path)
    events = [json.loads(m.payload) for m in box.pending(limit=10**6) if m.kind == "event"]
    seqs = [e["seq"] for e in events]
    lost = box.stats()["lost"]
    assert 100 < len(events) < 300, len(events)
    assert seqs == sorted(seqs) and seqs[0] == 1 and seqs[-1] == 300  # before and after the damage, numbers kept
    assert all(e["event_id"] == f"e{e['seq']}" for e in events)
    assert all(m.replay for m in box.pending(limit=10**6))
    assert lost["events"] == 300 - len(events)
    assert box.put_event(event(301))["seq"] == 301


def test_an_outbox_lost_unread_counts_what_it_held_not_every_number_ever_issued(tmp_path: Path) -> None:
    box = make(tmp_path)
    for n in range(50):  # delivered over the device's life
        box.put_event(event(n))
    box.ack_many([m.id for m in box.pending(limit=1000)])
    for n in range(50, 55):  # five wait
        box.put_event(event(n), b"j" * 100)
    box.close()
    # the outbox is gone without having been read back (the daemon stopped while recovering
    # it, or someone moved it away): the next start finds a new, empty file
    (tmp_path / "outbox.sqlite3").rename(tmp_path / "outbox.sqlite3.corrupt-1")

    box = make(tmp_path)
    lost = box.stats()["lost"]
    assert lost["events"] == 5 and lost["last"]["seq_upto"] == 55, lost  # not 55: 50 were delivered
    box.counters.reserve(1)  # and the daemon stops again between reserving a number and queueing its event
    box.close()
    box = make(tmp_path)
    lost = box.stats()["lost"]
    assert lost["events"] == 6 and lost["last"]["events"] == 1 and lost["last"]["seq_upto"] == 56, lost
    assert box.put_event(event(57))["seq"] == 57
    box.close()
    assert make(tmp_path).stats()["lost"]["events"] == 6  # announced once


def test_a_lost_counters_file_resumes_from_the_outbox(tmp_path: Path) -> None:
    box = make(tmp_path)
    for n in range(4):
        box.put_event(event(n))
    box.next_session()
    box.close()
    (tmp_path / "counters.sqlite3").write_bytes(b"garbage" * 1000)
    (tmp_path / "counters.sqlite3-wal").unlink(missing_ok=True)
    box = make(tmp_path)
    assert box.put_event(event(5))["seq"] == 5
    assert box.next_session() == 2


SCAN_CHILD = textwrap.dedent(
    """
    import sys
    from deskwatch.delivery.outbox import Outbox
    box = Outbox(sys.argv[1], max_bytes=10**8, max_messages=10**6, max_age_days=20)
    n = 0
    while True:
        n += 1
        scan = f"{sys.argv[2]}-{n}"
        k = n % 4
        events = [({"event_id": f"{scan}-{i}", "scan_id": scan}, b"e" * 3000, None) for i in range(k)]
        box.put_scan({"scan_id": scan, "findings": k}, events)
        print(scan, flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_during_scans_leaves_each_scan_whole_or_absent(tmp_path: Path) -> None:
    confirmed: set[str] = set()
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", SCAN_CHILD, str(tmp_path), f"r{round_}"], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for _ in range(30):
            confirmed.add(proc.stdout.readline().strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        confirmed.update(line.strip() for line in proc.stdout if line.strip())
    box = make(tmp_path)
    rows = box.pending(limit=10**6)
    scans = {json.loads(m.payload)["scan_id"]: json.loads(m.payload)["findings"] for m in rows if m.kind == "scan"}
    found: dict[str, int] = {}
    for m in rows:
        if m.kind == "event":
            sid = json.loads(m.payload)["scan_id"]
            found[sid] = found.get(sid, 0) + 1
    assert confirmed <= set(scans)
    assert {sid: found.get(sid, 0) for sid in scans} == scans  # every queued scan has all its findings
    assert set(found) <= set(scans)  # and no finding is queued without its scan record


def test_an_image_damaged_while_running_is_recovered_not_retried_forever(tmp_path: Path) -> None:
    box = make(tmp_path)
    for n in range(1, 41):
        box.put_event(event(n), bytes([n]) * 30_000)  # images in overflow pages
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # in the main file, as after a while
    # Pages go bad on the card under the running daemon (the start-up probe passed long ago),
    # and are read from the card again once SQLite's page cache no longer holds them.
    path = tmp_path / "outbox.sqlite3"
    with open(path, "r+b") as f:
        f.seek((path.stat().st_size // 2 // 4096) * 4096)
        f.write(b"\x00" * 4096 * 4)
    box._db.execute("PRAGMA shrink_memory")

    with pytest.raises(sqlite3.DatabaseError) as failure:  # what the publisher meets
        for start in range(0, 200, 5):
            box.pending(after_id=start, limit=5)
    assert is_damaged(failure.value), failure.value
    box.recover(str(failure.value))
    rows = box.pending(limit=1000)
    kept = [json.loads(m.payload)["seq"] for m in rows if m.kind == "event"]
    assert 0 < len(kept) <= 40 and box.stats()["lost"]["events"] == 40 - len(kept)
    assert box.put_event(event(41))["seq"] == 41


# -- a sound file that cannot be used right now is never taken for a damaged one -----------


def corrupt_files(state: Path) -> list[str]:
    return sorted(p.name for p in state.iterdir() if ".corrupt-" in p.name)


def test_a_full_disk_at_start_keeps_the_queue_for_when_space_returns(fault_fs: FaultFs) -> None:
    """A real full filesystem (a small tmpfs, filled to the last byte): SQLite fails to open
    the outbox the way it does on a full SD card, which PRAGMA max_page_count cannot show."""
    state = fault_fs.tmpfs(3) / "state"
    box = make(state)
    for n in range(50):  # delivered earlier in the device's life
        box.put_event(event(n))
    box.ack_many([m.id for m in box.pending(limit=1000)])
    for n in range(50, 55):  # an outage: five events with their images wait
        box.put_event(event(n), b"j" * 2000)
    box.close()
    fault_fs.fill()  # the journal or a download fills the card while the daemon is stopped

    with pytest.raises(DatabaseUnavailable) as failure:
        make(state)
    message = str(failure.value)
    assert str(state / "outbox.sqlite3") in message and "full" in message, message
    assert corrupt_files(state) == []  # the sound file stays where it is

    fault_fs.free()  # space comes back; systemd starts the daemon again
    box = make(state)
    assert [json.loads(m.payload)["seq"] for m in box.pending() if m.kind == "event"] == [51, 52, 53, 54, 55]
    assert box.stats()["by_kind"]["evidence"] == 5
    assert box.stats()["lost"]["events"] == 0
    box.close()


CRASHING_CHILD = textwrap.dedent(
    """
    import os, sys
    from deskwatch.delivery.outbox import Outbox
    box = Outbox(sys.argv[1], max_bytes=10**8, max_messages=10**6, max_age_days=20)
    for n in range(1, 301):
        box.put_event({"event_id": f"e{n}"}, b"j" * 3000)
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os._exit(0)  # a power cut: no clean close, so the WAL and its index stay on the disk
    """
)


def test_a_damaged_outbox_on_a_full_disk_waits_for_space_to_be_read_back(fault_fs: FaultFs) -> None:
    """No room for a fresh file: the damaged one goes back in place for the next start to
    read back, rather than staying aside where no start would ever look for it."""
    state = fault_fs.tmpfs(8) / "state"
    subprocess.run([sys.executable, "-c", CRASHING_CHILD, str(state)], check=True)
    path = state / "outbox.sqlite3"
    with open(path, "r+b") as f:  # eight pages in the middle are garbage
        f.seek((path.stat().st_size // 2 // 4096) * 4096)
        f.write(b"\xff" * 8 * 4096)
    fault_fs.fill()

    with pytest.raises(DatabaseUnavailable) as failure:
        make(state)
    assert "malformed" in str(failure.value) and "full" in str(failure.value), failure.value
    assert corrupt_files(state) == [] and path.exists()

    fault_fs.free()
    box = make(state)
    events = [json.loads(m.payload)["seq"] for m in box.pending(limit=10**6) if m.kind == "event"]
    assert 100 < len(events) < 300 and events[-1] == 300
    assert box.stats()["lost"]["events"] == 300 - len(events)
    box.close()


SERVICE_USER = "nobody"


@pytest.fixture
def service_state(tmp_path: Path) -> Iterator[Path]:
    """A state directory the unprivileged service user can reach (as root: one under /tmp,
    since pytest's own temporary directories are root's alone)."""
    if os.geteuid() != 0:
        yield tmp_path / "state"
        return
    base = Path(tempfile.mkdtemp(prefix="deskwatch-state-"))
    try:
        yield base / "state"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def as_service_user(state: Path) -> Iterator[None]:
    """Run as the service user from here on: root's own permission checks never fail."""
    if os.geteuid() != 0:
        yield
        return
    user = pwd.getpwnam(SERVICE_USER)
    os.chown(state.parent, user.pw_uid, user.pw_gid)
    os.setegid(user.pw_gid)
    os.seteuid(user.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.parametrize("cause", ["owned by root", "no permissions"])
def test_an_outbox_the_service_user_may_not_open_is_kept_and_the_error_says_what_to_do(
    service_state: Path, cause: str
) -> None:
    """E.g. someone ran ``sudo deskwatch run`` once: the outbox became root's."""
    if cause == "owned by root" and os.geteuid() != 0:
        pytest.skip("only root can make a file the service user does not own")
    state = service_state
    box = make(state)
    for n in range(3):
        box.put_event(event(n))
    box.close()
    outbox = state / "outbox.sqlite3"
    me = pwd.getpwnam(SERVICE_USER).pw_name if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:  # the service user's files, but the outbox stays root's in the first case
        user = pwd.getpwnam(SERVICE_USER)
        for p in [state, *state.iterdir()]:
            if p != outbox or cause != "owned by root":
                os.chown(p, user.pw_uid, user.pw_gid)
    if cause == "no permissions":
        outbox.chmod(0)

    with as_service_user(state), pytest.raises(DatabaseUnavailable) as failure:
        make(state)
    message = str(failure.value)
    assert str(outbox) in message, message
    if cause == "owned by root":
        assert "owned by root" in message and f"chown {me}: {outbox}" in message, message
    else:
        assert "mode 0000" in message and f"chmod 600 {outbox}" in message, message
    assert corrupt_files(state) == [] and outbox.exists()

    # the operator does what the message says; the service starts with its queue intact
    if cause == "owned by root":
        user = pwd.getpwnam(SERVICE_USER)
        os.chown(outbox, user.pw_uid, user.pw_gid)
    else:
        outbox.chmod(0o600)
    with as_service_user(state):
        box = make(state)
        assert [json.loads(m.payload)["seq"] for m in box.pending() if m.kind == "event"] == [1, 2, 3]
        assert box.stats()["lost"]["events"] == 0
        box.close()


# -- one message damaged on the disk costs that message, not the queue behind it ----------


def flip_bit(path: Path, inside: bytes, at: bytes = b"{", bit: int = 0x01) -> None:
    """One bit flips on the card (SQLite keeps no checksums): in the first ``at`` at or
    before ``inside``, e.g. the '{' opening a stored JSON becomes 'z'."""
    raw = bytearray(path.read_bytes())
    where = raw.rindex(at, 0, raw.index(inside) + len(inside))
    raw[where] ^= bit
    path.write_bytes(bytes(raw))


def test_a_bit_flipped_on_the_disk_costs_that_message_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = make(tmp_path)
    box.put_event(event(1))
    props = {"content-type": "image/jpeg", "event_id": "e2"}
    box.put_event(event(2), b"\xff\xd8 two", props)
    box.put_event(event(3), b"\xff\xd8 three", {"content-type": "image/jpeg", "event_id": "e3"})
    box.put_event(event(5))
    box.close()
    path = tmp_path / "outbox.sqlite3"
    flip_bit(path, b'"event_id":"e1"')  # event 1's JSON: '{' -> 'z'
    flip_bit(path, b'"event_id": "e2"}')  # image 2's MQTT properties (a convenience, says the contract)
    flip_bit(path, b"evidence/e3", at=b"c", bit=0x40)  # image 3's topic: 'eviden#e/e3', a wildcard

    box = make(tmp_path)
    box.put_event(event(6))
    rows = box.pending()
    assert [(m.kind, m.event_id) for m in rows] == [
        ("event", "e2"),
        ("evidence", "e2"),
        ("event", "e3"),
        ("event", "e5"),
        ("event", "e6"),
    ]
    assert rows[1].payload == b"\xff\xd8 two" and rows[1].props is None  # the image goes, without its properties
    assert json.loads(rows[2].payload)["evidence_reason"] == "damaged"  # no JPEG to wait for
    lost = box.stats()["lost"]
    assert lost["events"] == 1 and lost["messages"] == 1, lost
    assert box.stats()["depth"] == 5 and box.stats()["by_kind"]["event"] == 4
    said = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert any("(event e1)" in m for m in said) and any("(evidence e3)" in m for m in said), said
    assert box.pending() == rows and len([r for r in caplog.records if "damaged" in r.getMessage()]) == len(said)
    box.close()
    assert [m.event_id for m in make(tmp_path).pending() if m.kind == "event"] == ["e2", "e3", "e5", "e6"]


def test_evicting_the_image_of_a_damaged_event_still_queues_the_new_event(tmp_path: Path) -> None:
    box = make(tmp_path, max_messages=2)
    box.put_event(event(1), b"\xff\xd8 one")
    box.close()
    flip_bit(tmp_path / "outbox.sqlite3", b'"event_id":"e1"')

    box = make(tmp_path, max_messages=2)
    queued = box.put_event(event(2))  # the cap evicts image 1 and would rewrite event 1
    assert queued["seq"] == 2
    assert [m.event_id for m in box.pending()] == ["e2"]  # event 1 is taken out when it is read
    assert box.stats()["evicted"]["evidence"] == 1 and box.stats()["lost"]["events"] == 1


def test_a_damaged_row_does_not_stop_the_read_back_of_a_damaged_outbox(tmp_path: Path) -> None:
    box = make(tmp_path)
    for n in range(200):  # delivered over the device's life
        box.put_event(event(1000 + n))
    box.ack_many([m.id for m in box.pending(limit=10**6)])
    for n in range(3):  # an outage: three events with images wait, and a backlog of health
        box.put_event(event(n), b"\xff\xd8" + b"j" * 300, {"content-type": "image/jpeg", "event_id": f"e{n}"})
    box.put_many("health", "health", [{"n": i, "pad": "h" * 200} for i in range(60)], qos=0)
    box.close()
    path = tmp_path / "outbox.sqlite3"
    flip_bit(path, b'"event_id": "e0"}')  # image e0's MQTT properties
    flip_bit(path, b'"event_id":"e1"')  # event e1's JSON
    raw = bytearray(path.read_bytes())
    raw[-4096:] = b"\xff" * 4096  # the table's last page (health) is garbage: the start-up probe fails
    path.write_bytes(bytes(raw))

    box = make(tmp_path)  # no crash on the damaged rows
    rows = box.pending(limit=10**6)
    assert [(m.kind, m.event_id) for m in rows if m.kind != "health"] == [
        ("event", "e0"),
        ("evidence", "e0"),
        ("evidence", "e1"),
        ("event", "e2"),
        ("evidence", "e2"),
    ]
    assert [json.loads(m.payload)["seq"] for m in rows if m.kind == "event"] == [201, 203]
    assert rows[1].props is None and rows[1].payload == b"\xff\xd8" + b"j" * 300
    lost = box.stats()["lost"]
    assert lost["events"] == 1 and "unreadable" in lost["last"]["reason"], lost
    assert box.put_event(event(3))["seq"] == 204
    box.close()
    box = make(tmp_path)  # the next start finds them still queued
    assert [m.event_id for m in box.pending(limit=10**6) if m.kind == "event"] == ["e0", "e2", "e3"]
    assert box.stats()["lost"]["events"] == 1


# -- a really full file system: the documented fallback runs, and every loss is counted ----


def test_a_really_full_disk_costs_old_images_not_the_new_events(
    fault_fs: FaultFs, caplog: pytest.LogCaptureFixture
) -> None:
    """A real full filesystem (unlike PRAGMA max_page_count above, which still lets the WAL
    and the counters grow): numbering an event needs room in the counters, and even evicting
    an image needs room, for the WAL pages of the delete."""
    state = fault_fs.tmpfs(4) / "state"
    box = make(state)
    for n in range(5):
        box.put_event(event(n), b"j" * 20_000)
    box.put("health", "health", {"h": 1}, qos=0)
    fault_fs.fill()

    queued = [box.put_event(event(10 + n), b"k" * 20_000) for n in range(3)]
    assert [q["seq"] for q in queued] == [6, 7, 8]
    st = box.stats()
    assert st["by_kind"]["event"] == 8 and st["evicted"]["evidence"] >= 1 and st["lost"]["events"] == 0, st
    assert any("disk is full" in r.getMessage() for r in caplog.records)
    delivered = box.pending(limit=4)  # the broker acknowledges while the disk is still full
    assert box.ack_many([m.id for m in delivered]) == 4

    fault_fs.free()  # space comes back: the room kept for the next time is made again
    box.put_event(event(20))
    assert (state / "outbox.reserve").stat().st_size > 0
    box.close()
    remaining = [json.loads(m.payload)["seq"] for m in make(state).pending(limit=100) if m.kind == "event"]
    assert remaining == [e for e in range(1, 10) if e not in {json.loads(m.payload).get("seq") for m in delivered}]


def test_a_disk_that_stays_full_loses_no_event_without_counting_it(fault_fs: FaultFs) -> None:
    """Images make room for images, then the events themselves fill what was kept: every
    event offered is queued or counted lost, and the count outlives the full disk."""
    state = fault_fs.tmpfs(4) / "state"
    box = Outbox(state, max_bytes=10**7, max_messages=10**4, max_age_days=20, disk_reserve_bytes=64 * 1024)
    box.put_event(event(0), b"j" * 20_000)
    fault_fs.fill()
    queued: list[dict[str, object]] = []
    offered = 0
    while box.stats()["lost"]["events"] == 0 and offered < 3000:  # until even the events do not fit
        offered += 1
        try:
            queued.append(box.put_event(event(offered), b"k" * 20_000))
        except sqlite3.OperationalError as exc:
            assert "full" in str(exc)
    lost = box.stats()["lost"]
    assert lost["events"] > 0 and offered == len(queued) + lost["events"], (offered, len(queued), lost)
    assert box.stats()["evicted"]["evidence"] >= 1 and box.stats()["evicted"]["event"] == 0

    fault_fs.free()
    box.put_event(event(offered + 1))  # space is back: the count the disk had no room for is written down
    box.close()
    box = make(state)
    assert box.stats()["lost"]["events"] == lost["events"]
    assert len([m for m in box.pending(limit=10**4) if m.kind == "event"]) == 1 + len(queued) + 1


def test_evidence_past_retention_goes_from_a_full_disk_too(fault_fs: FaultFs) -> None:
    """The broker was away for weeks and the card is full: the images queued then are past
    evidence retention, and the daily purge and the publisher's minute caps both failed with
    "database or disk is full" (a delete writes to the log first) - the images stayed on the
    device past retention for as long as the card stayed full, a traceback every minute. The
    room the outbox keeps for a full disk is given back for the delete, as for a write."""
    wall, mono = WallClock(), WallClock(0.0)
    state = fault_fs.tmpfs(6) / "state"
    box = Outbox(
        state,
        max_bytes=10**7,
        max_messages=10**4,
        max_age_days=30,
        evidence_max_age_days=20,
        wall_clock=wall,
        monotonic_clock=mono,
    )
    for n in range(20):
        box.put_event(event(n), bytes(range(256)) * 40)
    fault_fs.fill()
    wall.t += 21 * 86400
    mono.t += 21 * 86400
    assert box.expire_evidence(20 * 86400.0) == {"evidence": 20}  # the daily purge
    assert box.stats()["by_kind"]["evidence"] == 0 and box.stats()["by_kind"]["event"] == 20
    assert all(json.loads(m.payload)["evidence_reason"] == "evicted" for m in box.pending(limit=100))
    box.close()


@pytest.mark.parametrize("name", ["desk?1", "desk#1", "desk%41"])
def test_history_reads_the_outbox_of_a_state_dir_whose_path_a_uri_would_misread(tmp_path: Path, name: str) -> None:
    """`deskwatch history` reads the outbox by a read-only file: URI: unquoted, a '?' or '#' in
    state_dir ended the name there (history read nothing, and the "read-only" open created an
    empty file of the cut name) and '%41' named another directory's outbox ('deskA')."""
    from deskwatch.delivery.outbox import dropped_event_ids, queued_event_ids

    decoy = make(tmp_path / "deskA")
    decoy.put_event({**event(9), "event_id": "decoy"})
    decoy.close()
    box = make(tmp_path / name, max_bytes=3000)
    box.put_event(event(1), b"\xff\xd8" + b"\0" * 5000)  # its image over the cap: evicted, noted as dropped
    box.put_event(event(2))
    box.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert queued_event_ids(tmp_path / name) == {"e1": {"event"}, "e2": {"event"}}
    assert dropped_event_ids(tmp_path / name) == {"e1": {"evidence": "evicted"}}
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # a reader creates nothing


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: root's history reading the service user's outbox")
def test_sudo_history_reads_no_outbox_the_service_user_linked_elsewhere() -> None:
    """`sudo deskwatch history` reads the service user's outbox with that user's rights, as it
    reads the audit trail (adefa5c): a link put in the outbox's place, to a database only root
    may read, gives root's history nothing of it."""
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="deskwatch-outbox-"))  # a folder that user can reach
    base.chmod(0o755)
    try:
        _sudo_history_reads(base, nobody)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _sudo_history_reads(tmp_path: Path, nobody: pwd.struct_passwd) -> None:
    from deskwatch.delivery.outbox import dropped_event_ids, queued_event_ids

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    secret = tmp_path / "root-only.sqlite3"
    db = sqlite3.connect(secret)
    db.executescript(
        "CREATE TABLE messages (event_id TEXT, kind TEXT); INSERT INTO messages VALUES ('root-only', 'event');"
        "CREATE TABLE dropped (event_id TEXT, kind TEXT, reason TEXT); CREATE TABLE damaged (event_id TEXT, kind TEXT);"
        "INSERT INTO dropped VALUES ('root-only', 'event', 'evicted');"
    )
    db.close()
    secret.chmod(0o600)
    link = state / "outbox.sqlite3"
    link.symlink_to(secret)
    os.lchown(link, nobody.pw_uid, nobody.pw_gid)
    assert queued_event_ids(state) == {}
    assert dropped_event_ids(state) == {}
    own = tmp_path / "state?#%41"  # and the service user's own outbox is read, as that user
    own.mkdir(mode=0o700)
    box = make(own)
    box.put_event(event(1))
    box.close()
    for f in (own, *own.iterdir()):
        os.chown(f, nobody.pw_uid, nobody.pw_gid)
    assert queued_event_ids(own) == {"e1": {"event"}}


def test_a_loss_a_read_only_card_would_not_take_is_said_with_the_cards_trouble_at_close(
    fault_fs: FaultFs, caplog: pytest.LogCaptureFixture
) -> None:
    """The card turned read-only; an event could not be numbered, nor its loss written down. At
    the stop the journal said "the loss of 1 events was never written down (no room)": a
    read-only card has room, and the technician went looking for space to free. It now names
    what the disk did and what to do."""
    box = make(fault_fs.ext4_on_tmpfs() / "state")
    box.put_event(event(1))
    fault_fs.force_read_only()
    with pytest.raises(sqlite3.OperationalError):
        box.put_event(event(2))
    caplog.clear()
    box.close()
    (said,) = [r.getMessage() for r in caplog.records if "never written down" in r.getMessage()]
    assert "no room" not in said and "read-only" in said and "check dmesg" in said, said


def test_delivered_messages_the_card_cannot_delete_are_not_reported_as_queued(fault_fs: FaultFs) -> None:
    """The card turned read-only, then the broker took the whole queue: the deletes failed and
    the acknowledged rows stay in the file (not sent again, 8439c93). Status ("outbox 6 queued"),
    health and the connect line still counted them as waiting, an ever older backlog that was
    never going to drain, for a queue the broker had taken whole. Only what is still to be sent counts."""
    clock = WallClock()
    box = Outbox(
        fault_fs.ext4_on_tmpfs() / "state", max_bytes=10**7, max_messages=1000, max_age_days=20, wall_clock=clock
    )
    for n in range(3):
        box.put_event(event(n), b"\xff\xd8" + bytes(2000))
    fault_fs.force_read_only()
    first = box.pending(limit=1)
    assert box.ack_many([m.id for m in first]) == 1  # the first event delivered; its delete refused
    clock.t += 3600
    st = box.stats()
    assert (box.depth, st["depth"], st["by_kind"]["event"], st["by_kind"]["evidence"]) == (5, 5, 2, 3)
    assert box.ack_many([m.id for m in box.pending(limit=1000)]) == 5
    st = box.stats()
    assert (box.depth, st["depth"], st["bytes"], st["oldest_age_s"]) == (0, 0, 0, 0.0), st
    assert sum(st["by_kind"].values()) == 0, st
    box.close()


def test_a_delivered_message_the_caps_delete_is_not_counted_as_evicted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivered row the disk would not delete (kept as acknowledged) that the caps then take out
    was delivered: not an eviction, not 'dropped' for history, and no longer in the depth."""
    box = make(tmp_path, max_messages=3)
    box.put("health", "health", {"n": 0}, qos=0)
    box.put_event(event(1))

    def refused(ids: list[int]) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as m:
        m.setattr(box, "_delete_acked", refused)
        assert box.ack_many([box.pending()[0].id]) == 1  # the health message: delivered, kept
    box.put_event(event(2))
    box.put_event(event(3))  # over max_messages: the health row, the least valuable, goes
    assert box.evicted["health"] == 0 and box.depth == 3 and box.stats()["by_kind"]["health"] == 0
    box.close()


def test_a_card_that_fills_while_the_log_is_ahead_of_the_file_still_takes_the_events(fault_fs: FaultFs) -> None:
    """80 findings with their images queued while the broker was away sat in SQLite's log (3.3 MB;
    it is copied into the file at 1000 pages by default) ahead of a 4 KiB file. The card filled:
    the room kept for a full disk (1 MiB) went into copying the log into the file, and every
    event after that was lost (200 of 200 in r8). The log is now copied once it holds half the
    room kept, so that the room always covers it."""
    box = make(fault_fs.tmpfs(24) / "state")
    rng = np.random.default_rng(3)
    for n in range(80):
        box.put_event(event(n), b"\xff\xd8" + rng.integers(0, 256, 15_000, dtype=np.uint8).tobytes())
    fault_fs.fill()
    try:
        for n in range(80, 100):  # the card stays full; scans go on finding
            box.put_event(event(n), b"\xff\xd8" + rng.integers(0, 256, 15_000, dtype=np.uint8).tobytes())
        assert box.stats()["lost"]["events"] == 0 and box.stats()["by_kind"]["event"] == 100
    finally:
        fault_fs.free()
        box.close()


def test_queueing_one_more_message_costs_the_same_however_long_the_queue(tmp_path: Path) -> None:
    """Every write checks the queue for messages past their age. That check read every queued row,
    the images' overflow pages included (``created`` is stored after the payload): a broker
    outage made each health message and scan slower as the queue grew (13 ms a put at 750
    messages, 45 ms at 7,050 on tmpfs; the default 64 MB cap holds ~3,000 images, all read at
    every write, once a minute, in the scan loop). Found by ``make soak``'s outage."""
    box = make(tmp_path, max_bytes=1 << 30, max_messages=1_000_000)
    image = bytes(range(256)) * 80  # a 20 KB thumbnail: its bytes spill into overflow pages

    def steps_for_one_put() -> int:
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        box._db.set_progress_handler(count, 100)  # SQLite's work, in units of 100 VM steps
        try:
            box.put("health", "health", {"n": 0}, qos=0)
        finally:
            box._db.set_progress_handler(None, 0)
        return steps[0]

    def queue(n: int) -> None:  # in one transaction each: one fsync, not n
        box.put_scan(None, [(event(i), image, None) for i in range(n)])
        box.put_many("health", "health", [{"n": i} for i in range(n)], qos=0)

    queue(50)
    short = steps_for_one_put()
    queue(950)
    long = steps_for_one_put()
    assert long < 2 * short + 20, (short, long)  # 1,000 images queued: no more work than with 50


def test_a_queue_at_its_cap_says_so_once_an_hour_and_counts_every_eviction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At the cap every message queued evicts an older one. Each eviction was a WARNING line: in
    ``make soak``'s 3-day outage 2,848 of them (0.65 MB of a 1.06 MB log), one a minute from health
    alone, burying the scans and events of the same days. Now one an hour, saying what went since."""
    import logging

    wall = WallClock()
    box = Outbox(tmp_path, max_bytes=10_000_000, max_messages=100, max_age_days=20, wall_clock=wall)
    with caplog.at_level(logging.DEBUG, logger="deskwatch.delivery.outbox"):
        for n in range(160):  # one a minute for 160 minutes; the last 60 each evict one
            box.put("health", "health", {"n": n}, qos=0)
            wall.t += 60
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert box.evicted["health"] == 60  # every one counted (health outbox.evicted)
    assert len(warnings) == 1, warnings  # the first at once; the next ones wait for the hour
    assert warnings[0].startswith("outbox cap reached (100 messages") and "evicted 1 health" in warnings[0]
    wall.t += 3600
    with caplog.at_level(logging.DEBUG, logger="deskwatch.delivery.outbox"):
        box.put("health", "health", {"n": 160}, qos=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and "evicted 60 health in the last" in warnings[1], warnings


def test_an_outbox_from_before_the_age_index_opens_on_a_full_card(fault_fs: FaultFs) -> None:
    """The first start after the update that added messages_by_created (f973353) met an outbox
    the previous release wrote, without that index. Opening it built the index - a write, which
    a card full during a long outage refuses - so the daemon, which used to start there and send
    what it queued (a58b21d: an open at this format writes nothing), stopped at the open. And the
    caps named the index (INDEXED BY) where it might not be. The queue now opens and works
    without it; the index is made when the card has room."""
    state = fault_fs.tmpfs(16) / "state"
    box = make(state, max_messages=100_000)
    for n in range(0, 20_000, 1000):  # a long outage: 20,000 small messages queued
        box.put_many("health", "health", [{"schema": "deskwatch.health/1", "n": i} for i in range(n, n + 1000)])
    box.close()
    old = sqlite3.connect(state / "outbox.sqlite3")  # as the previous release left it
    old.execute("DROP INDEX messages_by_created")
    old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    old.close()
    fault_fs.fill()
    filler = state.parent / "filler"
    os.truncate(filler, filler.stat().st_size - 192 * 1024)  # room for the open's -shm, not for the index

    box = make(state, max_messages=100_000)
    try:
        assert len(box.pending(limit=100)) == 100
        assert box.depth == 20_000
        box.enforce_caps()  # the index still cannot be made: the caps work without it
    finally:
        box.close()
    fault_fs.free()
    box = make(state, max_messages=100_000)
    try:
        assert box._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_by_created'").fetchone()
        box.enforce_caps()
    finally:
        box.close()


def test_the_first_events_the_cap_evicts_are_said_at_once_not_an_hour_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """dd9437f said cap evictions once an hour. The first line of an outage names health
    messages, which go first and matter little; when the queue then ran out of them and began
    evicting the worker's findings (events: gone for good, a gap in seq) that was a DEBUG line
    until the hour was up. A kind the caps had not evicted since the last line is said at once."""
    import logging

    wall = WallClock()
    box = Outbox(tmp_path, max_bytes=10_000_000, max_messages=5, max_age_days=20, wall_clock=wall)
    with caplog.at_level(logging.DEBUG, logger="deskwatch.delivery.outbox"):
        for n in range(6):  # the sixth evicts a health message: the first line
            box.put("health", "health", {"n": n}, qos=0)
            wall.t += 60
        for n in range(8):  # five events push the health messages out; the next ones evict events
            box.put_event(event(n))
            wall.t += 60
        for n in range(3):  # more health: evicts that health again, already said
            box.put("health", "health", {"n": 100 + n}, qos=0)
            wall.t += 60
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "cap reached" in r.getMessage()
    ]
    assert box.evicted["event"] == 3
    assert len(warnings) == 2, warnings
    assert "evicted 1 health" in warnings[0] and "1 event" in warnings[1], warnings
