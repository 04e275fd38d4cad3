"""Delivery against a real Mosquitto: status, events with evidence, replay, commands."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from deskwatch.mqtt.delivery import Delivery
from tests.support import mosquitto as _fixtures
from tests.support.mosquitto import Broker, Collector, device_config

# Until tests/conftest.py lists tests.support.mosquitto in pytest_plugins:
pki, make_broker, mosquitto = _fixtures.pki, _fixtures.make_broker, _fixtures.mosquitto

pytestmark = pytest.mark.broker
PREFIX = "deskwatch/v1/acme/desk-a/"


def event(n: int) -> dict[str, object]:
    return {
        "schema": "deskwatch.event/1",
        "type": "phone_use",
        "scan_id": f"s{n}",
        "evidence": None,
        "evidence_reason": "none",
        "replayed": False,
    }


def test_events_and_evidence_arrive_and_leave_the_outbox(tmp_path: Path, mosquitto: Broker) -> None:
    seen = Collector(mosquitto, PREFIX + "#")
    delivery = Delivery(device_config(tmp_path, mosquitto), version="1.0", models={"m": "0" * 64})
    delivery.start()
    try:
        assert seen.wait_for(lambda ms: any(m.topic.endswith("status") for m in ms))
        status = json.loads(seen.on("status")[0].payload)
        assert status["state"] == "online" and status["session"] >= 1
        late = Collector(mosquitto, PREFIX + "status")  # a consumer starting later still learns the state
        assert late.wait_for(lambda ms: len(ms) == 1) and late.messages[0].retain
        late.close()
        jpeg = b"\xff\xd8" + bytes(range(256)) * 80
        ids = [delivery.send_event(event(n), jpeg if n % 2 else None) for n in range(6)]
        assert seen.wait_for(
            lambda ms: (
                len([m for m in ms if m.topic.endswith("event")]) == 6
                and len([m for m in ms if "/evidence/" in m.topic]) == 3
            )
        )
        events = [json.loads(m.payload) for m in seen.on("event")]
        assert [e["event_id"] for e in events] == ids
        assert [e["seq"] for e in events] == list(range(1, 7))
        assert not any(e["replayed"] for e in events)
        digest = hashlib.sha256(jpeg).hexdigest()
        assert events[1]["evidence"]["sha256"] == digest and events[1]["evidence"]["bytes"] == len(jpeg)
        ev = seen.on("evidence/" + ids[1])[0]
        assert ev.payload == jpeg
        assert ev.user_properties == {"content-type": "image/jpeg", "sha256": digest, "event_id": ids[1]}
        assert wait(lambda: delivery.outbox.stats()["depth"] == 0)
    finally:
        delivery.stop(3)
    assert seen.wait_for(lambda ms: json.loads(ms[-1].payload).get("state") == "offline")
    offline = json.loads(seen.on("status")[-1].payload)
    assert offline["session"] == status["session"]
    seen.close()


def wait(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
