"""The fleet ACL (broker/acl.template) on Mosquitto with mutual TLS: devices stay in their lane."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch.app import build_delivery
from tests.support.common import REPO
from tests.support.mosquitto import Broker, Collector, MakeBroker, device_config, fleet_acl, free_port

pytestmark = pytest.mark.broker
A, B = "deskwatch/v1/acme/desk-a/", "deskwatch/v1/acme/desk-b/"


@pytest.fixture
def fleet(make_broker: MakeBroker) -> Broker:
    return make_broker(mutual=True, acl=fleet_acl())


def device_client(broker: Broker, cn: str, protocol: int) -> tuple[mqtt.Client, list[Any], list[Any]]:
    """A raw client authenticated by the certificate of ``cn``; returns (client, pubacks, messages)."""
    assert broker.pki is not None
    crt, key = broker.pki.client(cn)
    acks: list[Any] = []
    messages: list[Any] = []
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{cn}-raw-{protocol}",
        protocol=mqtt.MQTTProtocolVersion(protocol),
    )
    client.tls_set(ca_certs=str(broker.pki.ca_crt), certfile=str(crt), keyfile=str(key))
    client.on_publish = lambda c, u, mid, rc, p: acks.append(rc)
    client.on_message = lambda c, u, m: messages.append(m)
    client.connect(broker.host, broker.port)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.is_connected()
    return client, acks, messages


def central(broker: Broker) -> Collector:
    assert broker.pki is not None
    return Collector(broker, "deskwatch/v1/#", cert=broker.pki.client("deskwatch-central"))


def test_device_a_cannot_publish_under_device_b(tmp_path: Path, fleet: Broker) -> None:
    seen = central(fleet)
    v5, acks5, _ = device_client(fleet, "desk-a", mqtt.MQTTv5)
    v3, acks3, _ = device_client(fleet, "desk-a", mqtt.MQTTv311)
    try:
        v5.publish(B + "event", json.dumps({"forged": 5}), qos=1).wait_for_publish(5)
        v3.publish(B + "event", json.dumps({"forged": 3}), qos=1).wait_for_publish(5)
        v5.publish(A + "event", json.dumps({"own": 5}), qos=1).wait_for_publish(5)
        v3.publish(A + "event", json.dumps({"own": 3}), qos=1).wait_for_publish(5)
        assert seen.wait_for(lambda ms: len(ms) >= 2)
        time.sleep(0.3)  # a forged message would have arrived by now
        assert sorted(m.topic for m in seen.messages) == [A + "event", A + "event"]
        # MQTT 5 says so in the PUBACK; MQTT 3.1.1 acknowledges and drops silently.
        assert [str(rc) for rc in acks5] == ["Not authorized", "Success"]
        assert [rc.is_failure for rc in acks3] == [False, False]
    finally:
        for c in (v5, v3):
            c.disconnect()
            c.loop_stop()
        seen.close()


def test_device_a_cannot_read_device_b_commands(tmp_path: Path, fleet: Broker) -> None:
    assert fleet.pki is not None
    spy, _, spied = device_client(fleet, "desk-a", mqtt.MQTTv5)
    subscribed = threading.Event()
    spy.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    spy.subscribe([(B + "cmd/pause", 1), ("deskwatch/v1/#", 1)])
    device_b = Collector(fleet, B + "cmd/#", cert=fleet.pki.client("desk-b"))
    boss = central(fleet)
    try:
        assert subscribed.wait(10), "no SUBACK: the spy's subscriptions are not in place"
        boss.client.publish(B + "cmd/pause", json.dumps({"request_id": "r1"}), qos=1).wait_for_publish(5)
        # control: A's own command, sent after B's by the same publisher, does reach A;
        # in-order delivery means a leaked command for B would have arrived before it
        boss.client.publish(A + "cmd/pause", json.dumps({"request_id": "r2"}), qos=1).wait_for_publish(5)
        assert device_b.wait_for(lambda ms: len(ms) == 1)
        deadline = time.monotonic() + 10
        while not spied and time.monotonic() < deadline:
            time.sleep(0.02)
        # neither the exact topic nor the wildcard leaks B's commands; A's own arrives
        assert [m.topic for m in spied] == [A + "cmd/pause"]
    finally:
        spy.disconnect()
        spy.loop_stop()
        device_b.close()
        boss.close()


def test_a_device_delivers_everything_it_owns_through_the_fleet_acl(tmp_path: Path, fleet: Broker) -> None:
    """The ACL is not too tight: status, events, evidence, results and commands all flow."""
    assert fleet.pki is not None
    crt, key = fleet.pki.client("desk-a")
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


def test_the_shipped_fleet_config_runs_and_enforces_the_acl(tmp_path: Path, pki: Any) -> None:
    """broker/mosquitto-fleet.conf itself (paths and port swapped for the test's)."""
    port = free_port()
    (tmp_path / "deskwatch.acl").write_text(fleet_acl())
    conf = (REPO / "broker" / "mosquitto-fleet.conf").read_text()
    for old, new in {
        "listener 8883": f"listener {port} 127.0.0.1",
        "/etc/mosquitto/certs/deskwatch-ca.crt": str(pki.ca_crt),
        "/etc/mosquitto/certs/broker.crt": str(pki.server_crt),
        "/etc/mosquitto/certs/broker.key": str(pki.server_key),
        "/etc/mosquitto/deskwatch.acl": str(tmp_path / "deskwatch.acl"),
        "/var/lib/mosquitto/": f"{tmp_path}/",
        "log_dest syslog": "log_dest stdout",
    }.items():
        assert old in conf
        conf = conf.replace(old, new)
    if os.geteuid() == 0:
        conf = "user root\n" + conf
    (tmp_path / "fleet.conf").write_text(conf)
    broker = Broker(tmp_path, port, tmp_path / "fleet.conf", tls=True, pki=pki)
    broker.start()
    try:
        seen = central(broker)
        own, acks, _ = device_client(broker, "desk-a", mqtt.MQTTv5)
        own.publish(B + "event", b"{}", qos=1).wait_for_publish(5)
        own.publish(A + "event", b"{}", qos=1).wait_for_publish(5)
        assert seen.wait_for(lambda ms: len(ms) == 1)
        assert seen.messages[0].topic == A + "event" and [str(a) for a in acks] == ["Not authorized", "Success"]
        own.disconnect()
        own.loop_stop()
        seen.close()
    finally:
        broker.stop()
    assert "Error" not in broker.log_text(), broker.log_text()


def test_a_publish_the_broker_refuses_stays_queued_and_is_named_once(
    tmp_path: Path, make_broker: MakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL that forgot a topic: MQTT 5 says "Not authorized"; the device keeps the message and says why."""
    acl = fleet_acl().replace("pattern write deskwatch/v1/+/%u/scan\n", "")
    assert acl != fleet_acl()
    broker = make_broker(mutual=True, acl=acl)
    assert broker.pki is not None
    crt, key = broker.pki.client("desk-a")
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
