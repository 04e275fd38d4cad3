"""The collector against a real Mosquitto: the real device client, shared subscriptions, acks after commit."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from deskwatch.app import build_delivery, payload_source
from deskwatch.delivery.payloads import event_payload
from deskwatch.domain import Box, Detection, Finding, ScanRecord, utcnow
from deskwatch.evidence.thumbnail import Evidence
from deskwatch_collector.store import Store, Tx
from deskwatch_collector.subscriber import Subscriber
from deskwatch_dev.fleet import Outgoing, SimDevice, evidence_jpegs
from tests.support.mosquitto import Broker, device_config

pytestmark = pytest.mark.broker


def test_events_from_the_real_device_client_are_stored_with_verified_evidence(
    tmp_path: Path, mosquitto: Broker, store_factory: Callable[[str], Store], start_collector: Callable[..., Subscriber],
    until: Callable[..., bool], db_count: Callable[..., int],
) -> None:  # fmt: skip
    store = store_factory("sqlite")
    collector = start_collector(mosquitto, store)
    cfg = device_config(tmp_path, mosquitto)
    delivery = build_delivery(cfg, version="1.0", models={"m": "0" * 64})
    delivery.start()
    try:
        record = ScanRecord(scan_id="scan-1", trigger="schedule", started_at=utcnow(), finished_at=utcnow(), frames=5)
        finding = Finding("phone_use", 0.9, 1, [Detection("cell phone", 0.8, Box(0.1, 0.1, 0.3, 0.3))])
        jpeg = evidence_jpegs()[0]
        photo = Evidence(jpeg, 320, 240, hashlib.sha256(jpeg).hexdigest())
        ids = [
            delivery.send_event(event_payload(payload_source(cfg), finding, record, photo, None), jpeg)
            if n != 1
            else delivery.send_event(event_payload(payload_source(cfg), finding, record, None, "not_allowed"), None)
            for n in range(3)
        ]
        assert until(lambda: db_count(store, "events") == 3 and db_count(store, "evidence") == 2)
        assert until(lambda: db_count(store, "devices", "WHERE state = 'online'") == 1)
    finally:
        delivery.stop()
    assert until(lambda: db_count(store, "devices", "WHERE state = 'offline'") == 1)
    with store.transaction(write=False) as tx:
        rows = tx.rows("SELECT e.event_id, e.seq, v.state, v.sha256 FROM events e"
                       " LEFT JOIN evidence v ON v.event_id = e.event_id ORDER BY e.seq")  # fmt: skip
    digest = hashlib.sha256(jpeg).hexdigest()
    assert rows == [(ids[0], 1, "verified", digest), (ids[1], 2, None, None), (ids[2], 3, "verified", digest)]
    assert collector.stats.snapshot().get("event.stored") == 3


def test_two_collectors_in_one_group_split_the_load_without_loss_or_duplicates(
    mosquitto: Broker, store_factory: Callable[[str], Store], start_collector: Callable[..., Subscriber],
    fleet_publisher: Callable[..., Any], until: Callable[..., bool], db_count: Callable[..., int],
) -> None:  # fmt: skip
    store = store_factory("sqlite")  # both collectors write one database (PostgreSQL in production)
    a = start_collector(mosquitto, store, client_id="collector-a")
    b = start_collector(mosquitto, store, client_id="collector-b")
    pub = fleet_publisher(mosquitto)
    devices = [SimDevice("acme", f"desk-{i}", f"w-{i}") for i in range(5)]
    messages = [m for _ in range(8) for d in devices for m in d.violation(with_evidence=False)]
    pub.send(messages)
    stored = lambda c: c.stats.snapshot().get("event.stored", 0)  # noqa: E731 - counted after the COMMIT
    assert until(lambda: db_count(store, "events") == 40 and db_count(store, "scans") == 40)
    assert until(lambda: stored(a) + stored(b) == 40)
    got_a, got_b = stored(a), stored(b)
    assert got_a + got_b == 40 and got_a > 5 and got_b > 5, (got_a, got_b)
    assert a.stats.snapshot().get("event.duplicate", 0) + b.stats.snapshot().get("event.duplicate", 0) == 0


def test_bad_messages_on_the_wire_are_rejected_counted_and_acknowledged(
    mosquitto: Broker, store_factory: Callable[[str], Store], start_collector: Callable[..., Subscriber],
    fleet_publisher: Callable[..., Any], until: Callable[..., bool], db_count: Callable[..., int],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    store = store_factory("sqlite")
    collector = start_collector(mosquitto, store)
    dev = SimDevice("acme", "desk-a", "w-1")
    event = dev.violation(with_evidence=False)[0]
    broken = json.loads(event.payload) | {"seq": 0}
    pub = fleet_publisher(mosquitto)
    pub.send([
        Outgoing(event.topic, json.dumps(broken).encode(), 1, False, None),
        Outgoing(event.topic, b"\xff\xfe", 1, False, None),
        event,
    ])  # fmt: skip
    expected = {"rejected.schema": 1, "rejected.bad_json": 1, "event.stored": 1}
    counts = lambda: {k: v for k, v in collector.stats.snapshot().items() if k.startswith(("rejected.", "event."))}  # noqa: E731
    assert until(lambda: db_count(store, "rejects") == 2 and db_count(store, "events") == 1)
    assert until(lambda: counts() == expected), counts()  # the writer counts after its COMMIT
    assert any("rejected message on deskwatch/v1/acme/desk-a/event: schema" in r.message for r in caplog.records)


class _HeldStore:
    """A store whose transactions wait for ``release``: the collector "crashes" before committing."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        self.entered.set()
        self.release.wait(20)
        raise RuntimeError("the collector process is gone")
        yield  # pragma: no cover


def test_a_collector_that_dies_before_commit_loses_nothing(
    mosquitto: Broker, store_factory: Callable[[str], Store], start_collector: Callable[..., Subscriber],
    fleet_publisher: Callable[..., Any], until: Callable[..., bool], db_count: Callable[..., int],
) -> None:  # fmt: skip
    store = store_factory("sqlite")
    held = _HeldStore(store)
    doomed = start_collector(mosquitto, held, client_id="collector-1")  # type: ignore[arg-type]
    messages = SimDevice("acme", "desk-a", "w-1").violation()
    fleet_publisher(mosquitto).send(messages)
    assert held.entered.wait(10), "the collector never received the event"
    doomed.abort()  # the process dies: no commit, no PUBACK, no DISCONNECT
    held.release.set()
    assert db_count(store, "events") == 0
    # Restarted with its client id, the collector resumes its session and the broker resends.
    start_collector(mosquitto, store, client_id="collector-1")
    assert until(lambda: db_count(store, "events") == 1 and db_count(store, "evidence") == 1)
    assert db_count(store, "scans") == 1


@pytest.mark.slow
def test_collector_on_postgresql_end_to_end(
    mosquitto: Broker, store_factory: Callable[[str], Store], start_collector: Callable[..., Subscriber],
    fleet_publisher: Callable[..., Any], until: Callable[..., bool], db_count: Callable[..., int],
) -> None:  # fmt: skip
    store = store_factory("postgresql")
    start_collector(mosquitto, store, client_id="pg-a")
    start_collector(mosquitto, store, client_id="pg-b")
    devices = [SimDevice("acme", f"desk-{i}", f"w-{i}") for i in range(4)]
    pub = fleet_publisher(mosquitto)
    pub.send([d.status() for d in devices])
    pub.send([m for _ in range(5) for d in devices for m in d.violation()] + [d.health() for d in devices])
    assert until(
        lambda: db_count(store, "events") == 20 and db_count(store, "evidence", "WHERE state = 'verified'") == 20
    )
    assert until(lambda: db_count(store, "devices", "WHERE state = 'online' AND health IS NOT NULL") == 4)


@pytest.mark.slow
def test_a_database_outage_pauses_intake_without_acknowledging(
    mosquitto: Broker, start_collector: Callable[..., Subscriber], fleet_publisher: Callable[..., Any],
    until: Callable[..., bool], db_count: Callable[..., int], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from deskwatch_collector.store import open_store
    from deskwatch_dev.devservers import TempPostgres

    pg = TempPostgres().start()
    store = open_store(pg.create_database("outage"))
    try:
        collector = start_collector(mosquitto, store)
        dev = SimDevice("acme", "desk-a", "w-1")
        pub = fleet_publisher(mosquitto)
        pub.send(dev.violation())  # event, evidence, scan
        assert until(lambda: db_count(store, "events") == 1 and db_count(store, "scans") == 1)
        pg.halt()  # the database goes away
        pub.send([m for _ in range(5) for m in dev.violation()])
        # All 15 arrived and are held, none stored. How many the first failing batch took
        # depends on how fast they came in (a 20 ms batch window); the rest wait in the inbox,
        # and the health report counts both: the batch it retries and the inbox behind it.
        assert until(lambda: collector.health.snapshot().get("unacknowledged_held") == 15, 15)
        assert collector.stats.snapshot().get("event.stored") == 1
        assert until(lambda: any("cannot store (unreachable" in r.message for r in caplog.records), 10)
        assert collector.health.snapshot()["failure"] == "unreachable"
        pg.resume()
        assert until(lambda: db_count(store, "events") == 6 and db_count(store, "evidence") == 6, 30)
        with store.transaction(write=False) as tx:
            assert tx.rows("SELECT seq FROM events ORDER BY seq") == [(i,) for i in range(1, 7)]
    finally:
        store.close()
        pg.stop()
