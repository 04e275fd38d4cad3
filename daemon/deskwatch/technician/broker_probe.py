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


class _Probe:
    """One paho client of the given MQTT version and what its broker answered."""

    def __init__(self, cfg: Config, protocol: Any) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.protocol = protocol
        self.client_id = f"{cfg.device.id}-selftest-{uuid.uuid4().hex[:6]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol)
        self.answered = threading.Event()  # a CONNACK, or the broker closed the connection
        self.acked = threading.Event()
        self.subscribed = threading.Event()
        self.state: dict[str, Any] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_args: self.answered.set()
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda *_args: None  # a retained job or reviews list, a command: not ours to act on

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.state["connect"] = reason
        self.answered.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _props: Any) -> None:
        self.state["puback"] = reason
        self.acked.set()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: Any, _props: Any) -> None:
        self.state["suback"] = list(reasons)
        self.subscribed.set()

    @property
    def refused(self) -> Any:
        reason = self.state.get("connect")
        return reason if getattr(reason, "is_failure", False) else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def probe_broker(cfg: Config, timeout: float = 10.0) -> CheckResult:
    import paho.mqtt.client as mqtt

    m = cfg.mqtt
    tls = "TLS" if m.tls.enabled else "plain TCP"
    if m.tls.enabled and m.tls.cert_file:
        tls = "mutual TLS"
    protocol = mqtt.MQTTv311 if m.protocol == "3.1.1" else mqtt.MQTTv5
    fell_back = ""
    t0 = time.perf_counter()
    for attempt in (1, 2):  # protocol auto: the other version once, as the daemon's delivery does
        probe = _Probe(cfg, protocol)
        try:
            apply_credentials(probe.client, m)
        except CredentialsError as exc:
            return CheckResult("broker", FAIL, str(exc), "fix the file named above (provisioning installs them)")
        try:
            probe.client.connect(m.host, m.port, keepalive=m.keepalive_seconds)
        except Exception as exc:  # the same words the daemon's log would use
            problem = problems.connect_exception(m, exc)
            return CheckResult("broker", FAIL, problem.detail, problem.remedy)
        probe.client.loop_start()
        if not probe.answered.wait(timeout):
            probe.close()
            return CheckResult("broker", FAIL, f"{m.host}:{m.port}: no CONNACK in {timeout:.0f} s", "check the broker")
        fallback = problems.protocol_fallback(m, protocol, probe.refused, "connect" in probe.state)
        if fallback is None or attempt == 2:
            break
        probe.close()
        protocol, why = fallback
        fell_back = f" ({why.detail}, as the daemon will find)"
    try:
        return _checked(cfg, probe, tls, t0, timeout, fell_back)
    finally:
        probe.close()


def _checked(cfg: Config, probe: _Probe, tls: str, t0: float, timeout: float, fell_back: str) -> CheckResult:
    """The rows' verdict on a connection attempt that got an answer: refused, or what the ACL allows."""
    import paho.mqtt.client as mqtt

    m = cfg.mqtt
    client, state, protocol = probe.client, probe.state, probe.protocol
    if "connect" not in state:
        problem = problems.no_connack(m)
        return CheckResult("broker", FAIL, problem.detail, problem.remedy)
    if probe.refused is not None:
        problem = problems.refusal(m, probe.refused, probe.client_id)
        return CheckResult("broker", FAIL, problem.detail, problem.remedy)
    connect_ms = (time.perf_counter() - t0) * 1000
    subscribed, acked = probe.subscribed, probe.acked
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
        f"{tls} to {m.host}:{m.port}, MQTT {'5' if protocol == mqtt.MQTTv5 else '3.1.1'}{fell_back}, "
        f"connect {connect_ms:.0f} ms, publish+ack {ack_ms:.0f} ms (mid {info.mid}); "
        f"publish {'accepted' if protocol == mqtt.MQTTv5 else 'acknowledged'} on {topics.SELFTEST}; "
        f"subscribe granted on {', '.join(reads)}; "
        f"not probed (a message there would reach consumers): {', '.join(not_probed())}"
    )
    if protocol == mqtt.MQTTv311:
        return CheckResult("broker", WARN, detail + "; MQTT 3.1.1 cannot report ACL denials", "prefer mqtt.protocol 5")
    if not m.tls.enabled:
        return CheckResult("broker", WARN, detail, "TLS is off: only acceptable on loopback or in a lab")
    return CheckResult("broker", PASS, detail)
