"""A real device (its Delivery) through the generated fleet ACL with mutual TLS: everything
it owns flows, and a publish the broker refuses stays queued. The full allowed/denied
matrix for every role is in test_broker_acl_matrix.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deskwatch.app import build_delivery
from tests.support.mosquitto import Broker, Collector, MakeBroker, Pki, device_config, fleet_acl

pytestmark = pytest.mark.broker
A = "deskwatch/v1/acme/desk-a/"


@pytest.fixture
def fleet(make_broker: MakeBroker, pki: Pki) -> Broker:
    return make_broker(mutual=True, acl=fleet_acl(pki))


def central(broker: Broker) -> Collector:
    assert broker.pki is not None
    return Collector(broker, "deskwatch/v1/#", cert=broker.pki.client("deskwatch-central"))


def test_a_device_delivers_everything_it_owns_through_the_fleet_acl(tmp_path: Path, fleet: Broker) -> None:
    """The ACL is not too tight: status, events, evidence, results and commands all flow."""
    assert fleet.pki is not None
    crt, key = fleet.pki.client("acme/desk-a")
    cfg = device_config(
        tmp_path,
        fleet,
        tls=f"enabled: true\n    ca_file: {fleet.pki.ca_crt}\n    cert_file: {crt}\n    key_file: {key}",
    )
    seen = central(fleet)
    delivery = build_delivery(cfg, version="t", models={})
    delivery.on_command(lambda kind, body: None)
    delivery.start()
    try:
        assert seen.wait_for(lambda ms: any(m.topic == A + "status" for m in ms))
        delivery.send_event({"type": "phone_use"}, b"\xff\xd8jpeg")
        delivery.send_scan({"scan_id": "s"})
        seen.client.publish(
            A + "cmd/resume", json.dumps({"schema": "deskwatch.cmd.resume/1", "request_id": "r-7"}), qos=1
        )
        assert seen.wait_for(lambda ms: {"event", "scan", "result"} <= {m.topic.rsplit("/", 1)[1] for m in ms})
        assert len(seen.on("/evidence/" + json.loads(seen.on("/event")[0].payload)["event_id"])) == 1
        assert json.loads(seen.on("cmd/result")[0].payload)["request_id"] == "r-7"
    finally:
        delivery.stop(2)
        seen.close()


def test_a_publish_the_broker_refuses_stays_queued_and_is_named_once(
    tmp_path: Path, make_broker: MakeBroker, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL that forgot a topic: MQTT 5 says "Not authorized"; the device keeps the message and says why."""
    acl = fleet_acl(pki).replace(f"topic write {A}scan\n", "")
    assert acl != fleet_acl(pki)
    broker = make_broker(mutual=True, acl=acl)
    assert broker.pki is not None
    crt, key = broker.pki.client("acme/desk-a")
    cfg = device_config(
        tmp_path,
        broker,
        tls=f"enabled: true\n    ca_file: {broker.pki.ca_crt}\n    cert_file: {crt}\n    key_file: {key}",
    )
    seen = central(broker)
    delivery = build_delivery(cfg, version="t", models={})
    delivery.start()
    try:
        delivery.send_scan({"n": 1})
        delivery.send_scan({"n": 2})
        delivery.send_event({"type": "phone_use"}, None)
        assert seen.wait_for(lambda ms: any(m.topic == A + "event" for m in ms))
        assert not seen.on("/scan")
        time.sleep(0.3)
        assert delivery.outbox.stats()["by_kind"]["scan"] == 2 and delivery.outbox.stats()["by_kind"]["event"] == 0
        refusals = [r.getMessage() for r in caplog.records if "refused a publish" in r.getMessage()]
        assert len(refusals) == 1 and "ACL" in refusals[0]
    finally:
        delivery.stop(2)
        seen.close()
