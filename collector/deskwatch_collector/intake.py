"""The writer every intake feeds: batches, one transaction each, acknowledgements after commit.

A source (the MQTT subscriber, the RabbitMQ queue consumer) puts :class:`Inbound` messages
in the writer's inbox, each with its own ``ack``. One writer thread takes batches (up to
``batch_max`` messages or ``batch_wait`` seconds), validates and stores them in a single
transaction, and only after the commit calls the acks. The rule has no exception:

- **every storage failure** (busy, unreachable, disk full, I/O error, read-only, corrupt;
  see :class:`StoreUnavailable`) leaves the whole batch unacknowledged. The writer keeps the
  batch, retries with a backoff up to ``retry_max`` seconds on a fresh connection, and
  :class:`IntakeHealth` says why (the ``/healthz`` route and one log line a minute). The
  broker stops sending once its in-flight window (the source's receive maximum or
  prefetch) is full, so a long outage holds messages in the broker, not in memory;
- a message the schemas refuse is stored in ``rejects``, counted by reason, and
  acknowledged: retrying it would never succeed. Its raw bytes (the first 64 KiB) are kept
  for the first 200 rejects per device per day, never for a picture; the rest are counted
  only (``ingest.record_reject``);
- a message that makes the code fail although it passed validation (a bug) is isolated
  from its batch, stored the same way with reason ``internal_error`` and one log line.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from deskwatch_collector import MAX_RETENTION_DAYS
from deskwatch_collector.ingest import IngestStats, apply, flush_scans, reconcile_pending, record_reject
from deskwatch_collector.store import SCHEMA_CHECK_SECONDS, SchemaTooNew, Store, StoreUnavailable
from deskwatch_collector.validate import Rejected, Validator

logger = logging.getLogger("deskwatch_collector.intake")

RECONCILE_SECONDS = 1.0  # how often evidence stuck in "pending" beside a stored event is settled
FAILURE_LOG_SECONDS = 60.0
# A batch commits in milliseconds (p95 under 1 s at fleet load); a commit still running after
# this long is waiting on something (a synchronous standby that is gone, a lock): /healthz says so.
COMMIT_STALL_SECONDS = 10.0


@dataclass
class Inbound:
    topic: str
    payload: bytes
    props: dict[str, str]
    received_at: float
    ack: Callable[[], None]


def _device_key(item: Inbound) -> tuple[str, str]:
    parts = item.topic.split("/", 4)
    return (parts[2], parts[3]) if len(parts) > 4 else ("", "")


class IntakeHealth:
    """Whether stored messages are being acknowledged, and if not, why and since when."""

    def __init__(self, stall_after: float = COMMIT_STALL_SECONDS) -> None:
        self._lock = threading.Lock()
        self.stall_after = stall_after
        self.committing_since: float | None = None  # the batch in hand, while its transaction runs
        self.committing = 0
        self.failing_since: float | None = None
        self.kind = ""
        self.reason = ""
        self.held = 0
        self.retries = 0
        self.broker_connected = False
        # what protects a commit against a failover (Store.replication), shown as it is
        self.replication: Callable[[], str | None] = lambda: None

    def failing(self, exc: StoreUnavailable, held: int) -> bool:
        """Record a failure; True when it starts (the caller logs the first one at once)."""
        with self._lock:
            first = self.failing_since is None
            if first:
                self.failing_since = time.time()
            self.kind, self.reason, self.held = exc.kind, str(exc), held
            self.retries += 1
            return first

    def commit_started(self, held: int) -> None:
        with self._lock:
            self.committing_since, self.committing = time.time(), held

    def commit_ended(self) -> None:
        with self._lock:
            self.committing_since, self.committing = None, 0

    def recovered(self) -> float | None:
        """Clear the failure; returns how long it lasted (None when there was none)."""
        with self._lock:
            if self.failing_since is None:
                return None
            lasted = time.time() - self.failing_since
            self.failing_since, self.kind, self.reason, self.held, self.retries = None, "", "", 0, 0
            return lasted

    def snapshot(self) -> dict[str, Any]:
        state = self._state()
        replication = self.replication()
        if replication is not None:
            state["replication"] = replication
        return state

    def _state(self) -> dict[str, Any]:
        with self._lock:
            now = time.time()
            stalled = self.committing_since is not None and now - self.committing_since >= self.stall_after
            if self.failing_since is None and stalled and self.committing_since is not None:
                # Not a failure (yet): the commit neither succeeded nor failed. Nothing it holds
                # is acknowledged; a synchronous standby that went away is the usual cause.
                return {
                    "ok": False,
                    "storing": False,
                    "broker_connected": self.broker_connected,
                    "failure": "commit_stalled",
                    "failing_for_s": round(now - self.committing_since, 1),
                    "unacknowledged_held": self.committing,
                    "retries": 0,
                }
            if self.failing_since is None:
                return {"ok": self.broker_connected, "storing": True, "broker_connected": self.broker_connected}
            return {
                "ok": False,
                "storing": False,
                "broker_connected": self.broker_connected,
                # the kind only: /healthz answers anyone, and a driver's message names the
                # database's host and user (the reason is in the log, see IntakeWriter._failed)
                "failure": self.kind,
                "failing_for_s": round(now - self.failing_since, 1),
                "unacknowledged_held": self.held,
                "retries": self.retries,
            }


class RejectLog:
    """At most ``per_minute`` reject lines a minute, then one summary line."""

    def __init__(self, per_minute: int = 30) -> None:
        self.per_minute = per_minute
        self.window = 0.0
        self.logged = 0
        self.suppressed = 0

    def log(self, topic: str, exc: Rejected) -> None:
        now = time.monotonic()
        if now - self.window > 60:
            if self.suppressed:
                logger.warning("%d more rejected messages in the last minute (see the rejects table)", self.suppressed)
            self.window, self.logged, self.suppressed = now, 0, 0
        if self.logged < self.per_minute:
            self.logged += 1
            logger.warning("rejected message on %s: %s", topic, exc)
        else:
            self.suppressed += 1


class Writer:
    def __init__(
        self,
        store: Store,
        *,
        validator: Validator | None = None,
        stats: IngestStats | None = None,
        health: IntakeHealth | None = None,
        wall: Callable[[], float] = time.time,
        batch_max: int = 200,
        batch_wait: float = 0.02,
        retry_max: float = 30.0,
        retention_days: float = MAX_RETENTION_DAYS,
    ) -> None:
        self.store = store
        self.retention_days = retention_days  # a photo already older is not kept (ingest.apply)
        self.validator = validator or Validator()
        self.stats = stats or IngestStats()
        self.health = health or IntakeHealth()
        self.health.replication = lambda: store.replication
        self.wall = wall
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.retry_max = retry_max
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.stop_event = threading.Event()
        self._rejects = RejectLog()
        self._known_devices: set[tuple[str, str]] = set()
        self._thread: threading.Thread | None = None
        self._last_failure_log = 0.0
        self._schema_checked = -SCHEMA_CHECK_SECONDS  # monotonic; the first batch looks
        # why this writer stopped for good: a newer collector closed the schema to this release
        self.schema_closed: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="collector-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish (or give up) the batch in hand; what is not committed stays unacknowledged."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _next_batch(self) -> list[Inbound]:
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self.inbox.get_nowait() if left <= 0 else self.inbox.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        last_reconcile = time.monotonic()
        while not self.stop_event.is_set():
            batch = self._next_batch()
            if batch:
                self.process(batch)
            if time.monotonic() - last_reconcile >= RECONCILE_SECONDS:
                last_reconcile = time.monotonic()
                self._reconcile()

    def _reconcile(self) -> None:
        try:
            with self.store.transaction() as tx:
                verified, deleted = reconcile_pending(tx, self.wall())
        except StoreUnavailable:
            return  # the intake's own retry reports the failure; this pass runs again in a second
        except Exception as exc:  # the writer thread must outlive any one pass
            logger.warning("could not settle pending evidence (%s: %s)", type(exc).__name__, exc)
            return
        if verified or deleted:
            self.stats.add("evidence.reconciled", verified)
            self.stats.add("evidence.mismatch_deleted", deleted)

    # -- one batch ----------------------------------------------------------------------------
    def process(self, batch: list[Inbound]) -> None:
        """Store a batch and acknowledge it; on a storage failure, retry until stored or stopping."""
        delay = 0.2
        while True:
            try:
                began = time.monotonic()
                self.health.commit_started(len(batch))
                try:
                    self._commit(batch)
                finally:
                    self.health.commit_ended()
                self.stats.batch(time.monotonic() - began, len(batch))
                break
            except SchemaTooNew as exc:
                # nothing of the batch was written or acknowledged: the broker gives it to a newer
                # collector once this one has left; the process stops (cli: exit 69)
                self.schema_closed = str(exc)
                logger.error("stopping: %s", exc)
                self.stop_event.set()
                return
            except StoreUnavailable as exc:
                self._failed(exc, len(batch) + self.inbox.qsize(), delay)
                if self.stop_event.wait(delay):
                    logger.warning("stopping with %d uncommitted messages: the broker will redeliver them", len(batch))
                    return
                delay = min(delay * 2, self.retry_max)
            except Exception as exc:
                if len(batch) > 1:
                    for item in batch:  # find the message the code chokes on; the others are stored alone
                        self.process([item])
                    return
                if not self._keep_as_internal_error(batch[0], exc):
                    if self.stop_event.is_set():
                        return  # unacknowledged: the broker redelivers it
                    continue  # the store failed while keeping it: retry like any storage failure
                break
        lasted = self.health.recovered()
        if lasted is not None:
            logger.warning("storage is back after %.0f s; acknowledging what was held", lasted)
        for item in batch:
            item.ack()

    def _failed(self, exc: StoreUnavailable, held: int, delay: float) -> None:
        self.stats.add(f"store_failure.{exc.kind}")
        first = self.health.failing(exc, held)
        now = time.monotonic()
        if first or now - self._last_failure_log >= FAILURE_LOG_SECONDS:
            self._last_failure_log = now
            logger.error(
                "cannot store (%s: %s); holding %d unacknowledged messages, retrying in %.1f s",
                exc.kind,
                exc,
                held,
                delay,
            )

    def _keep_as_internal_error(self, item: Inbound, exc: Exception) -> bool:
        """Keep a message the code failed on as a reject with its raw bytes; False if that failed too."""
        logger.error("could not store a message on %s (%s: %s); kept in rejects", item.topic, type(exc).__name__, exc)
        logger.debug("the failure", exc_info=exc)
        try:
            with self.store.transaction() as tx:
                record_reject(
                    tx, item.topic, "internal_error", f"{type(exc).__name__}: {exc}", item.payload, self.wall()
                )
        except Exception as failure:
            if isinstance(failure, StoreUnavailable):
                self._failed(failure, 1 + self.inbox.qsize(), 1.0)
            else:
                logger.error("could not keep it either (%s: %s); retrying", type(failure).__name__, failure)
            self.stop_event.wait(1.0)
            return False
        self.stats.add("rejected.internal_error")
        return True

    def _commit(self, batch: list[Inbound]) -> None:
        touched: set[tuple[str, str]] = set()
        scans: list[tuple[Any, ...]] = []
        outcomes: list[tuple[str, str]] = []
        rejected: list[tuple[str, Rejected]] = []
        with self.store.transaction() as tx:
            if time.monotonic() - self._schema_checked >= SCHEMA_CHECK_SECONDS:
                self.store.check_schema(tx)  # before anything of the batch is written
                self._schema_checked = time.monotonic()
            now = self.wall()
            # Rows of ``devices`` are locked in one global order (site, device) by every
            # collector, so two collectors sharing a PostgreSQL never deadlock on them; the
            # sort is stable, so a device's own messages keep their order.
            for item in sorted(batch, key=_device_key):
                try:
                    msg = self.validator.check(item.topic, item.payload, item.props)
                    outcome = apply(
                        tx, msg, item.received_at, now, self._known_devices, scans, retention_days=self.retention_days
                    )
                except Rejected as exc:
                    record_reject(tx, item.topic, exc.reason, exc.detail, item.payload, now)
                    rejected.append((item.topic, exc))
                    continue
                outcomes.append((msg.topic.kind, outcome))
                touched.add((msg.topic.site, msg.topic.device_id))
            new_scans = flush_scans(tx, scans)
        self._known_devices.update(touched)  # committed: their devices rows exist
        for kind, outcome in outcomes:
            if outcome != "deferred":
                self.stats.add(f"{kind}.{outcome}")
        if scans:
            self.stats.add("scan.stored", new_scans)
            self.stats.add("scan.duplicate", len(scans) - new_scans)
        for topic, why in rejected:
            self.stats.add(f"rejected.{why.reason}")
            self._rejects.log(topic, why)


class BatchSettings(Protocol):
    batch_max: int
    batch_wait: float


class WriterFront:
    """What the MQTT subscriber and the AMQP consumer share: one :class:`Writer` and its
    parts under the names the collector and its tests use."""

    def __init__(
        self,
        settings: BatchSettings,
        store: Store,
        *,
        validator: Validator | None = None,
        stats: IngestStats | None = None,
        health: IntakeHealth | None = None,
        wall: Callable[[], float] = time.time,
        retention_days: float = MAX_RETENTION_DAYS,
    ) -> None:
        self.wall = wall
        self.writer = Writer(
            store,
            validator=validator,
            stats=stats,
            health=health,
            wall=wall,
            batch_max=settings.batch_max,
            batch_wait=settings.batch_wait,
            retention_days=retention_days,
        )

    @property
    def store(self) -> Store:
        return self.writer.store

    @property
    def stats(self) -> IngestStats:
        return self.writer.stats

    @property
    def health(self) -> IntakeHealth:
        return self.writer.health

    @property
    def inbox(self) -> queue.Queue[Inbound]:
        return self.writer.inbox

    @property
    def schema_closed(self) -> str | None:
        """Why the writer stopped for good (a newer collector closed the schema), or None."""
        return self.writer.schema_closed
