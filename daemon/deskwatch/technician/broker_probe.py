"""Selftest's broker check: TLS connect with the device's identity, one QoS 1 publish, its PUBACK.

Uses paho directly (the daemon's delivery keeps its own long-lived client): the probe
connects as ``<device id>-selftest`` so a running daemon keeps its session, publishes
one small JSON message on ``deskwatch/v1/<site>/<device>/selftest`` and waits for the
broker's acknowledgement. With MQTT 5 a publish the ACL denies comes back as
"Not authorized"; with 3.1.1 the broker acknowledges and drops it, so the row says so.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from deskwatch.config import Config
from deskwatch.technician.checks import FAIL, PASS, WARN, CheckResult
from deskwatch_contract import problems, topics
from deskwatch_contract.credentials import CredentialsError, apply_credentials


def selftest_topic(cfg: Config) -> str:
    return topics.prefix(cfg.device.site, cfg.device.id) + topics.SELFTEST


def probe_broker(cfg: Config, timeout: float = 10.0) -> CheckResult:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    m = cfg.mqtt
    protocol = mqtt.MQTTv311 if m.protocol == "3.1.1" else mqtt.MQTTv5
    client_id = f"{cfg.device.id}-selftest-{uuid.uuid4().hex[:6]}"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
    )
    connected = threading.Event()
    acked = threading.Event()
    state: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        state["connect"] = reason
        connected.set()

    def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _props: Any) -> None:
        state["puback"] = reason
        acked.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    tls = "TLS" if m.tls.enabled else "plain TCP"
    if m.tls.enabled and m.tls.cert_file:
        tls = "mutual TLS"
    try:
        apply_credentials(client, m)
    except CredentialsError as exc:
        return CheckResult("broker", FAIL, str(exc), "fix the file named above (provisioning installs them)")
    t0 = time.perf_counter()
    try:
        client.connect(m.host, m.port, keepalive=m.keepalive_seconds)
    except Exception as exc:  # the same words the daemon's log would use
        problem = problems.connect_exception(m, exc)
        return CheckResult("broker", FAIL, problem.detail, problem.remedy)
    client.loop_start()
    try:
        if not connected.wait(timeout):
            return CheckResult("broker", FAIL, f"{m.host}:{m.port}: no CONNACK in {timeout:.0f} s", "check the broker")
        reason = state["connect"]
        if getattr(reason, "is_failure", False):
            problem = problems.refusal(m, reason, client_id)
            return CheckResult("broker", FAIL, problem.detail, problem.remedy)
        connect_ms = (time.perf_counter() - t0) * 1000
        payload = json.dumps({"schema": "deskwatch.selftest/1", "device_id": cfg.device.id, "nonce": uuid.uuid4().hex})
        t1 = time.perf_counter()
        info = client.publish(selftest_topic(cfg), payload, qos=1)
        if not acked.wait(timeout):
            return CheckResult(
                "broker", FAIL, f"connected but no PUBACK in {timeout:.0f} s", "check the broker's load and ACL"
            )
        ack_ms = (time.perf_counter() - t1) * 1000
        puback = state.get("puback")
        if getattr(puback, "is_failure", False):
            return CheckResult(
                "broker",
                FAIL,
                f"publish to {selftest_topic(cfg)} refused: {puback}",
                "the broker ACL must let this device write under its own prefix (certificate CN = SITE/DEVICE; render the ACL with deskwatch-ca acl)",
            )
        detail = (
            f"{tls} to {m.host}:{m.port}, connect {connect_ms:.0f} ms, publish+ack {ack_ms:.0f} ms (mid {info.mid})"
        )
        if protocol == mqtt.MQTTv311:
            return CheckResult(
                "broker", WARN, detail + "; MQTT 3.1.1 cannot report ACL denials", "prefer mqtt.protocol 5"
            )
        if not m.tls.enabled:
            return CheckResult("broker", WARN, detail, "TLS is off: only acceptable on loopback or in a lab")
        return CheckResult("broker", PASS, detail)
    finally:
        client.disconnect()
        client.loop_stop()
