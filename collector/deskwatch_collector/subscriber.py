"""MQTT 5 subscriber: shared subscriptions, batched commits, acknowledgements after commit.

paho receives on its network thread and hands each message to a queue; one writer thread
takes batches (up to ``batch_max`` messages or ``batch_wait`` seconds), validates and
stores them in a single transaction, and only after the commit sends the PUBACKs
(paho ``manual_ack``). A crash before the commit leaves the messages unacknowledged in
the broker's persistent session (``clean_start=False``, a session expiry, a stable client
id), so the broker delivers them again and ``event_id`` de-duplicates. An ack for a
message received on an earlier connection is never sent on a new one (packet ids repeat).

Status is subscribed without ``$share``: MQTT 5 never sends retained messages to shared
subscriptions, and the retained ``status`` is how a collector learns the fleet's state at
start. Every collector stores it (an idempotent upsert keyed by session).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from deskwatch_collector.ingest import IngestStats, apply, flush_scans, reconcile_pending, record_reject
from deskwatch_collector.store import Store, StoreUnavailable
from deskwatch_collector.validate import Rejected, Validator

logger = logging.getLogger(__name__)

ROOT = "deskwatch/v1/+/+/"
SHARED_KINDS = ("event", "evidence/+", "scan", "health")
RECONCILE_SECONDS = 1.0  # how often evidence stuck in "pending" beside a stored event is settled


@dataclass
class SubscriberSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    group: str = "deskwatch-collectors"
    client_id: str = field(default_factory=lambda: f"deskwatch-collector-{socket.gethostname()}")
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls: bool = False
    batch_max: int = 200
    batch_wait: float = 0.02
    receive_maximum: int = 1000
    session_expiry_seconds: int = 3600
    keepalive: int = 30


def subscriptions(group: str) -> list[tuple[str, SubscribeOptions]]:
    opts = SubscribeOptions(qos=1)
    subs = [(f"$share/{group}/{ROOT}{kind}", opts) for kind in SHARED_KINDS]
    subs.append((f"{ROOT}status", SubscribeOptions(qos=1)))
    return subs


def _device_key(item: _Inbound) -> tuple[str, str]:
    parts = item.topic.split("/", 4)
    return (parts[2], parts[3]) if len(parts) > 4 else ("", "")


@dataclass
class _Inbound:
    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    props: dict[str, str]
    received_at: float


class _RejectLog:
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


class Subscriber:
    def __init__(
        self,
        settings: SubscriberSettings,
        store: Store,
        *,
        validator: Validator | None = None,
        stats: IngestStats | None = None,
        on_stored: Callable[[list[str]], None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.validator = validator or Validator()
        self.stats = stats or IngestStats()
        self.on_stored = on_stored
        self.wall = wall
        self.inbox: queue.Queue[_Inbound] = queue.Queue()
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        self._rejects = _RejectLog()
        self._writer: threading.Thread | None = None
        self._last_connect_fail = -1e9
        self._known_devices: set[tuple[str, str]] = set()
        self.client = self._make_client()

    # -- MQTT side --------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.tls or s.ca_file:
            client.tls_set(ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        client.reconnect_delay_set(1, 10)
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_seconds
        props.ReceiveMaximum = self.settings.receive_maximum
        return props

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            logger.error("broker refused the collector: %s", rc)
            return
        self._generation += 1
        self.connected.set()
        logger.info(
            "collector connected to %s:%d as %s (session present: %s)",
            self.settings.host,
            self.settings.port,
            self.settings.client_id,
            getattr(flags, "session_present", "?"),
        )
        client.subscribe(subscriptions(self.settings.group))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        now = time.monotonic()
        if now - self._last_connect_fail > 60:
            self._last_connect_fail = now
            logger.warning("cannot reach the broker at %s:%d; retrying", self.settings.host, self.settings.port)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        failed = [str(rc) for rc in rcs if rc.is_failure]
        if failed:
            logger.error("broker refused a subscription: %s", ", ".join(failed))
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            logger.warning("collector lost the broker (%s); reconnecting", rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, str] = {}
        if msg.properties is not None and hasattr(msg.properties, "UserProperty"):
            props = dict(msg.properties.UserProperty)
        self.inbox.put(_Inbound(self._generation, msg.mid, msg.qos, msg.topic, bytes(msg.payload), props, self.wall()))

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            clean_start=False,
            properties=self._connect_properties(),
        )
        self.client.loop_start()
        self._writer = threading.Thread(target=self._run_writer, name="collector-writer", daemon=True)
        self._writer.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the batch in hand, acknowledge it, disconnect (the rest is redelivered later)."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def abort(self) -> None:
        """Drop the connection like a crash would (tests): no DISCONNECT, no further acks."""
        self._stop.set()
        self._generation += 1000
        sock = self.client.socket()
        self.client.loop_stop()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # -- writer -----------------------------------------------------------------------------
    def _next_batch(self) -> list[_Inbound]:
        try:
            first = self.inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.batch_wait
        while len(batch) < self.settings.batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self.inbox.get_nowait() if left <= 0 else self.inbox.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _run_writer(self) -> None:
        last_reconcile = time.monotonic()
        while not self._stop.is_set():
            batch = self._next_batch()
            if batch:
                self._process(batch)
            if time.monotonic() - last_reconcile >= RECONCILE_SECONDS:
                last_reconcile = time.monotonic()
                self._reconcile()

    def _reconcile(self) -> None:
        try:
            with self.store.transaction() as tx:
                verified, deleted = reconcile_pending(tx, self.wall())
        except Exception as exc:  # the next pass retries; intake must not stop for this
            logger.warning("could not settle pending evidence: %s", exc)
            return
        if verified or deleted:
            self.stats.add("evidence.reconciled", verified)
            self.stats.add("evidence.mismatch_deleted", deleted)

    def _process(self, batch: list[_Inbound]) -> None:
        delay = 0.2
        while True:
            try:
                began = time.monotonic()
                stored = self._commit(batch)
                self.stats.batch(time.monotonic() - began, len(batch))
                break
            except StoreUnavailable as exc:
                if self._stop.is_set():
                    logger.warning("stopping with %d uncommitted messages: the broker will redeliver them", len(batch))
                    return
                logger.warning("database unavailable (%s); retrying %d messages in %.1f s", exc, len(batch), delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
            except Exception:
                if len(batch) == 1:
                    logger.exception("could not store a message on %s; dropping it", batch[0].topic)
                    self.stats.add("internal_error")
                    stored = []
                    break
                for item in batch:  # find the one that fails; the others are stored alone
                    self._process([item])
                return
        self._ack(batch)
        if stored and self.on_stored is not None:
            self.on_stored(stored)

    def _commit(self, batch: list[_Inbound]) -> list[str]:
        stored_events: list[str] = []
        touched: set[tuple[str, str]] = set()
        scans: list[tuple[Any, ...]] = []
        outcomes: list[tuple[str, str]] = []
        rejected: list[tuple[str, Rejected]] = []
        with self.store.transaction() as tx:
            now = self.wall()
            # Rows of ``devices`` are locked in one global order (site, device) by every
            # collector, so two collectors sharing a PostgreSQL never deadlock on them; the
            # sort is stable, so a device's own messages keep their order.
            for item in sorted(batch, key=_device_key):
                try:
                    msg = self.validator.check(item.topic, item.payload, item.props)
                    outcome = apply(tx, msg, item.received_at, now, self._known_devices, scans)
                except Rejected as exc:
                    record_reject(tx, item.topic, exc.reason, exc.detail, len(item.payload), now)
                    rejected.append((item.topic, exc))
                    continue
                outcomes.append((msg.topic.kind, outcome))
                touched.add((msg.topic.site, msg.topic.device_id))
                if msg.topic.kind == "event" and outcome == "stored":
                    assert msg.payload is not None
                    stored_events.append(str(msg.payload["event_id"]))
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
        return stored_events

    def _ack(self, batch: list[_Inbound]) -> None:
        generation = self._generation
        for item in batch:
            if item.qos > 0 and item.generation == generation:
                self.client.ack(item.mid, item.qos)
