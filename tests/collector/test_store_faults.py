"""Nothing is acknowledged that is not stored: every kind of storage failure, on real filesystems
and a real PostgreSQL, with a real Mosquitto between the device and the collector.

Each test stores a few events, breaks the storage, publishes more, checks that the
collector stored none of them and says why in its health, repairs the storage the way an
operator would, and checks that every event arrives: the broker kept what the collector
never acknowledged. (PostgreSQL restarting is ``test_mqtt.py``'s outage test.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from deskwatch_collector.store import Store, open_store
from deskwatch_collector.subscriber import Subscriber
from deskwatch_dev.devservers import TempPostgres
from deskwatch_dev.fleet import SimDevice
from tests.support.faultfs import FaultFs
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.broker

WARM, DURING = 5, 30


def events(device: SimDevice, n: int) -> list[Any]:
    return [m for _ in range(n) for m in device.violation(with_evidence=False) if m.topic.endswith("/event")]


def seqs(store: Store) -> list[int]:
    with store.transaction(write=False) as tx:
        return [int(r[0]) for r in tx.rows("SELECT seq FROM events ORDER BY seq")]


def break_and_publish(
    collector: Subscriber, store: Store, pub: Any, device: SimDevice, kind: str, until: Callable[..., bool],
    breaking: Callable[[], None],
) -> None:  # fmt: skip
    pub.send(events(device, WARM))
    assert until(lambda: len(seqs(store)) == WARM)
    breaking()
    pub.send(events(device, DURING))
    assert until(lambda: collector.health.snapshot().get("failure") == kind, 15), collector.health.snapshot()
    time.sleep(1.0)  # a few retries
    health = collector.health.snapshot()
    assert health["ok"] is False and health["unacknowledged_held"] >= 1
    assert collector.stats.snapshot().get("event.stored") == WARM
    assert "internal_error" not in str(collector.stats.snapshot())


def test_a_full_disk_holds_every_message_until_space_returns(
    fault_fs: FaultFs, mosquitto: Broker, start_collector: Callable[..., Subscriber],
    fleet_publisher: Callable[..., Any], until: Callable[..., bool],
) -> None:  # fmt: skip
    store = open_store(str(fault_fs.tmpfs(3) / "collector.db"))
    try:
        collector = start_collector(mosquitto, store)
        device = SimDevice("acme", "desk-full", "w-1")
        break_and_publish(collector, store, fleet_publisher(mosquitto), device, "disk_full", until, fault_fs.fill)
        fault_fs.free()  # space comes back: the same collector stores and acknowledges, no restart
        assert until(lambda: seqs(store) == list(range(1, WARM + DURING + 1)), 30)
        assert until(lambda: collector.health.snapshot()["ok"], 5)
    finally:
        store.close()


@pytest.mark.parametrize("fault", ["io_error", "read_only"])
def test_an_io_error_or_a_read_only_filesystem_loses_nothing_after_repair(
    fault: str, fault_fs: FaultFs, mosquitto: Broker, start_collector: Callable[..., Subscriber],
    fleet_publisher: Callable[..., Any], until: Callable[..., bool],
) -> None:  # fmt: skip
    db = fault_fs.ext4_on_tmpfs() / "collector.db"
    store = open_store(str(db))
    collector = start_collector(mosquitto, store, client_id=f"collector-{fault}")
    device = SimDevice("acme", f"desk-{fault}".replace("_", "-"), "w-1")
    breaking = fault_fs.starve_backing if fault == "io_error" else fault_fs.force_read_only
    expected = "io_error" if fault == "io_error" else "read_only"
    break_and_publish(collector, store, fleet_publisher(mosquitto), device, expected, until, breaking)
    # The filesystem stays read-only after such an error: the operator stops the collector,
    # repairs the disk and starts it again. The broker still holds the unacknowledged events.
    collector.stop(timeout=2)
    store.close()
    fault_fs.repair()
    store = open_store(str(db))
    try:
        start_collector(mosquitto, store, client_id=f"collector-{fault}")
        assert until(lambda: seqs(store) == list(range(1, WARM + DURING + 1)), 30)
    finally:
        store.close()


@pytest.mark.slow
def test_postgresql_turning_read_only_in_a_failover_loses_nothing(
    mosquitto: Broker, start_collector: Callable[..., Subscriber], fleet_publisher: Callable[..., Any],
    until: Callable[..., bool],
) -> None:  # fmt: skip
    import psycopg

    pg = TempPostgres().start()
    store = open_store(pg.create_database("failover"))

    def read_only(on: bool) -> None:
        # What a collector meets when its DSN lands on a standby, or on a primary a failover demoted.
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(
                "ALTER SYSTEM SET default_transaction_read_only = on"
                if on
                else "ALTER SYSTEM RESET default_transaction_read_only"
            )
            conn.execute("SELECT pg_reload_conf()")
        # pg_reload_conf() only signals the postmaster: wait until a new session sees the setting
        assert until(lambda: setting() == ("on" if on else "off"), 10), "the configuration reload did not take effect"

    def setting() -> str:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            row = conn.execute("SHOW default_transaction_read_only").fetchone()
        return str(row[0]) if row else ""

    try:
        collector = start_collector(mosquitto, store)
        device = SimDevice("acme", "desk-pg", "w-1")
        pub = fleet_publisher(mosquitto)
        break_and_publish(collector, store, pub, device, "read_only", until, lambda: read_only(True))
        read_only(False)  # the new primary takes writes: the same collector catches up by itself
        assert until(lambda: seqs(store) == list(range(1, WARM + DURING + 1)), 30)
    finally:
        store.close()
        pg.stop()
