"""The collector tells each device what became of its findings (the retained ``reviews``
list), and 'deskwatch history' on the device shows it: review, contest, picture kept."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deskwatch_collector.auth import User
from deskwatch_collector.console import review, reviewfeed
from deskwatch_collector.store import Store
from deskwatch_collector.subscriber import SubscriberSettings
from tests.support.console import Desk, store_messages
from tests.support.mosquitto import Broker, device_config

SUP = User("alice", "supervisor", ("acme",), None)


def test_the_list_says_review_contest_and_picture_and_who_is_due(console_store: Callable[[str], Store]) -> None:
    store = console_store("sqlite")
    now = datetime.now(UTC)
    desk, other = Desk("acme", "desk-a", "w-1"), Desk("acme", "desk-b", "w-2")
    msgs = desk.finding("phone_use", now - timedelta(hours=2), photo="phone_01.jpg")
    msgs += desk.finding("idle_input", now - timedelta(hours=1))
    msgs += desk.finding("eating", now - timedelta(days=30))  # older than the retention: not listed
    msgs += other.finding("eating", now - timedelta(hours=3))
    store_messages(store, msgs, now.timestamp())
    phone, idle = desk.sent[0]["event_id"], desk.sent[1]["event_id"]
    t = now.timestamp()
    with store.transaction() as tx:
        assert reviewfeed.due_devices(tx, t) == [("acme", "desk-a"), ("acme", "desk-b")]  # never published
        for site, device in reviewfeed.due_devices(tx, t):
            reviewfeed.mark_published(tx, site, device, t)
        assert reviewfeed.due_devices(tx, t + 1) == []
        review.review(tx, SUP, phone, "dismiss", "misread_object", "", t + 5)
        review.contest(tx, User("w-1", "worker", ("acme",), "w-1"), phone, "calculator", t + 6)
        assert reviewfeed.due_devices(tx, t + 7) == [("acme", "desk-a")]
        payload = reviewfeed.digest(tx, "acme", "desk-a", 20, t + 7)
        reviewfeed.mark_published(tx, "acme", "desk-a", t + 7)
        assert reviewfeed.due_devices(tx, t + 8) == []
        assert reviewfeed.due_devices(tx, t + 7 + reviewfeed.REFRESH_SECONDS + 1) != []  # daily refresh
    by_id = {f["event_id"]: f for f in payload["findings"]}
    assert list(by_id) == [idle, phone]  # newest first; the 30-day-old one is past the retention
    assert by_id[phone]["state"] == "dismissed" and by_id[phone]["wrong"] is True
    assert by_id[phone]["reason"] == "Object misread (e.g. a calculator as a phone)" and by_id[phone]["contested"]
    assert by_id[phone]["picture"] == "kept" and by_id[phone]["picture_until"] > payload["at"]
    assert by_id[idle] == {"event_id": idle, "state": "open", "reason": None, "wrong": None, "reviewed_at": None,
                           "contested": False, "picture": "none", "picture_until": None}  # fmt: skip
    store_messages(store, other.finding("phone_use", now), t + 9)  # a new event makes its device due
    with store.transaction(write=False) as tx:
        assert ("acme", "desk-b") in reviewfeed.due_devices(tx, t + 10)
    # A device clock two days ahead: its finding is still listed 20.5 days on, but the picture
    # (counted from its arrival) is past the retention: deleted, not "kept" until a time gone by.
    ahead = Desk("acme", "desk-c", "w-3")
    store_messages(store, ahead.finding("phone_use", now + timedelta(days=2), photo="phone_01.jpg"), t)
    with store.transaction(write=False) as tx:
        later = reviewfeed.digest(tx, "acme", "desk-c", 20, t + 20.5 * 86400)
    assert [(f["picture"], f["picture_until"]) for f in later["findings"]] == [("deleted", None)]


@pytest.mark.broker
def test_device_history_shows_the_supervisors_decision(console_store: Callable[[str], Store], mosquitto: Broker,
                                                       tmp_path: Path, capsys: Any) -> None:  # fmt: skip
    from deskwatch.app import build_delivery
    from deskwatch.audit import AuditLog
    from deskwatch.cli import main
    from deskwatch.domain import Finding, ScanRecord, SentFinding
    from deskwatch_contract.reviews import parse

    store = console_store("sqlite")
    now = datetime.now(UTC)
    desk = Desk("acme", "desk-a", "w-1")
    store_messages(store, desk.finding("phone_use", now - timedelta(minutes=5), photo="phone_01.jpg"), now.timestamp())
    event = desk.sent[0]
    # The appliance's own record of that finding, as its scanner wrote it.
    cfg = device_config(tmp_path / "state", mosquitto)
    audit = AuditLog.for_state_dir(cfg.state_dir)
    record = ScanRecord(event["scan_id"], "schedule", now - timedelta(minutes=5), now, frames=5,
                        findings=[Finding("phone_use", 0.8, 2, detail="phone at the ear")], persons=1)  # fmt: skip
    record.sent = [SentFinding(event["event_id"], event["evidence"]["bytes"], None)]
    audit.record_scan(record)
    with store.transaction() as tx:
        review.review(tx, SUP, event["event_id"], "acknowledge", None, "seen on the picture", now.timestamp())
    feed = reviewfeed.ReviewFeed(store, SubscriberSettings(host=mosquitto.host, port=mosquitto.port, client_id="c1"),
                                 20, every_seconds=0.2)  # fmt: skip
    feed.start()
    delivery = build_delivery(cfg, version="1.0", models={})
    delivery.on_reviews(lambda raw: audit.save_collector_view(parse(raw, "acme", "desk-a")))
    delivery.start()
    try:
        deadline = time.monotonic() + 15
        while not audit.collector_view()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert audit.collector_view()[0][event["event_id"]].state == "acknowledged"
    finally:
        delivery.stop(3)
        feed.stop()
        audit.close()
    assert feed.stats.published >= 1 and feed.stats.failed == 0
    config = tmp_path / "device.yaml"
    config.write_text(
        f"device: {{id: desk-a, site: acme, worker_id: w-1}}\nstate_dir: {tmp_path / 'state'}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, tls: {{enabled: false}}}}\n"
    )
    assert main(["history", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "picture sent (" in out and "upheld by your supervisor" in out
    assert "the collector keeps the picture until" in out


@pytest.mark.broker
def test_a_list_the_broker_refuses_stays_due_and_is_logged_once(console_store: Callable[[str], Store],
                                                                 make_broker: Any, caplog: Any) -> None:  # fmt: skip
    store = console_store("sqlite")
    store_messages(store, Desk("acme", "desk-a", "w-1").finding("eating", datetime.now(UTC)), time.time())
    broker = make_broker(acl="topic read deskwatch/#\n")  # this account may not publish the lists
    feed = reviewfeed.ReviewFeed(store, SubscriberSettings(host=broker.host, port=broker.port, client_id="c2"), 20)
    feed._client = feed._connect()
    try:
        deadline = time.monotonic() + 10
        while not feed._client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(3):
            assert feed.publish_due() == 0
    finally:
        feed._client.disconnect()
        feed._client.loop_stop()
    assert feed.stats.failed == 3 and feed.stats.published == 0
    warnings = [r for r in caplog.records if "not stored by the broker" in r.getMessage()]
    assert len(warnings) == 1 and "Not authorized" in warnings[0].getMessage()
    with store.transaction(write=False) as tx:
        assert reviewfeed.due_devices(tx, time.time()) == [("acme", "desk-a")]  # still due: tried again later


class Mqtt311Only:
    """A broker that speaks MQTT 3.1.1 only, as RabbitMQ 3.x's MQTT plugin does: a version 5
    CONNECT gets CONNACK 1 (unacceptable protocol version); 3.1.1 publishes are acknowledged."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.levels: list[int] = []
        self.published: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _packet(conn: socket.socket) -> tuple[int, bytes]:
        head = conn.recv(1)
        if not head:
            raise ConnectionError
        length, shift = 0, 0
        while True:
            byte = conn.recv(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        body = b""
        while len(body) < length:
            chunk = conn.recv(length - len(body))
            if not chunk:
                raise ConnectionError
            body += chunk
        return head[0], body

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ConnectionError, IndexError):
            kind, body = self._packet(conn)
            level = body[6]  # after the protocol name "MQTT" (2-byte length + 4)
            self.levels.append(level)
            if kind >> 4 != 1 or level != 4:
                conn.sendall(b"\x20\x02\x00\x01")
                return
            conn.sendall(b"\x20\x02\x00\x00")
            while True:
                kind, body = self._packet(conn)
                if kind >> 4 == 3:  # PUBLISH
                    n = int.from_bytes(body[:2], "big")
                    self.published.append(body[2 : 2 + n].decode())
                    if (kind >> 1) & 3:
                        conn.sendall(b"\x40\x02" + body[2 + n : 4 + n])
                elif kind >> 4 == 12:  # PINGREQ
                    conn.sendall(b"\xd0\x00")
                elif kind >> 4 == 14:  # DISCONNECT
                    return

    def close(self) -> None:
        self.server.close()


def test_a_broker_without_mqtt5_gets_the_lists_over_3_1_1(
    console_store: Callable[[str], Store], caplog: pytest.LogCaptureFixture
) -> None:
    store = console_store("sqlite")
    store_messages(store, Desk("acme", "desk-a", "w-1").finding("eating", datetime.now(UTC)), time.time())
    broker = Mqtt311Only()
    feed = reviewfeed.ReviewFeed(store, SubscriberSettings(port=broker.port, client_id="c3"), 20, every_seconds=0.1)
    caplog.set_level(logging.INFO, "deskwatch_collector.console.reviewfeed")
    feed.start()
    try:
        deadline = time.monotonic() + 15
        while not broker.published and time.monotonic() < deadline:
            time.sleep(0.05)
        assert broker.published == ["deskwatch/v1/acme/desk-a/reviews"], broker.levels
        assert broker.levels[0] == 5 and broker.levels[-1] == 4 and feed.protocol == 4
        assert "refused MQTT 5; using MQTT 3.1.1" in caplog.text
    finally:
        feed.stop()
        broker.close()


def test_an_unreachable_broker_is_logged_once_not_every_round(
    console_store: Callable[[str], Store], caplog: pytest.LogCaptureFixture
) -> None:
    store = console_store("sqlite")
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # nothing listens once closed
    feed = reviewfeed.ReviewFeed(store, SubscriberSettings(port=port, client_id="c4"), 20)
    feed._client = feed._connect()
    try:
        with caplog.at_level(logging.WARNING, "deskwatch_collector.console.reviewfeed"):
            for _ in range(5):
                assert feed.publish_due() == 0
                time.sleep(0.3)
        said = [r.getMessage() for r in caplog.records if "reviews feed" in r.getMessage()]
        assert len(said) == 1 and str(port) in said[0], said
    finally:
        feed._client.loop_stop()
