"""Tell each device what became of its findings: the retained ``reviews`` message.

The device cannot know how a supervisor reviewed a finding, whether the worker contested
it, or whether the collector still keeps its picture; ``deskwatch history`` shows the
worker exactly that. This module publishes, per device, the retained list described in
:mod:`deskwatch_contract.reviews` on ``deskwatch/v1/{site}/{device}/reviews``:

- a device is *due* when one of its findings was reviewed or contested (``review_feed.due_at``,
  set in the same transaction as the review), when it stored a new event since the last
  list, or when the last list is a day old (pictures expire);
- :class:`ReviewFeed` (a thread of the collector) publishes due lists with its own MQTT
  client, retained at QoS 1, and marks them published only after the broker's PUBACK, so
  a broker outage delays the lists, never loses them. Retained: a device that is offline
  gets the latest list when it connects. Several collectors may publish the same list;
  the broker keeps one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deskwatch_collector.console.vocab import WRONG_REASONS, reason_label
from deskwatch_collector.store import Store, Tx
from deskwatch_collector.subscriber import SubscriberSettings
from deskwatch_contract import topics
from deskwatch_contract.formats import rfc3339
from deskwatch_contract.jsonutil import dumps_bytes
from deskwatch_contract.reviews import MAX_FINDINGS, ReviewedFinding, build

logger = logging.getLogger(__name__)

DAY = 86400.0
REFRESH_SECONDS = DAY  # republish at least this often: pictures are deleted by age
BATCH = 100


def mark_due(tx: Tx, site: str, device_id: str, now: float) -> None:
    """The device's list changed (a review or a contest): publish it again soon."""
    tx.execute(
        "INSERT INTO review_feed (site, device_id, due_at) VALUES (?, ?, ?)"
        " ON CONFLICT (site, device_id) DO UPDATE SET due_at = excluded.due_at",
        (site, device_id, now),
    )


def due_devices(tx: Tx, now: float, limit: int = BATCH) -> list[tuple[str, str]]:
    rows = tx.rows(
        "SELECT d.site, d.device_id FROM devices d"
        " LEFT JOIN review_feed f ON f.site = d.site AND f.device_id = d.device_id"
        " WHERE f.published_at IS NULL OR f.due_at > f.published_at OR d.last_event_at > f.published_at"
        " OR f.published_at < ? ORDER BY d.site, d.device_id LIMIT ?",
        (now - REFRESH_SECONDS, limit),
    )
    return [(str(s), str(d)) for s, d in rows]


def findings_of(tx: Tx, site: str, device_id: str, retention_days: float, now: float) -> list[ReviewedFinding]:
    """The device's findings of the last ``retention_days``, newest first, as the collector holds them."""
    rows = tx.rows(
        "SELECT e.event_id, e.review_state, e.review_reason, e.reviewed_at, e.contested_at, e.evidence_sha256,"
        " v.state, v.captured_ts FROM events e LEFT JOIN evidence v ON v.event_id = e.event_id"
        " WHERE e.site = ? AND e.device_id = ? AND e.detected_ts >= ? ORDER BY e.detected_ts DESC, e.id DESC LIMIT ?",
        (site, device_id, now - retention_days * DAY, MAX_FINDINGS),
    )
    out = []
    kept_from = now - retention_days * DAY  # a picture past it is as good as deleted: the purge is due
    for event_id, state, reason, reviewed_at, contested_at, sha, evidence_state, captured in rows:
        kept = sha is not None and evidence_state == "verified" and captured is not None and captured >= kept_from
        out.append(
            ReviewedFinding(
                event_id=str(event_id),
                state=str(state),
                contested=contested_at is not None,
                picture="kept" if kept else ("deleted" if sha is not None else "none"),
                reason=(reason_label(reason)[:200] or None) if state == "dismissed" else None,
                wrong=(reason in WRONG_REASONS) if state == "dismissed" else None,
                reviewed_at=_time(reviewed_at),
                picture_until=_time(float(captured) + retention_days * DAY) if kept and captured is not None else None,
            )
        )
    return out


def _time(ts: Any) -> str | None:
    return rfc3339(datetime.fromtimestamp(float(ts), UTC)) if ts is not None else None


def digest(tx: Tx, site: str, device_id: str, retention_days: float, now: float) -> dict[str, Any]:
    findings = findings_of(tx, site, device_id, retention_days, now)
    return build(site, device_id, datetime.fromtimestamp(now, UTC), retention_days, findings)


def mark_published(tx: Tx, site: str, device_id: str, built_at: float) -> None:
    tx.execute(
        "INSERT INTO review_feed (site, device_id, due_at, published_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (site, device_id) DO UPDATE SET published_at = excluded.published_at",
        (site, device_id, built_at, built_at),
    )


CONN_WARN_SECONDS = 600.0  # a broker that stays away is said once in 10 minutes, not every round


def _unsupported_protocol(reason: Any) -> bool:
    """A CONNACK that refuses the protocol version: 0x84 (MQTT 5) or 1 (a 3.1.1 broker's answer)."""
    value = getattr(reason, "value", reason)
    return value in (1, 0x84) or "protocol version" in str(reason).lower()


@dataclass
class FeedStats:
    published: int = 0
    failed: int = 0


class ReviewFeed(threading.Thread):
    """Publishes due ``reviews`` lists every ``every_seconds`` (and at once when woken)."""

    def __init__(
        self,
        store: Store,
        settings: SubscriberSettings,
        retention_days: float,
        *,
        every_seconds: float = 10.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="collector-reviews", daemon=True)
        self.store = store
        self.settings = settings
        self.retention_days = retention_days
        self.every = every_seconds
        self.wall = wall
        self.stats = FeedStats()
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self._client: Any = None
        self._acks: dict[int, Any] = {}  # mid -> the PUBACK's reason code (MQTT 5 may refuse)
        self._warned_at = -1e9
        self._conn_warned_at = -1e9  # connection problems: one log line per CONN_WARN_SECONDS
        self.protocol = 5  # MQTT 5, or 4 (3.1.1) once a broker refused 5 (RabbitMQ 3.x)
        self._fallback = threading.Event()
        self._ever_connected = False
        self._drops_before_connack = 0

    def _conn_warning(self, text: str, *args: Any) -> None:
        if time.monotonic() - self._conn_warned_at >= CONN_WARN_SECONDS:
            self._conn_warned_at = time.monotonic()
            logger.warning(text + "; reviews lists wait until it is back", *args)

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if not getattr(reason, "is_failure", False):
            self._ever_connected = True
            self._drops_before_connack = 0
            logger.info("reviews feed connected to %s:%s (MQTT %s)", self.settings.host, self.settings.port,
                        "5" if self.protocol == 5 else "3.1.1")  # fmt: skip
            self.wake.set()
            return
        if self.protocol == 5 and _unsupported_protocol(reason):
            self._fallback.set()
            self.wake.set()
            return
        self._conn_warning("reviews feed: the broker %s:%s refused the connection (%s)",
                           self.settings.host, self.settings.port, reason)  # fmt: skip

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        self._conn_warning("reviews feed: cannot reach the broker %s:%s", self.settings.host, self.settings.port)

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if self.stop_event.is_set():
            return
        if self.protocol == 5 and not self._ever_connected:
            # some MQTT 3.1.1 brokers close the connection on a version 5 CONNECT instead of answering
            self._drops_before_connack += 1
            if self._drops_before_connack >= 3:
                self._fallback.set()
                self.wake.set()
                return
        self._conn_warning("reviews feed: disconnected from %s:%s (%s)", self.settings.host, self.settings.port, reason)

    def _connect(self) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        s = self.settings
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{s.client_id}-reviews",
            protocol=mqtt.MQTTv5 if self.protocol == 5 else mqtt.MQTTv311,
        )
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.tls or s.ca_file:
            client.tls_set(ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file)
        client.reconnect_delay_set(1, 60)
        client.on_publish = lambda _c, _u, mid, reason, _p: self._acks.__setitem__(mid, reason)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.connect_async(s.host, s.port, keepalive=s.keepalive)
        client.loop_start()
        return client

    def _fall_back(self) -> None:
        """The broker refused MQTT 5: start again with 3.1.1 (from this thread, not paho's)."""
        self._fallback.clear()
        logger.warning("reviews feed: %s:%s refused MQTT 5; using MQTT 3.1.1 (no PUBACK reason codes)",
                       self.settings.host, self.settings.port)  # fmt: skip
        old, self.protocol = self._client, 4
        old.disconnect()
        old.loop_stop()
        self._client = self._connect()

    def run(self) -> None:
        self._client = self._connect()
        try:
            while not self.stop_event.is_set():
                if self._fallback.is_set():
                    self._fall_back()
                try:
                    self.publish_due()
                except Exception:
                    logger.exception("publishing the reviews lists failed; retrying in %.0f s", self.every)
                self.wake.wait(self.every)
                self.wake.clear()
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.wake.set()
        self.join(timeout)

    def publish_due(self) -> int:
        """Publish every due list; returns how many the broker acknowledged."""
        if self._client is None or not self._client.is_connected():
            self._conn_warning("reviews feed: not connected to %s:%s", self.settings.host, self.settings.port)
            return 0
        now = self.wall()
        with self.store.transaction(write=False) as tx:
            due = due_devices(tx, now)
            lists = [(site, device, digest(tx, site, device, self.retention_days, now)) for site, device in due]
        done = 0
        for site, device, payload in lists:
            info = self._client.publish(
                topics.prefix(site, device) + topics.REVIEWS, dumps_bytes(payload), qos=1, retain=True
            )
            with contextlib.suppress(RuntimeError, ValueError):  # not queued: is_published() says so
                info.wait_for_publish(10)
            reason = self._acks.pop(info.mid, None)
            if not info.is_published() or (reason is not None and getattr(reason, "is_failure", False)):
                self.stats.failed += 1
                if time.monotonic() - self._warned_at > 3600:  # once an hour, not every round
                    self._warned_at = time.monotonic()
                    why = f"refused: {reason}" if info.is_published() else "no acknowledgement"
                    logger.warning(
                        "reviews list for %s/%s not stored by the broker (%s); the collector's account needs write"
                        " access to deskwatch/v1/+/+/reviews; retrying (%d failed so far)",
                        site,
                        device,
                        why,
                        self.stats.failed,
                    )
                break
            with self.store.transaction() as tx:
                mark_published(tx, site, device, now)
            done += 1
        self.stats.published += done
        if done:
            logger.info("published the reviews list of %d devices", done)
        return done
