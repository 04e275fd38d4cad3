"""Intake from a RabbitMQ cluster: one durable quorum queue, consumed by every collector.

RabbitMQ's MQTT plugin has no ``$share``; it routes each MQTT publish through the
``amq.topic`` exchange with ``/`` in the topic turned into ``.`` in the routing key. A
quorum queue bound to the contract's keys is the shared subscription's equivalent: it
is replicated on three nodes (Raft), each message goes to one consumer, and an unacked
message goes back to the queue when its consumer's connection ends. The devices' QoS 1
PUBACK is sent once the queue has committed the message on a majority of nodes.

:class:`QueueConsumer` connects to the first reachable URL of its list (any node), sets
a prefetch (the in-flight window: back-pressure when the store fails, like MQTT's receive
maximum), and hands each delivery to the :class:`Writer`, whose ack is a ``basic_ack``
sent on the consumer's own thread, and only on the channel that delivered it. Status
messages arrive through the queue too (retained messages are per node in RabbitMQ; the
queue never misses one).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from deskwatch_collector import MAX_RETENTION_DAYS
from deskwatch_collector.ingest import IngestStats
from deskwatch_collector.intake import Inbound, IntakeHealth, WriterFront
from deskwatch_collector.store import Store
from deskwatch_collector.validate import Validator

logger = logging.getLogger(__name__)

ROUTING_KEYS = (
    "deskwatch.v1.*.*.event",
    "deskwatch.v1.*.*.evidence.*",
    "deskwatch.v1.*.*.scan",
    "deskwatch.v1.*.*.health",
    "deskwatch.v1.*.*.status",
)


def topic_of(routing_key: str) -> str:
    """The MQTT topic a routing key came from (the plugin maps ``/`` <-> ``.``)."""
    return routing_key.replace(".", "/")


@dataclass
class QueueSettings:
    urls: list[str]
    queue: str = "deskwatch-collectors"
    exchange: str = "amq.topic"
    prefetch: int = 1000
    declare: bool = True  # declare the quorum queue and its bindings (idempotent)
    client_name: str = "deskwatch-collector"
    batch_max: int = 200
    batch_wait: float = 0.02
    heartbeat: int = 10


def declare(channel: Any, settings: QueueSettings) -> None:
    channel.queue_declare(settings.queue, durable=True, arguments={"x-queue-type": "quorum"})
    for key in ROUTING_KEYS:
        channel.queue_bind(settings.queue, settings.exchange, routing_key=key)


class QueueConsumer(WriterFront):
    def __init__(
        self,
        settings: QueueSettings,
        store: Store,
        *,
        stats: IngestStats | None = None,
        health: IntakeHealth | None = None,
        validator: Validator | None = None,
        wall: Callable[[], float] = time.time,
        retention_days: float = MAX_RETENTION_DAYS,
    ) -> None:
        super().__init__(
            settings, store, validator=validator, stats=stats, health=health, wall=wall, retention_days=retention_days
        )
        self.settings = settings
        self.subscribed = threading.Event()
        self._generation = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.writer.start()
        self._thread = threading.Thread(target=self._run, name="collector-amqp", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.writer.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout + 5)

    def _run(self) -> None:
        index, last_warning = 0, 0.0
        while not self.writer.stop_event.is_set():
            url = self.settings.urls[index % len(self.settings.urls)]
            try:
                self._consume(url)
            except (pika.exceptions.AMQPError, OSError) as exc:
                self.health.broker_connected = False
                if time.monotonic() - last_warning > 30:
                    last_warning = time.monotonic()
                    logger.warning("queue consumer: %s unavailable (%s); trying the next node", _where(url), exc)
                index += 1
                self.writer.stop_event.wait(0.5)

    def _consume(self, url: str) -> None:
        params = pika.URLParameters(url)
        params.heartbeat = self.settings.heartbeat
        params.client_properties = {"connection_name": self.settings.client_name}
        params.connection_attempts, params.socket_timeout = 1, 5
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            if self.settings.declare:
                declare(channel, self.settings)
            channel.basic_qos(prefetch_count=self.settings.prefetch)
            self._generation += 1
            generation = self._generation

            def deliver(ch: Any, method: Any, properties: Any, body: bytes) -> None:
                ack = self._acker(connection, ch, method.delivery_tag, generation)
                self.writer.inbox.put(Inbound(topic_of(method.routing_key), body, {}, self.wall(), ack))

            channel.basic_consume(self.settings.queue, deliver, auto_ack=False)
            self.health.broker_connected = True
            self.subscribed.set()
            logger.info("queue consumer on %s, queue %s", _where(url), self.settings.queue)
            while not self.writer.stop_event.is_set():
                connection.process_data_events(time_limit=0.5)
        finally:
            self._generation += 1  # acks of this connection's deliveries are void from here on
            self.health.broker_connected = False
            if connection.is_open:
                with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                    connection.close()

    def _acker(self, connection: Any, channel: Any, tag: int, generation: int) -> Callable[[], None]:
        def ack() -> None:
            if generation != self._generation:
                return  # delivered on a connection that is gone: the queue redelivers it

            def send() -> None:
                if generation == self._generation and channel.is_open:
                    channel.basic_ack(tag)

            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.add_callback_threadsafe(send)

        return ack


def _where(url: str) -> str:
    params = pika.URLParameters(url)
    return f"{params.host}:{params.port}"
