"""Selftest's broker check: TLS connect with the device's identity, what the ACL lets it do.

Uses paho directly (the daemon's delivery keeps its own long-lived client): the probe
connects as ``<device id>-selftest-...`` so a running daemon keeps its session, then

- subscribes to every topic the daemon reads (``access.PERMISSIONS["device"].read``:
  the commands, ``activity``, ``jobs/notify``, ``reviews``) and checks each SUBACK
  reason code: a broker that refuses a subscription says so there (NATS does, on
  3.1.1 too). Mosquitto's ``acl_file`` grants every subscription and filters at
  delivery, so there a missing read line is not seen;
- publishes one small JSON message on ``deskwatch/v1/<site>/<device>/selftest`` and
  waits for the broker's acknowledgement. With MQTT 5 a publish the ACL denies comes
  back as "Not authorized"; with 3.1.1 the broker acknowledges and drops it, so the
  row says so.

The device's other publish topics (``status``, ``event``, ``evidence/+``, ``scan``,
``health``, ``cmd/result``, ``jobs/progress``) are not probed, and the row says so: the
broker answers a publish only after taking it, and then every subscriber gets it. The
collector would store a probe ``event`` or ``scan`` as a finding or an audited scan,
refuse and count anything else as a bad message, hold a probe photo against the device's
quota of orphan evidence, and a ``status`` or ``health`` would stand for the device's
state; consumers written to the contract act on them too. (Mosquitto neither checks a
Will's topic at CONNECT nor refuses a SUBSCRIBE it will not deliver, so neither says
anything either.) ``selftest`` is the one topic consumers are told to ignore.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from deskwatch.config import Config
from deskwatch.technician.checks import FAIL, PASS, WARN, CheckResult
from deskwatch_contract import access, problems, topics
from deskwatch_contract.credentials import CredentialsError, apply_credentials


def selftest_topic(cfg: Config) -> str:
    return topics.prefix(cfg.device.site, cfg.device.id) + topics.SELFTEST


def not_probed() -> list[str]:
    """The device's publish topics a probe cannot write without a consumer acting on it."""
    return [t for t in access.PERMISSIONS["device"].publish if t != topics.SELFTEST]


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
    subscribed = threading.Event()
    state: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        state["connect"] = reason
        connected.set()

    def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _props: Any) -> None:
        state["puback"] = reason
        acked.set()

    def on_subscribe(_c: Any, _u: Any, mid: int, reasons: Any, _props: Any) -> None:
        state["suback"] = list(reasons)
        subscribed.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_subscribe = on_subscribe
    client.on_message = lambda *_args: None  # a retained job or reviews list, a command: not ours to act on
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
        device = access.device(cfg.device.site, cfg.device.id)
        reads = access.PERMISSIONS["device"].read
        client.subscribe([(f, 1) for f in device.read_filters()])
        if not subscribed.wait(timeout):
            return CheckResult(
                "broker", FAIL, f"connected but no SUBACK in {timeout:.0f} s", "check the broker's load and ACL"
            )
        granted = state["suback"]
        refused = [f"{t} ({rc})" for t, rc in zip(reads, granted, strict=False) if getattr(rc, "is_failure", False)]
        if len(granted) != len(reads):
            refused.append(f"the broker answered {len(granted)} of {len(reads)} subscriptions")
        if refused:
            return CheckResult(
                "broker",
                FAIL,
                f"the broker refused this device the subscription to {', '.join(refused)} under {device.scope}",
                "the broker ACL must let this device read its commands, activity, jobs/notify and reviews "
                "(certificate CN = SITE/DEVICE; render the ACL with deskwatch-ca acl)",
            )
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
            f"{tls} to {m.host}:{m.port}, connect {connect_ms:.0f} ms, publish+ack {ack_ms:.0f} ms (mid {info.mid}); "
            f"publish {'accepted' if protocol == mqtt.MQTTv5 else 'acknowledged'} on {topics.SELFTEST}; "
            f"subscribe granted on {', '.join(reads)}; "
            f"not probed (a message there would reach consumers): {', '.join(not_probed())}"
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
