"""Collector fixtures: stores on both backends, a running subscriber, a fleet publisher.

- ``store_factory(backend)``: an open, migrated :class:`Store` (``"sqlite"`` in tmp_path or
  ``"postgresql"`` on the session's PostgreSQL server); closed at teardown.
- ``start_collector(broker, store, **settings)``: a started :class:`Subscriber` that has its
  SUBACK; stopped at teardown.
- ``fleet_publisher(broker)``: a paho MQTT 5 client whose ``send(messages)`` publishes
  :class:`Outgoing` messages and waits for every PUBACK.
- :func:`wait_until` polls a condition against a deadline (real time: it waits for other
  processes and threads, not for a clock).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch_collector.store import Store, open_store
from deskwatch_collector.subscriber import Subscriber, SubscriberSettings
from deskwatch_dev.fleet import Outgoing


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def count(store: Store, table: str, where: str = "", params: tuple[Any, ...] = ()) -> int:
    with store.transaction(write=False) as tx:
        row = tx.one(f"SELECT COUNT(*) FROM {table} {where}", params)
    return int(row[0]) if row else 0


@pytest.fixture
def db_count() -> Callable[..., int]:
    """``db_count(store, table, where="", params=())``: rows in a table."""
    return count


@pytest.fixture
def until() -> Callable[..., bool]:
    """``until(predicate, timeout=10)``: :func:`wait_until` as a fixture."""
    return wait_until


@pytest.fixture
def store_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[str], Store]]:
    opened: list[Store] = []

    def make(backend: str = "sqlite") -> Store:
        if backend == "sqlite":
            store = open_store(str(tmp_path / f"collector-{len(opened)}.db"))
        else:
            store = open_store(request.getfixturevalue("postgres_dsn"))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def start_collector() -> Iterator[Callable[..., Subscriber]]:
    started: list[Subscriber] = []

    def start(broker: Any, store: Store, **settings: Any) -> Subscriber:
        settings.setdefault("client_id", f"collector-test-{len(started)}")
        sub = Subscriber(SubscriberSettings(host=broker.host, port=broker.port, **settings), store)
        sub.start()
        if not sub.subscribed.wait(10):
            raise TimeoutError("collector did not get its SUBACK")
        started.append(sub)
        return sub

    yield start
    for sub in started:
        sub.stop(timeout=2)


class FleetPublisher:
    def __init__(self, broker: Any) -> None:
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, messages: list[Outgoing], timeout: float = 10.0) -> None:
        infos = [self.client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, properties=m.properties)
                 for m in messages]  # fmt: skip
        for info, message in zip(infos, messages, strict=True):
            if message.qos:
                info.wait_for_publish(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def fleet_publisher() -> Iterator[Callable[[Any], FleetPublisher]]:
    made: list[FleetPublisher] = []

    def make(broker: Any) -> FleetPublisher:
        pub = FleetPublisher(broker)
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.close()


__all__ = ["FleetPublisher", "count", "wait_until"]
