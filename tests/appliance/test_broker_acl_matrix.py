"""The broker ACL generated from the certificates (deskwatch-ca), on Mosquitto and on NATS,
with mutual TLS: every allowed path works, and every other one is denied.

Mosquitto runs the shipped ``broker/mosquitto-fleet.conf``; NATS its MQTT 3.1.1 gateway
with ``verify_and_map``. MQTT 3.1.1 acknowledges a denied publish and drops it, so every
verdict is taken from what arrives, never from an acknowledgement: a probe is followed
by a sentinel the receiver may get, and the probe counts as denied only once the
sentinel has arrived without it. ``pytest -s`` prints the matrix.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch_contract import access
from deskwatch_contract.access import Identity
from deskwatch_dev.devservers import free_port
from tests.support.brokers_other import NatsBroker
from tests.support.common import REPO
from tests.support.mosquitto import Broker, Pki

pytestmark = pytest.mark.broker

A = access.device("acme", "desk-a")
B = access.device("acme", "desk-b")
OTHER_SITE = access.device("other", "desk-a")  # same device id, another site
COMPANION = access.companion("acme", "desk-a")
CENTRAL = access.central("deskwatch-central")
WHO = {"device A": A, "device B": B, "device other/desk-a": OTHER_SITE, "companion A": COMPANION, "central": CENTRAL}
_counter = itertools.count()


def concrete(topic_filter: str) -> str:
    """A topic that the filter matches (for publishing)."""
    return topic_filter.replace("#", "x").replace("+", f"p{next(_counter)}")


@dataclass
class Case:
    who: str
    action: str  # "publish" | "read"
    topic: str  # the topic published, or read (published by someone allowed to)
    allowed: bool
    read_filter: str = ""  # what the reader subscribes to (default: the topic)
    result: bool | None = None


def cases() -> list[Case]:
    """Every permitted path from the contract's table, then what must be denied."""
    out: list[Case] = []
    for name, ident in WHO.items():
        if name == "device B" or name == "device other/desk-a":
            continue
        for f in ident.publish_filters():
            out.append(Case(name, "publish", concrete(f.replace("deskwatch/v1/+/+", A.scope.rstrip("/"))), True))
        for f in ident.read_filters():
            topic = concrete(f) if ident.role != "central" else A.scope + "event"
            out.append(Case(name, "read", topic, True, read_filter=f))
    a, b, o = A.scope, B.scope, OTHER_SITE.scope
    denied = [
        # a device stays under its own site and id (the original hole: other/desk-a accepted)
        ("device A", "publish", o + "event"),
        ("device A", "publish", o + "status"),
        ("device A", "publish", b + "event"),
        ("device A", "publish", b + "evidence/e1"),
        ("device A", "publish", a + "cmd/pause"),  # a device does not command itself
        ("device A", "publish", a + "activity"),
        ("device A", "publish", "deskwatch/v1/acme/event"),
        # a companion on the worker's PC cannot pose as a device, here or anywhere
        ("companion A", "publish", a + "event"),
        ("companion A", "publish", a + "evidence/e1"),
        ("companion A", "publish", a + "status"),
        ("companion A", "publish", a + "scan"),
        ("companion A", "publish", a + "health"),
        ("companion A", "publish", a + "cmd/result"),
        ("companion A", "publish", a + "cmd/scan"),  # no camera on demand from the PC
        ("companion A", "publish", b + "cmd/pause"),
        ("companion A", "publish", o + "event"),
        ("companion A", "publish", a + "companion/event"),
        # central sends commands, never device data
        ("central", "publish", a + "event"),
        ("central", "publish", a + "status"),
    ]
    out += [Case(w, act, t, False) for w, act, t in denied]
    reads = [
        ("device A", b + "cmd/pause", "deskwatch/v1/+/+/cmd/pause"),
        ("device A", o + "cmd/pause", "deskwatch/v1/other/desk-a/cmd/pause"),
        ("device A", b + "cmd/scan", "deskwatch/v1/acme/+/cmd/scan"),
        ("device A", b + "event", "deskwatch/v1/#"),
        ("companion A", a + "status", a + "status"),
        ("companion A", a + "cmd/pause", a + "cmd/pause"),
        ("companion A", b + "event", "deskwatch/v1/acme/+/event"),
        ("companion A", o + "cmd/result", "deskwatch/v1/+/desk-a/cmd/result"),
        ("companion A", a + "evidence/e1", a + "evidence/+"),  # images are for the collector only
    ]
    out += [Case(r, "read", t, False, read_filter=f) for r, t, f in reads]
    return out


def writer_for(topic: str) -> Identity:
    """Someone allowed to publish ``topic`` (to produce the message a read case needs)."""
    for ident in (A, B, OTHER_SITE, COMPANION, CENTRAL):
        if any(mqtt.topic_matches_sub(f, topic) for f in ident.publish_filters()):
            return ident
    raise AssertionError(f"nobody may publish {topic}")


@dataclass
class Client:
    identity: Identity
    client: mqtt.Client
    got: list[tuple[str, bytes]] = field(default_factory=list)
    subacks: dict[int, list[Any]] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, pred: Any, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def received(self, payload: bytes) -> bool:
        return any(p == payload for _, p in self.got)

    def subscribe(self, topic_filter: str) -> bool:
        """Subscribe; True when the broker granted it (a refusal comes back as a failure code)."""
        _, mid = self.client.subscribe(topic_filter, qos=1)
        assert self.wait(lambda: mid in self.subacks), f"no SUBACK for {topic_filter}"
        return not any(getattr(rc, "is_failure", rc == 128) for rc in self.subacks[mid])

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)


def connect(broker: Any, pki: Pki, identity: Identity, protocol: int) -> Client:
    crt, key = pki.client(identity.cn)
    raw = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{identity.cn.replace('/', '-')}-{protocol}-{next(_counter)}",
        protocol=mqtt.MQTTProtocolVersion(protocol),
    )
    raw.tls_set(ca_certs=str(pki.ca_crt), certfile=str(crt), keyfile=str(key))
    c = Client(identity, raw)
    connected = threading.Event()

    def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with c.cond:
            c.got.append((m.topic, bytes(m.payload)))
            c.cond.notify_all()

    def on_subscribe(_c: Any, _u: Any, mid: int, rcs: list[Any], _p: Any) -> None:
        with c.cond:
            c.subacks[mid] = list(rcs)
            c.cond.notify_all()

    raw.on_message = on_message
    raw.on_subscribe = on_subscribe
    raw.on_connect = lambda *a: connected.set()
    raw.connect(broker.host, broker.port)
    raw.loop_start()
    assert connected.wait(10), f"{identity.cn} could not connect"
    return c


def run_matrix(broker: Any, pki: Pki, protocol: int) -> list[Case]:
    clients = {ident.cn: connect(broker, pki, ident, protocol) for ident in (A, B, OTHER_SITE, COMPANION, CENTRAL)}
    central = clients[CENTRAL.cn]
    try:
        assert central.subscribe("deskwatch/v1/#")
        # every reader keeps its own permitted subscriptions: sentinels come through them
        for ident in (A, COMPANION):
            for f in ident.read_filters():
                assert clients[ident.cn].subscribe(f), f
        sentinel_route = {A.cn: (CENTRAL, A.scope + "cmd/scan"), COMPANION.cn: (A, A.scope + "scan")}
        sentinel_route[CENTRAL.cn] = (A, A.scope + "health")
        done = []
        for case in cases():
            ident = WHO[case.who]
            me = clients[ident.cn]
            probe = f"probe-{next(_counter)}".encode()
            if case.action == "publish":
                me.publish(case.topic, probe)
                sentinel = f"sentinel-{next(_counter)}".encode()
                me.publish(
                    concrete(ident.publish_filters()[-1]).replace("deskwatch/v1/+/+", A.scope.rstrip("/")), sentinel
                )
                assert central.wait(lambda s=sentinel: central.received(s)), f"sentinel of {case.who} lost"
                case.result = central.received(probe)
            else:
                granted = me.subscribe(case.read_filter) if case.read_filter not in ident.read_filters() else True
                clients[writer_for(case.topic).cn].publish(case.topic, probe)
                if case.allowed:
                    case.result = me.wait(lambda p=probe, m=me: m.received(p))
                else:
                    by, where = sentinel_route[ident.cn]
                    sentinel = f"sentinel-{next(_counter)}".encode()
                    clients[by.cn].publish(where, sentinel)
                    assert me.wait(lambda s=sentinel, m=me: m.received(s)), f"sentinel to {case.who} lost"
                    time.sleep(0.05)
                    case.result = me.received(probe)
                if granted and case.read_filter not in ident.read_filters():
                    me.client.unsubscribe(case.read_filter)
            done.append(case)
        return done
    finally:
        for c in clients.values():
            c.client.disconnect()
            c.client.loop_stop()


def report(engine: str, protocol: str, results: list[Case]) -> str:
    lines = [
        f"\n{engine} (MQTT {protocol}): {len(results)} paths",
        "| who | action | topic | expected | got |",
        "|---|---|---|---|---|",
    ]
    for c in results:
        lines.append(
            f"| {c.who} | {c.action} | `{c.topic}` | {'allowed' if c.allowed else 'denied'} | "
            f"{'allowed' if c.result else 'denied'}{'' if c.result == c.allowed else ' **WRONG**'} |"
        )
    return "\n".join(lines)


@pytest.fixture
def fleet_broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    """The shipped broker/mosquitto-fleet.conf with the generated ACL (paths swapped for the test's)."""
    for ident in (A, B, OTHER_SITE, COMPANION, CENTRAL):
        pki.client(ident.cn)
    port = free_port()
    (tmp_path / "deskwatch.acl").write_text(pki.acl())
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
        assert old in conf, old
        conf = conf.replace(old, new)
    if os.geteuid() == 0:
        conf = "user root\n" + conf
    (tmp_path / "fleet.conf").write_text(conf)
    broker = Broker(tmp_path, port, tmp_path / "fleet.conf", tls=True, pki=pki)
    broker.start()
    yield broker
    broker.stop()
    assert "Error" not in broker.log_text(), broker.log_text()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["3.1.1", "5"])
def test_mosquitto_matrix(fleet_broker: Broker, pki: Pki, protocol: int) -> None:
    results = run_matrix(fleet_broker, pki, protocol)
    print(report("Mosquitto 2.0", "3.1.1" if protocol == mqtt.MQTTv311 else "5", results))
    wrong = [c for c in results if c.result != c.allowed]
    assert not wrong, wrong
    assert sum(c.allowed for c in results) >= 20 and sum(not c.allowed for c in results) >= 25


@pytest.mark.slow
def test_nats_matrix(make_nats: Any, pki: Pki) -> None:
    for ident in (A, B, OTHER_SITE, COMPANION, CENTRAL):
        pki.client(ident.cn)
    broker: NatsBroker = make_nats(pki=pki, authorization=pki.acl("nats"))
    results = run_matrix(broker, pki, mqtt.MQTTv311)
    print(report("NATS 2.9", "3.1.1", results))
    wrong = [c for c in results if c.result != c.allowed]
    assert not wrong, wrong


def test_nats_delivery_subjects_do_not_leak_other_clients_messages(make_nats: Any, pki: Pki) -> None:
    """NATS needs ``$MQTT.sub.>`` for QoS 1; subscribing to it from MQTT shows nothing of others."""
    for ident in (A, COMPANION, CENTRAL):
        pki.client(ident.cn)
    broker: NatsBroker = make_nats(pki=pki, authorization=pki.acl("nats"))
    spy = connect(broker, pki, A, mqtt.MQTTv311)
    companion = connect(broker, pki, COMPANION, mqtt.MQTTv311)
    try:
        spy.subscribe("$MQTT/sub/#")
        assert companion.subscribe(A.scope + "cmd/result")
        secret = b"result-for-the-companion-only"
        spy.publish(A.scope + "cmd/result", secret)
        assert companion.wait(lambda: companion.received(secret))
        time.sleep(0.3)
        assert [t for t, _ in spy.got] == []
    finally:
        for c in (spy, companion):
            c.client.disconnect()
            c.client.loop_stop()


def test_a_revoked_identity_loses_every_right_after_a_reload(tmp_path: Path, pki: Pki) -> None:
    """Revocation = rendering the ACL again: the certificate still connects, but may do nothing."""
    from deskwatch_contract import ca

    ca_dir = tmp_path / "ca"
    ca.init(ca_dir, days=2)
    ca.issue(ca_dir, A, tmp_path / "a", days=2)
    ca.issue(ca_dir, B, tmp_path / "b", days=2)
    assert "user acme/desk-a\n" in ca.render_acl(ca_dir, "mosquitto")
    ca.revoke(ca_dir, A.cn)
    text = ca.render_acl(ca_dir, "mosquitto")
    assert "acme/desk-a" not in text and "user acme/desk-b\n" in text
    with pytest.raises(ca.CaError, match="revoked"):
        ca.issue(ca_dir, A, tmp_path / "a2", days=2)


@pytest.mark.parametrize("doc", ["broker/README.md", "docs/mqtt-contract.md"])
def test_the_access_tables_in_the_docs_are_the_permissions(doc: str) -> None:
    """The broker operator's table had lost the jobs and reviews topics the generated ACL grants."""
    import re

    text = (REPO / doc).read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or "`" not in cells[0] or "`" not in cells[2]:
            continue  # not a row of an access table
        role: access.Role = "central" if "`/`" in cells[0] else "companion" if "companion" in cells[0] else "device"
        rows[role] = [set(re.findall(r"`([^`]+)`", c)) for c in cells[2:]]
    assert set(rows) == set(access.ROLES), rows
    for role, (publish, read) in rows.items():
        want = access.PERMISSIONS[role]
        strip = lambda f: f.removeprefix("+/+/")  # noqa: E731 - central's filters are any desk's
        assert {strip(f) for f in want.publish} == {strip(f) for f in publish}, (doc, role, "publish")
        assert set(want.read) == read or (role == "central" and read == {"deskwatch/v1/#"}), (doc, role, "read")
