"""Delivery: outbox -> broker, at least once, with the device's status and command intake.

Threads (all daemon threads owned by :class:`Delivery`):

- *connection*: builds a paho client (callback API v2), connects (TLS by default),
  runs its network loop, and on any loss waits a jittered, doubling delay (up to
  ``mqtt.reconnect_max_seconds``) before the next attempt. MQTT 5 first; in
  ``protocol: auto`` a broker that does not answer an MQTT 5 CONNECT (or says
  "unsupported protocol version") is retried with 3.1.1. The client counts as
  connected only after a CONNACK with a success reason code. A connection that drops
  before it held for :attr:`Delivery.stable_after` does not end the outage: the backoff
  goes on growing, and the journal says once that the connection keeps dropping.
- *publisher*: reads the outbox in order and keeps at most ``mqtt.max_inflight``
  messages unacknowledged; PUBACKs delete rows in batches. After every (re)connect
  it starts again from the oldest queued row, so whatever was in flight when the
  link broke is sent again (same ``event_id``; ``replayed: true``).
- *commands*: validates and dispatches ``cmd/*`` and ``activity`` messages off the
  network thread, so a slow handler cannot starve keep-alives; every command is
  answered on ``cmd/result`` through the outbox.

Status: ``status`` is retained; each connection attempt takes the next persisted
``session`` number, used both in the Last Will (``offline``) and in the ``online`` /
``degraded`` message published after the CONNACK, so a consumer can tell a stale
Will from the current state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from deskwatch.delivery.outbox import EventToQueue, Outbox, QueuedMessage, is_damaged
from deskwatch.delivery.payloads import Source, result_payload, status_payload
from deskwatch.delivery.seal import Sealer
from deskwatch.domain import new_id, utcnow
from deskwatch_contract import problems, topics
from deskwatch_contract.credentials import CredentialsError, apply_credentials
from deskwatch_contract.intake import CommandHandler, CommandIntake, CommandResult, kind_for_topic
from deskwatch_contract.jsonutil import dumps_bytes
from deskwatch_contract.mqttconfig import MqttConfig
from deskwatch_contract.problems import Problem, backoff_delay, is_loopback
from deskwatch_contract.sqlite import disk_trouble

logger = logging.getLogger(__name__)

REVIEWS_KIND = "reviews"  # the collector's retained list, queued with the commands but never answered
ACK_BATCH = 64
ACK_FLUSH_SECONDS = 0.05
CAPS_EVERY_SECONDS = 60.0
# A connection that ends sooner than this after the broker accepted it is no recovery: the
# outage goes on (its backoff too, and what was said of it is not said again), and from the
# second such connection in a row the journal says the connection keeps dropping, once, instead
# of a 'connected' and a 'lost' line each round (two devices of one identity throw each other
# off about once a second). At least twice the longest backoff, so that a partner in such a
# round, reconnecting at that pace, cannot make a connection look stable.
STABLE_CONNECTION_SECONDS = 60.0
# A connection problem that lasts is said when it begins and then once in this long (with how
# long it has lasted, the attempts and what is queued), not at every attempt and not never again:
# an operator who starts `journalctl -f` during a day-long outage sees it within the hour.
STILL_SECONDS = 3600.0

FALLBACK = problems.FALLBACK


@dataclass
class _Link:
    """State of one connection attempt (one paho client)."""

    generation: int
    protocol: mqtt.MQTTProtocolVersion
    session: int
    client: mqtt.Client
    connack: ReasonCode | None = None
    connected_at: float | None = None
    stable: bool = False  # it held for the stable time (see stable_after), so an outage is over
    refused: ReasonCode | None = None
    publish_denied: set[str] = field(default_factory=set)
    receive_maximum: int | None = None  # the broker's limit on unacknowledged QoS 1 (MQTT 5 CONNACK)


class Delivery:
    """Drains ``outbox`` to the broker of ``mqtt`` as the device ``source`` names."""

    def __init__(
        self,
        mqtt_cfg: MqttConfig,
        outbox: Outbox,
        source: Source,
        *,
        version: str,
        models: dict[str, str],
        rng: random.Random | None = None,
        serial: str | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.mqtt_cfg = mqtt_cfg
        self.sealer = sealer  # set: every thumbnail is sealed to the collector before it is queued
        self.source = source
        self.version = version
        self.models = dict(models)
        self.serial = serial  # the board's serial number, in status (the technician's ticket)
        self._job_handler: Callable[[bytes], None] | None = None
        self.prefix = source.prefix
        self.outbox = outbox
        self._rng = rng or random.Random()
        self._intake = CommandIntake()
        self._reviews_handler: Callable[[bytes], None] | None = None
        # At most 256 x 4 KiB waiting; beyond that a flood is answered "busy", not buffered.
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=256)
        self._acks: queue.SimpleQueue[tuple[int, int, ReasonCode | None]] = queue.SimpleQueue()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._draining_stop = threading.Event()
        self._connected = threading.Event()
        self._attempted = threading.Event()  # the first connection attempt has concluded
        self._wake = threading.Event()
        self._link: _Link | None = None
        self._generation = 0
        self._app_reasons: list[str] = []
        self._link_problem: str | None = None
        self._protocol = mqtt.MQTTv311 if mqtt_cfg.protocol == "3.1.1" else mqtt.MQTTv5
        self._since = utcnow()
        self._progress = time.monotonic()
        self._threads: list[threading.Thread] = []
        self._sent_before: set[int] = set()
        self._drain_until = 0.0
        self._outage_started: float | None = None
        # connections in a row that ended before they were stable (see STABLE_CONNECTION_SECONDS)
        self._short_connections = 0
        self.published = 0
        self.acked = 0
        self.reconnects = 0
        self.connections = 0

    # -- public interface -----------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        if not self.mqtt_cfg.tls.enabled:
            if is_loopback(self.mqtt_cfg.host):
                logger.info("MQTT without TLS to loopback broker %s:%d", self.mqtt_cfg.host, self.mqtt_cfg.port)
            elif self.mqtt_cfg.allow_insecure:
                logger.warning(
                    "MQTT WITHOUT TLS to %s:%d (mqtt.allow_insecure): events and evidence are readable on the network",
                    self.mqtt_cfg.host,
                    self.mqtt_cfg.port,
                )
        for name, target in (
            ("mqtt-connection", self._run_connection),
            ("outbox-publisher", self._run_publisher),
            ("mqtt-commands", self._run_commands),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Give in-flight messages a moment, publish a clean ``offline`` and disconnect."""
        deadline = time.monotonic() + timeout
        self._drain_until = time.monotonic() + min(timeout / 2, 2.0)
        self._draining_stop.set()
        self._wake.set()
        for t in self._threads:
            if t.name == "outbox-publisher":
                t.join(max(0.1, min(timeout / 2, deadline - time.monotonic())))
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        self._threads = []
        self.outbox.close()

    def send_event(self, payload: dict[str, Any], evidence: bytes | None) -> str:
        """Queue one event (and its JPEG) durably; fills ``event_id`` and ``seq``. Returns the event id."""
        return self.send_scan(None, [(payload, evidence)])[0]

    def send_scan(
        self, payload: dict[str, Any] | None, events: Sequence[tuple[dict[str, Any], bytes | None]] = ()
    ) -> list[str]:
        """Queue a scan's events (with their JPEGs) and its record in one durable transaction.

        Fills each event's ``event_id`` and ``seq``; returns the event ids. A crash before
        this returns leaves none of them queued, never some.
        """
        prepared = [self._prepare_event(event, image) for event, image in events]
        queued = self.outbox.put_scan(payload, prepared, offline=not self._connected.is_set())
        for event in queued:
            logger.info(
                "event %s %s queued (seq %d)",
                event.get("type", "?"),
                event["event_id"],
                event["seq"],
                extra={"journal": {"EVENT_ID": event["event_id"], "SCAN_ID": str(event.get("scan_id", ""))}},
            )
        self._wake.set()
        return [str(event["event_id"]) for event in queued]

    def _prepare_event(self, payload: dict[str, Any], evidence: bytes | None) -> EventToQueue:
        payload = dict(payload)
        event_id = str(payload.get("event_id") or new_id())
        payload["event_id"] = event_id
        payload.setdefault("replayed", False)
        props = None
        if evidence is not None:
            digest = hashlib.sha256(evidence).hexdigest()
            given = payload.get("evidence")
            meta: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
            meta.update(sha256=digest, bytes=len(evidence))
            meta.setdefault("content_type", "image/jpeg")
            props = {"content-type": "image/jpeg", "sha256": digest, "event_id": event_id}
            if self.sealer is not None:  # what leaves this function for the disk and the broker is ciphertext
                try:
                    evidence, meta["sealed"] = self.sealer.seal(evidence)
                except Exception:  # never send it unsealed, and never lose the event over it
                    logger.exception("could not seal the evidence of event %s: sending the event without it", event_id)
                    payload.update(evidence=None, evidence_reason="seal_failed")
                    return payload, None, None
                props.update({"content-type": "application/octet-stream", "sealed-key-id": self.sealer.key_id})
            payload["evidence"] = meta
            payload["evidence_reason"] = None
        return payload, evidence, props

    def send_health(self, payload: dict[str, Any]) -> None:
        self.outbox.put("health", "health", payload, qos=0, offline=not self._connected.is_set())
        self._wake.set()

    def set_degraded(self, reason: str | Sequence[str] | None) -> None:
        """What is wrong on the device (camera, clock, enrolment): status ``degraded`` with these reasons."""
        reasons = [reason] if isinstance(reason, str) else list(reason or [])
        with self._lock:
            if reasons == self._app_reasons:
                return
            self._app_reasons = reasons
        self._publish_status()

    def set_models(self, models: dict[str, str]) -> None:
        """The models the vision stage runs now (after a model job): the status says so at once,
        the offline will from the next connection."""
        with self._lock:
            if models == self.models:
                return
            self.models = dict(models)
        self._publish_status()

    def on_job(self, handler: Callable[[bytes], None]) -> None:
        """Receive the retained signed job on ``jobs/notify`` (subscribed from the next connect)."""
        self._job_handler = handler
        link = self._link
        if link is not None and self._connected.is_set():
            link.client.subscribe(self.prefix + topics.JOBS_NOTIFY, qos=1)

    def send_job_progress(self, payload: dict[str, Any]) -> None:
        # queued like command results: durable, and evicted with them under the caps
        self.outbox.put("result", topics.JOBS_PROGRESS, payload, offline=not self._connected.is_set())
        self._wake.set()

    def on_command(self, handler: CommandHandler) -> None:
        self._intake.handler = handler

    def on_reviews(self, handler: Callable[[bytes], None]) -> None:
        """``handler(raw)`` gets each ``reviews`` message (the collector's word on recent findings)."""
        self._reviews_handler = handler

    def progress(self) -> float:
        return self._progress

    def wait_first_attempt(self, timeout: float) -> bool:
        """Block until the first connection attempt connected or failed (for READY=1)."""
        return self._attempted.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def state(self) -> str:
        return "degraded" if self.reasons() else ("online" if self.connected else "offline")

    def reasons(self) -> list[str]:
        return [r for r in (self._link_problem, *self._app_reasons) if r]

    def outbox_depth(self) -> int:
        return self.outbox.depth

    def stats(self) -> dict[str, Any]:
        link = self._link
        outbox = self.outbox.stats()
        return {
            "outbox_depth": outbox["depth"],
            "broker": self.state(),
            "outbox": outbox,
            "mqtt": {
                "connected": self.connected,
                "state": self.state(),
                "reasons": self.reasons(),
                "protocol": ("5" if link.protocol == mqtt.MQTTv5 else "3.1.1") if link and self.connected else "none",
                "session": link.session if link else 0,
                "connections": self.connections,
                "reconnects": self.reconnects,
                "published": self.published,
                "acked": self.acked,
                "commands_received": self._intake.received,
                "commands_rejected": self._intake.rejected,
            },
        }

    # -- connection -----------------------------------------------------------------------

    def _new_link(self, protocol: mqtt.MQTTProtocolVersion) -> _Link:
        m = self.mqtt_cfg
        self._generation += 1
        session = self.outbox.next_session()
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id(self.source.site, self.source.device_id),
            protocol=protocol,
            clean_session=True if protocol != mqtt.MQTTv5 else None,
            userdata=self._generation,
        )
        link = _Link(self._generation, protocol, session, client)
        client.connect_timeout = m.connect_timeout_seconds
        client.max_inflight_messages_set(m.max_inflight)
        apply_credentials(client, m)  # re-reads the password file: a fixed file heals
        will = status_payload(
            self.source,
            state="offline",
            session=session,
            version=self.version,
            models=self.models,
            since=self._since,
            serial=self.serial,
        )
        client.will_set(self.prefix + topics.STATUS, dumps_bytes(will), qos=1, retain=True)
        client.on_connect = lambda c, u, f, rc, p: self._on_connect(link, rc, p)
        client.on_disconnect = lambda c, u, f, rc, p: self._on_disconnect(link, rc)
        client.on_publish = lambda c, u, mid, rc, p: self._on_publish(link, mid, rc)
        client.on_message = lambda c, u, msg: self._on_message(msg)
        # Only the connection thread may touch the socket: without this, paho writes from the
        # publisher thread while the network loop reads, and a TLS session does not survive
        # concurrent use. With it, publish() queues and wakes the loop's select() instead.
        client.on_socket_register_write = lambda c, u, sock: None
        return link

    def _run_connection(self) -> None:
        attempt = 0
        # per problem kind said in this outage: [when first said, when last said, attempts since]
        failures_logged: dict[str, list[float]] = {}
        fell_back = False
        link: _Link | None = None
        while not self._stop.is_set():
            problem: Problem | None
            if link is not None:
                _let_go(link.client)
            link = None
            try:
                try:
                    link = self._new_link(self._protocol)
                except CredentialsError as exc:  # a person must fix a file: say which, once, and retry
                    problem = Problem("credentials", str(exc), "fix that file; the next attempt reads it again", True)
                if link is not None:
                    problem = self._connect_and_serve(link)
                self._attempted.set()
            except Exception:  # a bug here must not end delivery for good
                self._attempted.set()
                if self._stop.is_set():
                    break
                logger.exception("MQTT connection attempt failed unexpectedly; retrying in 5 s")
                self._connected.clear()
                self._stop.wait(5.0)
                continue
            if link is not None and link.connected_at is not None and link.stable:
                # a connection that held: a fresh outage starts now
                attempt = 0
                failures_logged.clear()
                fell_back = False
                self._outage_started = time.monotonic()
                if problem is not None:
                    self.reconnects += 1
            elif link is not None and link.connected_at is not None:  # it dropped soon after it was made
                self._short_connections += 1
                if self._outage_started is None:
                    self._outage_started = time.monotonic()
                if problem is not None:
                    self.reconnects += 1
            if self._stop.is_set():
                break
            if problem is None:
                continue
            kind, message, is_auth = problem.kind, problem.message, problem.needs_fixing
            short = link is not None and link.connected_at is not None and not link.stable
            if short and self._short_connections == 2:  # the round began: said once, the rounds after it at debug
                cid = client_id(self.source.site, self.source.device_id)
                remedy = (
                    problem.remedy
                    if is_auth
                    else f"a broker closes a client's connection when another connects with its client id: if "
                    f"the broker's log says 'Client {cid} already connected, closing old connection', a second "
                    "device uses this one's identity (an SD card cloned from it, or its config and certificate "
                    "copied): give that one its own device.id and certificate; else that log says why it closes"
                )
                (logger.error if is_auth else logger.warning)(
                    "the connection to broker %s:%d keeps dropping within %.0f s of being made (%d times in a "
                    "row; the last: %s): %s; reconnecting with backoff, and saying so again once a connection holds",
                    self.mqtt_cfg.host,
                    self.mqtt_cfg.port,
                    self.stable_after,
                    self._short_connections,
                    problem.detail,
                    remedy,
                    extra={"journal": {"MQTT_PROBLEM": "dropping"}},
                )
            if kind == FALLBACK and not fell_back:
                fell_back = True
                logger.info("%s", message)
                continue  # retry at once with the other protocol version (once; then with backoff)
            if self._outage_started is None:
                self._outage_started = time.monotonic()
            with self._lock:
                self._link_problem = message if is_auth else "broker unreachable"
            now = time.monotonic()
            said = failures_logged.get(kind)
            if said is None:
                failures_logged[kind] = [now, now, 1]
                (logger.error if is_auth else logger.warning)("%s", message, extra={"journal": {"MQTT_PROBLEM": kind}})
            elif now - said[1] >= STILL_SECONDS:
                said[1], said[2] = now, said[2] + 1
                (logger.error if is_auth else logger.warning)(
                    "still, for %s (%d attempts; %d messages queued): %s",
                    _duration(now - said[0]),
                    said[2],
                    self.outbox_depth(),
                    message,
                    extra={"journal": {"MQTT_PROBLEM": kind}},
                )
            else:
                said[2] += 1
                logger.debug("%s", message)
            delay = backoff_delay(
                attempt, self.mqtt_cfg.reconnect_min_seconds, self.mqtt_cfg.reconnect_max_seconds, self._rng
            )
            attempt += 1
            self._stop.wait(delay)
        self._connected.clear()

    def _connect_and_serve(self, link: _Link) -> Problem | None:
        """One connection's life. Returns why it ended, or None on a clean stop."""
        m = self.mqtt_cfg
        client = link.client
        try:
            client.connect(
                m.host,
                m.port,
                keepalive=m.keepalive_seconds,
                clean_start=True if link.protocol == mqtt.MQTTv5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            )
        except OSError as exc:  # ssl.SSLError is an OSError
            return problems.connect_exception(self.mqtt_cfg, exc)
        self._link = link
        deadline = time.monotonic() + m.connect_timeout_seconds
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            while not self._stop.is_set():
                rc = client.loop(timeout=0.1)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                if link.connack is None and time.monotonic() > deadline:
                    rc = MQTTErrorCode.MQTT_ERR_CONN_LOST
                    break
                if not link.stable and link.connected_at is not None:
                    self._check_stable(link)
            if self._stop.is_set() and link.connected_at is not None:
                self._say_goodbye(link)
                return None
        except OSError as exc:
            rc = MQTTErrorCode.MQTT_ERR_CONN_LOST
            logger.debug("network loop ended: %s", exc)
        finally:
            self._connected.clear()
            self._wake.set()
            with contextlib.suppress(Exception):  # the socket may already be gone
                client.disconnect()
        return self._why_it_ended(link, rc)

    def _why_it_ended(self, link: _Link, rc: MQTTErrorCode) -> Problem:
        fallback = problems.protocol_fallback(self.mqtt_cfg, link.protocol, link.refused, link.connack is not None)
        if fallback is not None:  # protocol auto: the other MQTT version, at once (the selftest decides alike)
            self._protocol, problem = fallback
            return problem
        if link.refused is None and link.connack is None:
            return problems.no_connack(self.mqtt_cfg)
        if link.refused is not None:
            return problems.refusal(self.mqtt_cfg, link.refused, client_id(self.source.site, self.source.device_id))
        return problems.lost(self.mqtt_cfg, getattr(rc, "name", str(rc)), self.outbox.stats()["depth"])

    @property
    def stable_after(self) -> float:
        """How long a connection must hold to end an outage: a minute, or twice the longest
        backoff (a partner reconnecting at that pace cannot make a connection look stable)."""
        return max(STABLE_CONNECTION_SECONDS, 2 * self.mqtt_cfg.reconnect_max_seconds)

    def _check_stable(self, link: _Link) -> None:
        assert link.connected_at is not None
        held = time.monotonic() - link.connected_at
        if held < self.stable_after:
            return
        link.stable = True
        if self._short_connections >= 2:
            logger.info(
                "the connection to broker %s:%d holds again (%.0f s now, after %d that dropped soon after they "
                "were made)",
                self.mqtt_cfg.host,
                self.mqtt_cfg.port,
                held,
                self._short_connections,
            )
        if self._outage_started is not None:
            logger.debug("outage over: %.0f s since it began", time.monotonic() - self._outage_started)
        self._short_connections = 0
        self._outage_started = None

    def _on_connect(self, link: _Link, rc: ReasonCode, props: Properties | None = None) -> None:
        link.connack = rc
        receive_maximum = getattr(props, "ReceiveMaximum", None) if props is not None else None
        if isinstance(receive_maximum, int) and receive_maximum > 0:
            link.receive_maximum = receive_maximum
        if rc.is_failure:
            link.refused = rc
            return
        link.connected_at = time.monotonic()
        self.connections += 1
        # in a round of connections that keep dropping (said once), each one more is debug
        said = logger.info if self._short_connections < 2 else logger.debug
        if self._outage_started is not None:
            said("broker reachable after %.1f s without it", link.connected_at - self._outage_started)
        if self._short_connections == 0:
            self._outage_started = None  # else the outage ends once a connection holds (_check_stable)
        with self._lock:
            self._link_problem = None
        for suffix in topics.COMMAND_TOPICS:
            link.client.subscribe(self.prefix + suffix, qos=1)
        if self._job_handler is not None:
            link.client.subscribe(self.prefix + topics.JOBS_NOTIFY, qos=1)
        if self._reviews_handler is not None:  # retained: the latest list arrives at every connection
            link.client.subscribe(self.prefix + topics.REVIEWS, qos=1)
        self._link = link
        self._connected.set()
        self._attempted.set()
        self._publish_status()
        depth = self.outbox.stats()["depth"]
        said(
            "connected to broker %s:%d (MQTT %s, session %d); %d queued messages to send",
            self.mqtt_cfg.host,
            self.mqtt_cfg.port,
            "5" if link.protocol == mqtt.MQTTv5 else "3.1.1",
            link.session,
            depth,
        )
        self._wake.set()

    def _on_publish(self, link: _Link, mid: int, rc: ReasonCode | None) -> None:
        self._acks.put((link.generation, mid, rc))
        self._wake.set()  # the publisher can refill the window now

    def _on_disconnect(self, link: _Link, rc: ReasonCode) -> None:
        if link is self._link:
            self._connected.clear()
            self._wake.set()

    def _publish_status(self) -> None:
        link = self._link
        if link is None or not self._connected.is_set():
            return
        payload = status_payload(
            self.source,
            state="degraded" if self._app_reasons else "online",
            session=link.session,
            version=self.version,
            models=self.models,
            since=self._since,
            reasons=list(self._app_reasons),
            serial=self.serial,
            ip=_local_address(link.client),
        )
        link.client.publish(self.prefix + topics.STATUS, dumps_bytes(payload), qos=1, retain=True)

    def _say_goodbye(self, link: _Link) -> None:
        payload = status_payload(
            self.source,
            state="offline",
            session=link.session,
            version=self.version,
            models=self.models,
            since=self._since,
            serial=self.serial,
        )
        info = link.client.publish(self.prefix + topics.STATUS, dumps_bytes(payload), qos=1, retain=True)
        deadline = time.monotonic() + 2.0
        while not info.is_published() and time.monotonic() < deadline:
            if link.client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        link.client.disconnect()
        link.client.loop(timeout=0.05)
        logger.info("disconnected from broker (status offline, session %d)", link.session)

    # -- publishing -------------------------------------------------------------------------

    def _run_publisher(self) -> None:
        last_caps = time.monotonic()
        caps_trouble: str | None = None  # why the last cap pass failed (said once a spell)
        while not self._stop.is_set():
            self._progress = time.monotonic()
            if time.monotonic() - last_caps > CAPS_EVERY_SECONDS:
                last_caps = time.monotonic()
                try:
                    self.outbox.enforce_caps()
                except (sqlite3.Error, OSError) as exc:  # the card refuses the deletes: keep publishing
                    if caps_trouble is None:
                        logger.error(
                            "outbox caps could not be applied (what is past its age stays queued): %s; tried again "
                            "every %d s, said again when it works",
                            disk_trouble(self.outbox.path.parent, exc),
                            CAPS_EVERY_SECONDS,
                        )
                    else:
                        logger.debug("outbox caps could not be applied yet: %s", exc)
                    caps_trouble = str(exc)
                except Exception:  # a bug: keep publishing what is queued
                    logger.exception("outbox caps could not be applied; retrying in %d s", CAPS_EVERY_SECONDS)
                else:
                    if caps_trouble is not None:
                        logger.info("outbox caps are applied again (they could not be: %s)", caps_trouble)
                        caps_trouble = None
            if self._draining_stop.is_set():
                break
            if not self._connected.wait(0.5):
                continue
            link = self._link
            if link is None:
                continue
            try:
                self._drain(link)
            except Exception as exc:
                if is_damaged(exc):  # a damaged page: take back what can be read, count the rest, go on
                    try:
                        self.outbox.recover(str(exc))
                        continue
                    except Exception:
                        logger.exception("the damaged outbox could not be recovered")
                logger.exception("outbox publisher failed; restarting it in 1 s")
                self._stop.wait(1.0)

    def _drain(self, link: _Link) -> None:
        """Publish from the outbox over one connection until it ends."""
        window = min(self.mqtt_cfg.max_inflight, link.receive_maximum or self.mqtt_cfg.max_inflight)
        inflight: dict[int, int] = {}  # mid -> row id
        to_delete: list[int] = []
        cursor = 0
        last_flush = time.monotonic()
        v5 = link.protocol == mqtt.MQTTv5
        while self._connected.is_set() and self._link is link and not self._stop.is_set():
            self._progress = now = time.monotonic()
            self._collect_acks(link, inflight, to_delete)
            if to_delete and (len(to_delete) >= ACK_BATCH or now - last_flush > ACK_FLUSH_SECONDS or not inflight):
                self.acked += self.outbox.ack_many(to_delete)
                self._sent_before.difference_update(to_delete)
                to_delete.clear()
                last_flush = now
            if self._draining_stop.is_set():
                if not inflight or now > self._drain_until:
                    break
            elif len(inflight) < window:
                rows = self.outbox.pending(after_id=cursor, limit=window - len(inflight))
                for row in rows:
                    info = link.client.publish(
                        self.prefix + row.topic,
                        self._render(row),
                        qos=row.qos,
                        properties=_properties(row) if v5 else None,
                    )
                    if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_QUEUE_SIZE):
                        rows = []  # the link is going away: wait below instead of spinning
                        break
                    inflight[info.mid] = row.id
                    self._sent_before.add(row.id)
                    cursor = row.id
                    self.published += 1
                if rows:
                    continue
            self._wake.wait(0.02 if inflight or to_delete else 0.5)
            self._wake.clear()
        self._collect_acks(link, inflight, to_delete)
        if to_delete:
            self.acked += self.outbox.ack_many(to_delete)
            self._sent_before.difference_update(to_delete)

    def _collect_acks(self, link: _Link, inflight: dict[int, int], to_delete: list[int]) -> None:
        while True:
            try:
                generation, mid, rc = self._acks.get_nowait()
            except queue.Empty:
                return
            if generation != link.generation:
                continue
            row_id = inflight.pop(mid, None)
            if row_id is None:
                continue
            if rc is not None and rc.is_failure:
                # The broker refused this message (MQTT 5 PUBACK, e.g. "Not authorized"): keep it
                # queued for the next connection and say what to check, once per topic kind.
                if str(rc) not in link.publish_denied:
                    link.publish_denied.add(str(rc))
                    logger.error(
                        "broker refused a publish under %s (%s): check the broker ACL allows this device to write "
                        "%s#; the message stays queued",
                        self.prefix,
                        rc,
                        self.prefix,
                    )
                continue
            to_delete.append(row_id)
            self._wake.set()

    def _render(self, row: QueuedMessage) -> bytes:
        if row.kind in ("event", "scan") and (row.replay or row.id in self._sent_before):
            payload = json.loads(row.payload)
            payload["replayed"] = True
            return dumps_bytes(payload)
        return row.payload

    # -- commands ---------------------------------------------------------------------------

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        suffix = topic[len(self.prefix) :] if topic.startswith(self.prefix) else ""
        if suffix == topics.JOBS_NOTIFY and self._job_handler is not None:
            try:
                self._job_handler(bytes(msg.payload))
            except Exception:  # a job must never take the network thread down
                logger.exception("job intake failed on a %d-byte message", len(msg.payload))
            return
        kind = REVIEWS_KIND if suffix == topics.REVIEWS else kind_for_topic(suffix)
        if msg.retain and kind != REVIEWS_KIND:
            # kept by the broker and handed over again at this (re)connect: a stale command
            # (yesterday's resume ending today's pause, a scan at every reconnect) or activity
            # report (the worker "typing" now) is answered, never applied (docs/mqtt-contract.md)
            from deskwatch_contract.intake import RETAINED_REFUSED

            self._answer(self._intake.refuse(kind, bytes(msg.payload), RETAINED_REFUSED))
            return
        try:
            self._commands.put_nowait((kind, bytes(msg.payload)))
        except queue.Full:
            if kind == REVIEWS_KIND:  # retained: the next connection brings it again
                logger.warning("reviews message dropped: too many commands queued")
                return
            self._answer(
                CommandResult(None, kind_for_topic(suffix), False, "device busy: too many commands queued, try again")
            )

    def _run_commands(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._commands.get(timeout=0.5)]
            except queue.Empty:
                continue
            while len(batch) < 64:  # a burst of commands is answered with one fsync, not one each
                try:
                    batch.append(self._commands.get_nowait())
                except queue.Empty:
                    break
            for kind, raw in batch:  # not a command: no answer on cmd/result
                if kind == REVIEWS_KIND and self._reviews_handler is not None:
                    try:
                        self._reviews_handler(raw)
                    except Exception:
                        logger.exception("could not take the collector's reviews message")
            commands = [(kind, raw) for kind, raw in batch if kind != REVIEWS_KIND]
            if commands:
                self._answer(*[self._intake.handle(kind, raw) for kind, raw in commands])

    def _answer(self, *results: CommandResult) -> None:
        payloads = [result_payload(r.request_id, r.kind, r.ok, r.error) for r in results]
        try:
            self.outbox.put_many("result", topics.CMD_RESULT, payloads, offline=not self._connected.is_set())
            self._wake.set()
            return
        except (sqlite3.Error, OSError) as exc:  # a full card, or one turned read-only: the command was applied
            why = disk_trouble(self.outbox.path.parent, exc)
        except Exception as exc:
            logger.exception("could not queue the results of %d commands", len(results))
            why = f"{type(exc).__name__}: {exc}"
        link = self._link
        if link is None or not self._connected.is_set():
            logger.error(
                "could not queue the results of %d command(s): %s; not connected now, so they go unanswered",
                len(results),
                why,
            )
            return
        for payload in payloads:  # the sender still learns what became of its command
            link.client.publish(self.prefix + topics.CMD_RESULT, dumps_bytes(payload), qos=1)
        logger.error(
            "could not queue the results of %d command(s): %s; sent over the connection instead (not kept for a "
            "resend if it drops)",
            len(results),
            why,
        )


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 05 min``: how long a problem has lasted, for the journal."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _properties(row: QueuedMessage) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    if row.kind == "evidence":
        props.ContentType = (row.props or {}).get("content-type", "image/jpeg")
    else:
        props.ContentType = "application/json"
        props.PayloadFormatIndicator = 1
    if row.props:
        props.UserProperty = list(row.props.items())
    return props


def _local_address(client: mqtt.Client) -> str | None:
    """The device's own IP on the connection to the broker: the address to reach it by."""
    try:
        sock: Any = client.socket()
        return str(sock.getsockname()[0]) if sock is not None else None
    except (OSError, AttributeError):
        return None


def client_id(site: str, device_id: str) -> str:
    """The device's MQTT client id: ``{site}/{device_id}``, as its certificate's CN. Device ids are
    unique within a site only, and a broker closes a client's connection when another one connects
    with its client id: two desks of one id in two sites took turns throwing each other off."""
    return f"{site}/{device_id}"


def evidence_digest(jpeg: bytes) -> str:
    return hashlib.sha256(jpeg).hexdigest()


__all__ = ["Delivery", "backoff_delay", "client_id", "evidence_digest", "is_loopback"]


def _let_go(client: mqtt.Client) -> None:
    """Close what a finished connection's client still holds: its socket pair (two file
    descriptors) is closed only when the client is collected, and the client, its callbacks and
    its link refer to each other, so that waits for Python's cycle collector; in a daemon its
    oldest generation can go uncollected for hours, through many reconnects. Called before the
    next connection is made, after the backoff, when nothing publishes on this client any more;
    ``reinitialise`` also drops the callbacks, and with them the cycle."""
    with contextlib.suppress(Exception):  # a client that cannot be reset is collected later all the same
        client.reinitialise()
