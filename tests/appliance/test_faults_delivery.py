"""Fault tests against a real Mosquitto: outages, restarts under load, refused logins, caps.

These drive ``Delivery`` directly with a producer loop standing in for the scan loop
(the whole-daemon SIGKILL variant is in ``test_faults_daemon.py``). A consumer with a
persistent session on a persistent broker records everything that arrives, so a
message counts as lost only if the device never delivered it.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from deskwatch.app import build_delivery, payload_source
from deskwatch.delivery.client import Delivery
from deskwatch.delivery.payloads import event_payload, health_payload, scan_payload
from deskwatch.domain import Box, Detection, Finding, ScanRecord
from deskwatch_contract import load_schema
from tests.support.faultfs import FaultFs
from tests.support.mosquitto import Broker, Collector, MakeBroker, device_config

pytestmark = [pytest.mark.broker, pytest.mark.slow]
PREFIX = "deskwatch/v1/acme/desk-a/"
EVENT_SCHEMA = jsonschema.Draft202012Validator(load_schema("event"))


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Thumb:
    def __init__(self, jpeg: bytes) -> None:
        self.jpeg, self.width, self.height = jpeg, 160, 120
        self.sha256 = hashlib.sha256(jpeg).hexdigest()


class Producer:
    """Stands in for the scan loop: one finding per call, evidence optional."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.source = delivery.source
        self.sent: list[str] = []
        self.n = 0

    def event(self, evidence: bytes | None = None) -> str:
        self.n += 1
        now = datetime.now(UTC)
        record = ScanRecord(f"scan-{self.n}", "schedule", now, now, frames=5)
        finding = Finding("phone_use", 0.9, 0, [Detection("cell phone", 0.9, Box(0.1, 0.1, 0.2, 0.2))])
        ev = Thumb(evidence) if evidence is not None else None
        payload = event_payload(self.source, finding, record, ev, None if ev else "none")
        event_id = self.delivery.send_event(payload, evidence)
        self.sent.append(event_id)
        return event_id

    def scan(self) -> None:
        now = datetime.now(UTC)
        self.delivery.send_scan(scan_payload(self.source, ScanRecord(f"scan-{self.n}", "schedule", now, now)))

    def health(self) -> None:
        self.delivery.send_health(health_payload(self.source, self.delivery.stats()))


def received_events(seen: Collector) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for m in seen.on("/event"):
        payload = json.loads(m.payload)
        EVENT_SCHEMA.validate(payload)
        out.setdefault(payload["event_id"], []).append(payload)
    return out


def assert_all_delivered(seen: Collector, sent: list[str], timeout: float = 20.0) -> dict[str, list[dict[str, Any]]]:
    want = set(sent)
    assert seen.wait_for(lambda ms: want <= set(received_events_ids(ms)), timeout), (
        f"missing {len(want - set(received_events(seen)))} of {len(want)} events"
    )
    got = received_events(seen)
    for copies in got.values():  # a duplicate is the same event again, never a different one
        assert len({(c["seq"], c["scan_id"], c["type"]) for c in copies}) == 1
    seqs = sorted(c[0]["seq"] for c in got.values())
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap
    return got


def received_events_ids(messages: list[Any]) -> list[str]:
    return [json.loads(m.payload)["event_id"] for m in messages if m.topic.endswith("/event")]


@pytest.fixture
def persistent_broker(make_broker: MakeBroker) -> Broker:
    return make_broker(persistent=True)


def test_1_outage_while_producing_200_events_loses_nothing(tmp_path: Path, persistent_broker: Broker) -> None:
    broker = persistent_broker
    seen = Collector(broker, PREFIX + "#", persistent_session=True)
    delivery = build_delivery(device_config(tmp_path, broker), version="t", models={})
    delivery.start()
    producer = Producer(delivery)
    try:
        assert wait_until(lambda: delivery.connected)
        for _ in range(20):
            producer.event()
        broker.stop()
        assert wait_until(lambda: not delivery.connected)
        outage = [producer.event(b"\xff\xd8" + b"j" * 2000 if i % 10 == 0 else None) for i in range(200)]
        assert delivery.stats()["outbox"]["by_kind"]["event"] >= 200
        assert wait_until(lambda: delivery.state() == "degraded")  # broker unreachable
        broker.start()
        got = assert_all_delivered(seen, producer.sent)
        assert all(any(c["replayed"] for c in got[i]) for i in outage)  # flagged as sent from the outbox
        assert seen.wait_for(lambda ms: len([m for m in ms if "/evidence/" in m.topic]) >= 20)
        assert wait_until(lambda: delivery.stats()["outbox"]["depth"] == 0)
        assert delivery.state() == "online"
    finally:
        delivery.stop(3)
        seen.close()


def test_3_ten_broker_restarts_under_load_no_loss_no_stuck_client(tmp_path: Path, persistent_broker: Broker) -> None:
    broker = persistent_broker
    seen = Collector(broker, PREFIX + "#", persistent_session=True)
    delivery = build_delivery(device_config(tmp_path, broker), version="t", models={})
    delivery.start()
    producer = Producer(delivery)
    done = threading.Event()

    def produce() -> None:
        while not done.is_set():
            producer.event()
            time.sleep(0.01)

    thread = threading.Thread(target=produce)
    try:
        assert wait_until(lambda: delivery.connected)
        thread.start()
        for _ in range(10):
            time.sleep(0.3)
            broker.restart()
            assert wait_until(lambda: delivery.connected, 10), "client did not come back after a broker restart"
        deadline = time.monotonic() + 30
        while len(producer.sent) <= 200 and time.monotonic() < deadline:  # a slow disk's fsync queues fewer a second
            time.sleep(0.1)
        done.set()
        thread.join()
        assert len(producer.sent) > 200
        assert_all_delivered(seen, producer.sent)
        assert delivery.stats()["mqtt"]["reconnects"] >= 10
        assert wait_until(lambda: delivery.stats()["outbox"]["depth"] == 0)
    finally:
        done.set()
        delivery.stop(3)
        seen.close()


def test_5_outbox_cap_evicts_in_order_counts_in_health_and_keeps_events(
    tmp_path: Path, persistent_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    broker = persistent_broker
    seen = Collector(broker, PREFIX + "#", persistent_session=True)
    cfg = device_config(tmp_path, broker)
    cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, max_bytes=256 * 1024, max_messages=400))
    delivery = build_delivery(cfg, version="t", models={})
    producer = Producer(delivery)
    broker.stop()  # the long outage: the device starts without a broker
    delivery.start()
    try:
        with caplog.at_level(logging.WARNING, logger="deskwatch.delivery.outbox"):
            for i in range(120):
                producer.event(b"\xff\xd8" + bytes([i]) * 20_000)  # 20 KB evidence each
                producer.scan()
                if i % 2 == 0:
                    producer.health()
        stats = delivery.stats()["outbox"]
        assert stats["bytes"] <= 256 * 1024 and stats["depth"] <= 400
        ev = stats["evicted"]
        assert ev["evidence"] > 100 and ev["event"] == 0  # images went first, events survived
        assert stats["by_kind"]["event"] == 120
        assert any("outbox cap reached" in r.getMessage() for r in caplog.records)
        health = health_payload(payload_source(cfg), delivery.stats())
        jsonschema.validate(health, load_schema("health"))
        assert health["outbox"]["evicted"]["evidence"] == ev["evidence"]
        broker.start()
        got = assert_all_delivered(seen, producer.sent)
        evicted_events = [c[0] for c in got.values() if c[0]["evidence"] is None]
        assert evicted_events and all(e["evidence_reason"] == "evicted" for e in evicted_events)
        # The evidence that survived matches what its event promises.
        for m in seen.on("/evidence/")[:5]:
            event_id = m.topic.rsplit("/", 1)[1]
            assert got[event_id][0]["evidence"]["bytes"] == len(m.payload)
    finally:
        delivery.stop(3)
        seen.close()


# -- 4: refused logins: one clear line, degraded, recovery when fixed ---------------------


def _single_error_line(caplog: pytest.LogCaptureFixture, needle: str, attempts: int = 3) -> str:
    """After at least ``attempts`` failed attempts (repeats are logged at DEBUG), exactly one ERROR line."""
    assert wait_until(lambda: sum(needle in r.getMessage() for r in caplog.records) >= attempts, 20), (
        f"fewer than {attempts} attempts logged"
    )
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and needle in r.getMessage()]
    assert len(lines) == 1, lines  # one line per problem, not one per retry
    return lines[0]


def test_4a_wrong_password_is_named_and_heals_when_the_file_is_fixed(
    tmp_path: Path, make_broker: MakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(tls=True, passwords={"desk-a": "secret-a"})
    pw = tmp_path / "pw"
    pw.write_text("wrong\n")
    pw.chmod(0o600)
    cfg = device_config(tmp_path / "state", broker, mqtt_extra=f"  username: desk-a\n  password_file: {pw}")
    delivery = build_delivery(cfg, version="t", models={})
    with caplog.at_level(logging.DEBUG, logger="deskwatch.delivery.client"):
        delivery.start()
        try:
            assert wait_until(
                lambda: delivery.stats()["mqtt"]["reasons"] != [] and delivery.stats()["mqtt"]["connections"] == 0
            )
            line = _single_error_line(caplog, "refused this device")
            assert "mqtt.username" in line and "mqtt.password_file" in line
            assert delivery.state() == "degraded" and not delivery.connected
            pw.write_text("secret-a\n")
            assert wait_until(lambda: delivery.connected, 10)
            assert delivery.state() == "online"
        finally:
            delivery.stop(2)


def test_4b_wrong_ca_is_named_and_heals_when_the_ca_file_is_fixed(
    tmp_path: Path, make_broker: MakeBroker, pki: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(tls=True)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki.other_ca().read_bytes())
    cfg = device_config(tmp_path / "state", broker, tls=f"enabled: true\n    ca_file: {ca}")
    delivery = build_delivery(cfg, version="t", models={})
    with caplog.at_level(logging.DEBUG, logger="deskwatch.delivery.client"):
        delivery.start()
        try:
            assert wait_until(lambda: delivery.state() == "degraded")
            line = _single_error_line(caplog, "TLS")
            assert "mqtt.tls.ca_file" in line and "not accepted" in line
            ca.write_bytes(pki.ca_crt.read_bytes())
            assert wait_until(lambda: delivery.connected, 10)
            assert delivery.state() == "online"
        finally:
            delivery.stop(2)


def test_4c_refused_client_id_is_named_and_heals_when_the_broker_allows_it(
    tmp_path: Path, make_broker: MakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(extra="clientid_prefixes fleet-")
    delivery = build_delivery(device_config(tmp_path, broker), version="t", models={})
    with caplog.at_level(logging.DEBUG, logger="deskwatch.delivery.client"):
        delivery.start()
        try:
            assert wait_until(lambda: delivery.state() == "degraded")
            line = _single_error_line(caplog, "client id")
            assert "desk-a" in line and "device.id" in line
            producer = Producer(delivery)
            producer.event()  # still queued durably while refused
            broker.stop()
            broker.conf.write_text(broker.conf.read_text().replace("clientid_prefixes fleet-", ""))
            broker.start()
            assert wait_until(lambda: delivery.connected, 10)
            assert wait_until(lambda: delivery.stats()["outbox"]["depth"] == 0)
        finally:
            delivery.stop(2)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_disk_that_cannot_take_the_session_number_does_not_end_delivery(
    fault: str, fault_fs: FaultFs, persistent_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Each connection attempt writes down the next session number first. On a full disk, or
    one a failing SD card turned read-only, that write failed and the exception ended the
    connection thread: after the next broker restart the device never came back, while the
    daemon ran on (what was queued stayed queued, the central side saw the device offline).
    It now connects with the number kept in memory, says what is wrong with the disk, and
    writes the numbers down again once the disk takes them."""
    broker = persistent_broker
    state = (fault_fs.tmpfs(4) if fault == "full" else fault_fs.ext4_on_tmpfs()) / "state"
    seen = Collector(broker, PREFIX + "#", persistent_session=True)
    delivery = build_delivery(device_config(state, broker), version="t", models={})
    delivery.start()
    producer = Producer(delivery)
    try:
        assert wait_until(lambda: delivery.connected)
        producer.event()
        assert wait_until(lambda: delivery.stats()["outbox"]["depth"] == 0)
        first = delivery.stats()["mqtt"]["session"]
        if fault == "full":
            fault_fs.fill()
        else:
            fault_fs.force_read_only()
        for _ in range(2):  # the broker restarts (twice: the connection thread is still there the second time)
            broker.stop()
            assert wait_until(lambda: not delivery.connected)
            broker.start()
            assert wait_until(lambda: delivery.connected), "delivery never came back after a broker restart"

        def sessions() -> list[int]:
            return [json.loads(m.payload)["session"] for m in seen.on("status") if b'"offline"' not in m.payload]

        # the status follows the CONNACK: wait for it; each attempt still took a higher number
        current = delivery.stats()["mqtt"]["session"]
        assert seen.wait_for(lambda ms: current in sessions()), sessions()
        assert current >= first + 2 and sessions() == sorted(sessions())
        said = [r.getMessage() for r in caplog.records if "session number" in r.getMessage()]
        assert len(said) == 1, said  # once, not at every attempt
        assert ("full" if fault == "full" else "read-only") in said[0]
        if fault == "full":  # space comes back: the numbers are written down again, above those used meanwhile
            fault_fs.free()
            broker.stop()
            assert wait_until(lambda: not delivery.connected)
            broker.start()
            assert wait_until(lambda: delivery.connected)
            assert delivery.stats()["mqtt"]["session"] > current
            assert delivery.outbox.counters.session == delivery.stats()["mqtt"]["session"]
    finally:
        delivery.stop(3)
        seen.close()


def test_a_read_only_disk_does_not_make_the_publisher_send_the_queue_again_and_again(
    fault_fs: FaultFs, make_broker: MakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Events queued during an outage; the card turns read-only (a failing SD card); the broker
    comes back. Deleting what the broker acknowledged failed, the publisher logged a traceback
    and started again from the oldest row: the whole queue went out again every second (each
    event ~20 times in 20 s, images too) for as long as the card stayed so. Delivered messages
    are now kept as delivered in memory and sent once, with one line naming the disk's trouble."""
    broker = make_broker(start=False)
    state = fault_fs.ext4_on_tmpfs() / "state"
    delivery = build_delivery(device_config(state, broker), version="t", models={})
    producer = Producer(delivery)
    for i in range(30):
        producer.event(b"\xff\xd8" + b"j" * 2000 if i % 10 == 0 else None)
    fault_fs.force_read_only()
    broker.start()
    seen = Collector(broker, PREFIX + "#")
    delivery.start()
    try:
        assert_all_delivered(seen, producer.sent)
        time.sleep(4)  # the publisher's old restart interval was 1 s
        copies = collections.Counter(json.loads(m.payload)["event_id"] for m in seen.on("/event"))
        assert max(copies.values()) == 1, copies.most_common(1)
        assert len(seen.on("/evidence/" + producer.sent[0])) == 1
        assert delivery.connected and delivery.stats()["mqtt"]["acked"] >= 33
        said = [r for r in caplog.records if "could not delete" in r.getMessage()]
        assert len(said) == 1 and "read-only" in said[0].getMessage() and said[0].exc_info is None
        assert not [r for r in caplog.records if "publisher failed" in r.getMessage()]
    finally:
        delivery.stop(3)
        seen.close()


def test_a_command_is_answered_when_the_card_turned_read_only(
    fault_fs: FaultFs, make_broker: MakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A supervisor's cmd/resume arrives while the card is read-only (a failing SD card): the
    command was applied, but its answer could not be queued, so none was ever sent (the console
    waited for it) and the journal had a traceback. The answer now goes straight over the
    connection, with a line saying why it was not kept."""
    broker = make_broker()
    state = fault_fs.ext4_on_tmpfs() / "state"
    seen = Collector(broker, PREFIX + "#")
    delivery = build_delivery(device_config(state, broker), version="t", models={})
    calls: list[str] = []
    delivery.on_command(lambda kind, body: calls.append(kind))
    delivery.start()
    try:
        assert wait_until(lambda: delivery.connected)
        assert seen.wait_for(lambda ms: any(m.topic.endswith("/status") for m in ms))
        fault_fs.force_read_only()
        body = {"schema": "deskwatch.cmd.resume/1", "request_id": "r-1"}
        seen.client.publish(PREFIX + "cmd/resume", json.dumps(body), qos=1)
        assert seen.wait_for(lambda ms: any(m.topic.endswith("cmd/result") for m in ms)), "never answered"
        (answer,) = [json.loads(m.payload) for m in seen.on("cmd/result")]
        assert answer["request_id"] == "r-1" and answer["ok"] is True and calls == ["resume"]
        (said,) = [r for r in caplog.records if "results of 1 command" in r.getMessage()]
        assert "read-only" in said.getMessage() and said.exc_info is None, said.getMessage()
    finally:
        delivery.stop(3)
        seen.close()
