"""A real PostgreSQL failover under a real collector: what it acknowledged must be on the new primary.

Two PostgreSQL 15 clusters (a primary and a streaming standby made by ``pg_basebackup``),
a real Mosquitto, the collector with the primary and the standby in one DSN, and four
devices publishing events and scans without pause. Partway through, the standby falls
behind (the primary's walsender is frozen with SIGSTOP: a standby that lags or is cut off,
made deterministic), every process of the primary is SIGKILLed at once, and the standby is
promoted. Meanwhile a thread polls the collector's real ``/healthz``.

- **synchronous** replication (``synchronous_standby_names = '*'``): the commits wait for
  the standby, so nothing is acknowledged while it lags (``/healthz``: ``commit_stalled``),
  then ``unreachable`` while no server takes writes; after the promotion the collector
  finds the new primary by itself, the broker redelivers what was never acknowledged, and
  every published event is stored exactly once: 0 lost.
- **asynchronous** replication (PostgreSQL's default): the primary acknowledges commits the
  standby never received; so does the collector, and the broker forgets them. After the
  failover those events are nowhere: the test counts them (at least the ones acknowledged
  after the freeze) and shows that the collector's own gap report sees the hole.

The DSN lists the standby first and no ``target_session_attrs``: the collector must add
``read-write`` itself, or it would sit on the standby while the primary is up.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from deskwatch_collector.ingest import missing_seqs
from deskwatch_collector.intake import IntakeHealth
from deskwatch_collector.store import PostgresStore, Store, open_store, writer_dsn
from deskwatch_collector.subscriber import Subscriber, SubscriberSettings
from deskwatch_dev.devservers import TempPostgres
from deskwatch_dev.fleet import SimDevice
from deskwatch_dev.pgfailover import AckedInbox
from tests.support.mosquitto import Broker
from tests.support.web import ServerFactory, WebClient

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEVICES = 4
ROUND_S = 0.05  # one event + scan per device every 50 ms: 80 events/s in all


@dataclass
class Pair:
    primary: TempPostgres
    standby: TempPostgres

    def dsn(self) -> str:
        # the standby first, no target_session_attrs: the collector must pick the writer itself
        hosts = f"127.0.0.1:{self.standby.port},127.0.0.1:{self.primary.port}"
        return f"postgresql://postgres@{hosts}/failover"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    synchronous: bool = request.param
    primary = TempPostgres().start()
    standby: TempPostgres | None = None
    try:
        primary.create_database("failover")
        standby = primary.replicated(synchronous=synchronous)
        yield Pair(primary, standby)
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


@dataclass
class Load:
    """Devices publishing an event and a scan each per round until stopped; ``published`` holds
    the event ids the broker confirmed (PUBACK)."""

    publisher: Any
    devices: list[SimDevice]
    published: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            messages = [m for d in self.devices for m in d.violation(with_evidence=False)]
            self.publisher.send(messages)
            self.published += [m.event_id for m in messages if m.event_id]
            time.sleep(ROUND_S)


@dataclass
class HealthLog:
    """Every change of the collector's ``/healthz`` (status, failure) with its time."""

    url: str
    changes: list[tuple[float, int, str]] = field(default_factory=list)
    replication: list[str] = field(default_factory=list)  # what protects a commit, each change
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = WebClient(self.url)
        while not self.stop.is_set():
            status, _, body = client.call("/healthz")
            state = json.loads(body)
            failure = str(state.get("failure", ""))
            if not self.changes or self.changes[-1][1:] != (status, failure):
                self.changes.append((time.monotonic(), status, failure))
            if not self.replication or self.replication[-1] != state.get("replication"):
                self.replication.append(str(state.get("replication")))
            time.sleep(0.05)

    def failures(self) -> list[str]:
        return [failure for _, status, failure in self.changes if status != 200]


def stored(standby: TempPostgres) -> tuple[list[str], int, int]:
    """(event ids, scans, distinct scans) on the promoted standby, read directly."""
    with psycopg.connect(standby.dsn("failover"), connect_timeout=5) as conn:
        ids = [str(r[0]) for r in conn.execute("SELECT event_id FROM events").fetchall()]
        scans = conn.execute("SELECT COUNT(*), COUNT(DISTINCT (site, device_id, scan_id)) FROM scans").fetchone()
    assert scans is not None
    return ids, int(scans[0]), int(scans[1])


@pytest.mark.parametrize("pair", [True, False], ids=["synchronous", "asynchronous"], indirect=True)
def test_failover_under_load(
    pair: Pair, mosquitto: Broker, fleet_publisher: Callable[..., Any], console_server: ServerFactory,
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    synchronous = request.node.callspec.id == "synchronous"
    caplog.set_level(logging.INFO, "deskwatch_collector")
    store = open_store(pair.dsn())
    web_store = open_store(pair.dsn())
    health = IntakeHealth(stall_after=1.0)
    settings = SubscriberSettings(host=mosquitto.host, port=mosquitto.port, client_id="collector-failover")
    collector = Subscriber(settings, store, health=health)
    inbox = AckedInbox()
    collector.writer.inbox = inbox
    server = console_server(web_store, health=health.snapshot)
    load = Load(fleet_publisher(mosquitto), [SimDevice("acme", f"desk-{i}", f"w-{i}") for i in range(DEVICES)])
    healthz = HealthLog(server.url)
    threads = [threading.Thread(target=load.run, daemon=True), threading.Thread(target=healthz.run, daemon=True)]
    frozen: int | None = None
    try:
        collector.start()
        assert collector.subscribed.wait(10)
        for thread in threads:
            thread.start()
        wait_for(lambda: len(inbox.snapshot()) >= 40, 15, "the first events stored")

        # The standby falls behind: the primary's walsender stops sending.
        walsender = pair.primary.walsender()
        assert walsender is not None
        frozen = walsender[0]
        os.kill(frozen, signal.SIGSTOP)
        at_freeze = len(inbox.snapshot())
        if synchronous:  # the commit waits for the standby: nothing more is acknowledged
            wait_for(lambda: "commit_stalled" in healthz.failures(), 10, "/healthz to say commit_stalled")
            stalled = inbox.snapshot()
            time.sleep(0.5)
            assert inbox.snapshot() == stalled
        else:  # the primary commits alone; the collector acknowledges
            wait_for(lambda: len(inbox.snapshot()) >= at_freeze + 40, 10, "events acknowledged after the freeze")

        crashed = time.monotonic()
        pair.primary.crash()  # every process at once, the frozen walsender too
        frozen = None
        wait_for(lambda: healthz.failures()[-1:] == ["unreachable"], 10, "/healthz to say unreachable")
        time.sleep(0.5)  # an outage, not a blip
        promoted = time.monotonic()
        pair.standby.promote()
        wait_for(lambda: healthz.changes[-1][1] == 200, 30, "/healthz to say ok again")
        resumed = time.monotonic()
        published_at_resume = len(load.published)
        wait_for(lambda: len(load.published) >= published_at_resume + 40, 10, "more events published")
        load.stop.set()
        threads[0].join(15)
        published = list(load.published)
        # every published event is acknowledged at last (what was lost was acknowledged before)
        wait_for(lambda: inbox.snapshot() >= set(published), 30, "the rest acknowledged")
    finally:
        load.stop.set()
        healthz.stop.set()
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        collector.stop(timeout=2)
        for thread in threads:
            thread.join(5)
        store.close()
        web_store.close()

    ids, scans, distinct_scans = stored(pair.standby)
    acked = inbox.snapshot()
    lost = acked - set(ids)  # acknowledged, and not on the new primary
    print(
        f"\n{request.node.callspec.id}: published {len(published)} events, acknowledged {len(acked)},"
        f" stored {len(ids)} on the new primary; acknowledged then lost: {len(lost)};"
        f" /healthz: {' -> '.join(f'{s} {f}'.strip() for _, s, f in healthz.changes)}"
        f" (replication: {' -> '.join(healthz.replication)});"
        f" promoted {promoted - crashed:.1f} s after the crash, storing again {resumed - promoted:.1f} s after it"
    )
    said = "\n".join(r.getMessage() for r in caplog.records if r.name == "deskwatch_collector.store")
    # what a commit waits for, said at start and again on the new primary (alone now)
    assert ("waits for a synchronous standby" if synchronous else "replicates asynchronously") in said
    assert f"PostgreSQL 127.0.0.1:{pair.standby.port} has no standby connected" in said
    assert healthz.replication == ["synchronous" if synchronous else "asynchronous", "no_standby"]
    assert len(ids) == len(set(ids)) and scans == distinct_scans  # nothing stored twice
    assert set(published) - lost <= set(ids)  # the rest arrives: what was in flight at the crash was redelivered
    assert healthz.failures()[-1] == "unreachable" and healthz.changes[-1][1] == 200
    if synchronous:
        assert lost == set()
        assert set(ids) == set(published)  # even what was in flight at the crash: redelivered, stored once
        assert _seq_holes(pair.standby) == 0
    else:
        # What the standby never received is gone, although the collector acknowledged it:
        # the events acknowledged after the freeze (all but perhaps a batch committed just
        # before it). The collector's gap report shows the hole.
        assert len(lost) >= 20
        assert _seq_holes(pair.standby) == len(lost)


def _seq_holes(server: TempPostgres) -> int:
    store: Store = open_store(server.dsn("failover"))
    try:
        with store.transaction(write=False) as tx:
            return sum(hi - lo + 1 for ranges in missing_seqs(tx).values() for lo, hi in ranges)
    finally:
        store.close()


def test_a_dsn_naming_several_hosts_connects_only_to_the_writer() -> None:
    from psycopg.conninfo import conninfo_to_dict

    dsn, hosts = writer_dsn("postgresql://dw@db-a:5432,db-b:5432/deskwatch")
    params = conninfo_to_dict(dsn)
    assert hosts == 2 and params["target_session_attrs"] == "read-write"
    assert params["connect_timeout"] == "5" and params["tcp_user_timeout"] == "30000"
    chosen = "postgresql://dw@db-a,db-b/deskwatch?target_session_attrs=primary&connect_timeout=2&keepalives_idle=60"
    params = conninfo_to_dict(writer_dsn(chosen)[0])  # the operator's choices are kept
    assert params["target_session_attrs"] == "primary" and params["connect_timeout"] == "2"
    assert params["keepalives_idle"] == "60" and params["keepalives_count"] == "3"
    single, hosts = writer_dsn("postgresql://dw@db-a/deskwatch")
    assert hosts == 1 and "target_session_attrs" not in conninfo_to_dict(single)


def test_the_collector_commits_durably_even_where_the_server_does_not(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``synchronous_commit = off`` acknowledges a commit before it is on disk: a crash of the
    server alone would lose what the collector acknowledged. Its own sessions use ``on``."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {conn.info.dbname} SET synchronous_commit = off")
    caplog.set_level(logging.INFO, "deskwatch_collector")
    store = open_store(postgres_dsn)
    try:
        assert isinstance(store, PostgresStore)
        with store.transaction(write=False) as tx:
            assert tx.one("SHOW synchronous_commit") == ("on",)
    finally:
        store.close()
    said = [r.getMessage() for r in caplog.records if r.name == "deskwatch_collector.store"]
    assert any("synchronous_commit=off; the collector's sessions use 'on'" in m for m in said), said
    assert any("has no standby: acknowledged events are as safe as its disk" in m for m in said), said


def test_a_commit_that_neither_succeeds_nor_fails_is_reported_after_stall_after() -> None:
    health = IntakeHealth(stall_after=0.2)
    health.broker_connected = True
    health.commit_started(12)
    assert health.snapshot()["ok"] is True  # a commit in progress is normal
    time.sleep(0.25)
    state = health.snapshot()
    assert state["ok"] is False and state["failure"] == "commit_stalled" and state["unacknowledged_held"] == 12
    health.commit_ended()
    assert health.snapshot()["ok"] is True
