"""Selftest's broker check: TLS connect with the device's identity, one QoS 1 publish, its PUBACK.

Uses paho directly (the daemon's delivery keeps its own long-lived client): the probe
connects as ``<device id>-selftest`` so a running daemon keeps its session, publishes
one small JSON message on ``deskwatch/v1/<site>/<device>/selftest`` and waits for the
broker's acknowledgement. With MQTT 5 a publish the ACL denies comes back as
"Not authorized"; with 3.1.1 the broker acknowledges and drops it, so the row says so.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid
from typing import Any

from ..config import Config
from ..contract.payloads import topic_prefix
from ..mqtt.credentials import CredentialsError, apply_credentials
from .selftest import FAIL, PASS, WARN, CheckResult


def selftest_topic(cfg: Config) -> str:
    return topic_prefix(cfg) + "selftest"


def _classify(exc: BaseException, cfg: Config) -> tuple[str, str]:
    m = cfg.mqtt
    where = f"{m.host}:{m.port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {m.host}: {exc}", "check mqtt.host and the device's DNS"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where} refused the connection", "check mqtt.port and that the broker is running"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"broker certificate not trusted: {exc.verify_message}",
            "mqtt.tls.ca_file must be the CA that signed the broker's certificate, and mqtt.host its name",
        )
    if isinstance(exc, ssl.SSLError):
        text = str(exc)
        if "certificate" in text.lower() or "alert" in text.lower():
            return f"TLS handshake refused: {text}", "the broker did not accept this device's client certificate"
        return f"TLS error: {text}", "check mqtt.port is the broker's TLS port (8883) and the certificates"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer from {where}", "check the network path / firewall to the broker"
    if isinstance(exc, OSError):
        return f"{where}: {exc.strerror or exc}", "check the network and mqtt.host/port"
    return f"{where}: {exc}", "check the broker settings"


def probe_broker(cfg: Config, timeout: float = 10.0) -> CheckResult:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    m = cfg.mqtt
    protocol = mqtt.MQTTv311 if m.protocol == "3.1.1" else mqtt.MQTTv5
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{cfg.device.id}-selftest-{uuid.uuid4().hex[:6]}",
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
    except Exception as exc:
        detail, remedy = _classify(exc, cfg)
        return CheckResult("broker", FAIL, detail, remedy)
    client.loop_start()
    try:
        if not connected.wait(timeout):
            return CheckResult("broker", FAIL, f"{m.host}:{m.port}: no CONNACK in {timeout:.0f} s", "check the broker")
        reason = state["connect"]
        if getattr(reason, "is_failure", False) or (isinstance(reason, int) and reason != 0):
            return CheckResult(
                "broker",
                FAIL,
                f"broker refused the connection: {reason}",
                "the broker does not accept this device's identity: check the certificate CN / user",
            )
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
                "the broker ACL must let this device write under its own prefix (CN = device id)",
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
