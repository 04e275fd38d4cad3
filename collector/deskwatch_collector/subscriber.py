"""MQTT 5 subscriber: shared subscriptions, batched commits, acknowledgements after commit.

paho receives on its network thread and hands each message to the :class:`Writer`
(:mod:`.intake`), which stores batches and calls each message's ack only after the
commit; the ack sends the PUBACK (paho ``manual_ack``). On a storage failure nothing is
acknowledged, so after ``receive_maximum`` unacknowledged messages the broker stops
sending (back-pressure). A crash before the commit leaves the messages unacknowledged in
the broker's persistent session (``clean_start=False``, a session expiry, a stable client
id), so the broker delivers them again and ``event_id`` de-duplicates. An ack for a
message received on an earlier connection is never sent on a new one (packet ids repeat).

Status is subscribed without ``$share``: MQTT 5 never sends retained messages to shared
subscriptions, and the retained ``status`` is how a collector learns the fleet's state at
start. Every collector stores it, ordered by (``since``, ``session``): an older status
arriving late is dropped, unless it comes more than 10 minutes after the stored one (then
the device's counter or clock went back and the newest arrival wins; see ``ingest._status``).
"""

from __future__ import annotations

import contextlib
import logging
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

from deskwatch_collector import MAX_RETENTION_DAYS
from deskwatch_collector.ingest import IngestStats
from deskwatch_collector.intake import Inbound, IntakeHealth, WriterFront
from deskwatch_collector.store import Store
from deskwatch_collector.validate import Validator

logger = logging.getLogger(__name__)

ROOT = "deskwatch/v1/+/+/"
SHARED_KINDS = ("event", "evidence/+", "scan", "health")


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


class Subscriber(WriterFront):
    def __init__(
        self,
        settings: SubscriberSettings,
        store: Store,
        *,
        validator: Validator | None = None,
        stats: IngestStats | None = None,
        health: IntakeHealth | None = None,
        wall: Callable[[], float] = time.time,
        retention_days: float = MAX_RETENTION_DAYS,
    ) -> None:
        super().__init__(
            settings, store, validator=validator, stats=stats, health=health, wall=wall, retention_days=retention_days
        )
        self.settings = settings
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self._generation = 0
        self._last_connect_fail = -1e9
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
        self.health.broker_connected = True
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
        self.health.broker_connected = False
        if not self.writer.stop_event.is_set():
            logger.warning("collector lost the broker (%s); reconnecting", rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, str] = {}
        if msg.properties is not None and hasattr(msg.properties, "UserProperty"):
            props = dict(msg.properties.UserProperty)
        ack = self._acker(self._generation, msg.mid, msg.qos)
        self.writer.inbox.put(Inbound(msg.topic, bytes(msg.payload), props, self.wall(), ack))

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
        self.writer.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the batch in hand, acknowledge it, disconnect (the rest is redelivered later)."""
        self.writer.stop(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def abort(self) -> None:
        """Drop the connection like a crash would (tests): no DISCONNECT, no further acks."""
        self.writer.stop_event.set()
        self._generation += 1000
        sock = self.client.socket()
        self.client.loop_stop()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # -- intake ------------------------------------------------------------------------------
    def _acker(self, generation: int, mid: int, qos: int) -> Callable[[], None]:
        def ack() -> None:
            # An ack for a message received on an earlier connection is never sent on a new one
            # (packet ids repeat); the broker redelivers that message instead.
            if qos > 0 and generation == self._generation:
                self.client.ack(mid, qos)

        return ack
