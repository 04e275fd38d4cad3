"""The same publish/ack path against a second engine (NATS, MQTT 3.1.1 only).

Proves the contract is not tied to Mosquitto and that the 3.1.1 fallback carries
everything a consumer needs: the event names its evidence's sha256 and size, so a
3.1.1 consumer can check the JPEG without MQTT 5 user properties.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import jsonschema
import pytest

from deskwatch.app import build_delivery
from deskwatch_contract import load_schema
from tests.support.brokers_other import NatsBroker
from tests.support.mosquitto import Broker, Collector, device_config

pytestmark = pytest.mark.broker
PREFIX = "deskwatch/v1/acme/desk-a/"


def wait_until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def as_broker(nats: NatsBroker) -> Broker:
    return nats  # type: ignore[return-value]  # same host/port/tls surface


def test_auto_falls_back_to_311_and_delivers_events_with_verifiable_evidence(
    tmp_path: Path, nats_broker: NatsBroker
) -> None:
    broker = as_broker(nats_broker)
    seen = Collector(broker, PREFIX + "#", protocol=4, client_id="central")  # a 3.1.1 consumer
    delivery = build_delivery(device_config(tmp_path, broker), version="t", models={})
    delivery.on_command(lambda kind, body: None)
    delivery.start()
    try:
        assert wait_until(lambda: delivery.connected)
        assert seen.wait_for(lambda ms: any(m.topic.endswith("/status") for m in ms))  # subscribed before "online"
        assert delivery.stats()["mqtt"]["protocol"] == "3.1.1"
        jpeg = b"\xff\xd8" + bytes(range(256)) * 40
        ids = [
            delivery.send_event({"type": "phone_use", "scan_id": f"s{i}"}, jpeg if i % 2 else None) for i in range(10)
        ]
        seen.client.publish(
            PREFIX + "cmd/resume", json.dumps({"schema": "deskwatch.cmd.resume/1", "request_id": "n1"}), qos=1
        )
        assert seen.wait_for(
            lambda ms: (
                len([m for m in ms if m.topic.endswith("/event")]) >= 10
                and len([m for m in ms if "/evidence/" in m.topic]) >= 5
                and any(m.topic.endswith("cmd/result") for m in ms)
            )
        )
        events = {json.loads(m.payload)["event_id"]: json.loads(m.payload) for m in seen.on("/event")}
        assert set(events) == set(ids)
        for m in seen.messages:
            if "/evidence/" in m.topic:
                promised = events[m.topic.rsplit("/", 1)[1]]["evidence"]
                assert promised["sha256"] == hashlib.sha256(m.payload).hexdigest()
                assert promised["bytes"] == len(m.payload)
                assert m.user_properties == {}  # 3.1.1: nothing rides in properties
        result = json.loads(seen.on("cmd/result")[0].payload)
        jsonschema.validate(result, load_schema("cmd.result"))
        assert result["ok"] and result["request_id"] == "n1"
        assert wait_until(lambda: delivery.stats()["outbox"]["depth"] == 0)
    finally:
        delivery.stop(2)
        seen.close()
    late = Collector(broker, PREFIX + "status", protocol=4, client_id="late")
    assert late.wait_for(lambda ms: len(ms) >= 1)  # retained on NATS too
    assert json.loads(late.messages[-1].payload)["state"] == "offline"
    late.close()


@pytest.mark.slow
def test_outage_and_replay_on_nats(tmp_path: Path, nats_broker: NatsBroker) -> None:
    broker = as_broker(nats_broker)
    seen = Collector(broker, PREFIX + "event", client_id="central-durable", persistent_session=True)
    delivery = build_delivery(device_config(tmp_path, broker), version="t", models={})
    delivery.start()
    try:
        assert wait_until(lambda: delivery.connected)
        ids = [delivery.send_event({"type": "low_light"}, None) for _ in range(20)]
        # Let NATS hand these to the consumer first: messages it had acknowledged but not yet
        # delivered when it was stopped did not always reappear after its restart (NATS 2.9).
        assert seen.wait_for(lambda ms: len(ms) >= 20)
        nats_broker.stop()
        assert wait_until(lambda: not delivery.connected)
        ids += [delivery.send_event({"type": "low_light"}, None) for _ in range(100)]
        nats_broker.start()
        want = set(ids)
        arrived = seen.wait_for(lambda ms: want <= {json.loads(m.payload)["event_id"] for m in ms}, 20)
        got = [json.loads(m.payload)["event_id"] for m in seen.messages]
        assert arrived, ([ids.index(i) for i in want - set(got)], [ids.index(i) for i in got])
        assert wait_until(lambda: delivery.stats()["outbox"]["depth"] == 0)
    finally:
        delivery.stop(2)
        seen.close()
