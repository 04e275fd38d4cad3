"""Rolling out a remote job: to a device, a site or the fleet, in waves, stopped on failures.

:func:`make_job` writes the document (``deskwatch_contract.jobs``); :class:`Rollout` signs
it once and publishes the envelope **retained** on each target's ``jobs/notify``, one
wave at a time, listening to ``jobs/progress``. A wave ends when every device in it
has a final status or the wave timeout passes (a device that said nothing counts as
failed: an unreachable desk is not a success). After each wave, when at least
``min_executed`` devices have finished and the share that failed (``failed`` or
``rejected`` or silent) is above ``max_failure_rate``, the rollout stops: later waves
never get the job. Each device's retained job is cleared once it has answered.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch_contract import topics
from deskwatch_contract.cliargs import seconds, seconds_at_least, share
from deskwatch_contract.jobs import ENVELOPE_SCHEMA, FINAL, JOB_SCHEMA, TARGET_ID, parse_document
from deskwatch_contract.jsonutil import JsonRejected, dumps_bytes, loads_object
from deskwatch_contract.signing import seal

log = logging.getLogger(__name__)

Device = tuple[str, str]  # (site, device_id)
STATUS_TOPIC = re.compile(rf"^{topics.ROOT}/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/{topics.STATUS}$")


def make_job(
    job_id: str,
    kind: str,
    *,
    devices: Sequence[Device | str] = (),
    sites: Sequence[str] = (),
    fleet: bool = False,
    config_set: dict[str, Any] | None = None,
    artifact: dict[str, Any] | None = None,
    ttl: timedelta = timedelta(days=7),
    now: datetime | None = None,
) -> dict[str, Any]:
    """A job document, validated by the same rules the device applies.

    ``devices``: (site, device_id) pairs or ``"site/device_id"``: a device id is unique
    within its site only, so the document names both (a bare id is refused)."""
    issued = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    targets: dict[str, Any] = {"fleet": True} if fleet else {}
    if devices:
        targets["devices"] = [d if isinstance(d, str) else f"{d[0]}/{d[1]}" for d in devices]
    if sites:
        targets["sites"] = list(sites)
    doc: dict[str, Any] = {
        "schema": JOB_SCHEMA,
        "job_id": job_id,
        "kind": kind,
        "targets": targets,
        "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires_at": (issued + ttl).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if kind == "config":
        doc["config"] = {"set": dict(config_set or {})}
    elif artifact is not None:
        doc[kind] = dict(artifact)
    parse_document(doc, now=issued)  # raises JobInvalid: never sign what a device would refuse
    return doc


def plan_waves(targets: Sequence[Device], sizes: Sequence[int]) -> list[list[Device]]:
    """Targets cut into waves of ``sizes``; whatever is left forms the last wave."""
    waves, start = [], 0
    for size in sizes:
        if start >= len(targets):
            break
        waves.append(list(targets[start : start + size]))
        start += size
    if start < len(targets):
        waves.append(list(targets[start:]))
    return waves


@dataclass
class DeviceResult:
    status: str = "pending"  # pending, then the device's progress statuses
    step: str = ""
    detail: str = ""
    rolled_back: bool = False
    updates: int = 0


@dataclass
class WaveReport:
    number: int
    devices: int
    succeeded: int = 0
    failed: int = 0
    silent: int = 0
    seconds: float = 0.0


@dataclass
class RolloutReport:
    job_id: str
    waves: list[WaveReport] = field(default_factory=list)
    stopped: bool = False
    reason: str = ""
    not_started: int = 0
    results: dict[Device, DeviceResult] = field(default_factory=dict)

    @property
    def executed(self) -> int:
        return sum(w.succeeded + w.failed + w.silent for w in self.waves)

    @property
    def failures(self) -> int:
        return sum(w.failed + w.silent for w in self.waves)

    def lines(self) -> list[str]:
        out = []
        done = failed = 0
        for w in self.waves:
            done += w.succeeded + w.failed + w.silent
            failed += w.failed + w.silent
            out.append(
                f"wave {w.number}: {w.devices} devices, {w.succeeded} succeeded, {w.failed} failed, "
                f"{w.silent} silent in {w.seconds:.1f} s (failure rate so far {failed / max(done, 1):.0%})"
            )
        if self.stopped:
            out.append(f"STOPPED: {self.reason}; {self.not_started} devices never got the job")
        else:
            out.append(f"done: {self.executed - self.failures} of {self.executed} devices succeeded")
        return out


class Rollout:
    """One job, one MQTT connection: publish per wave, collect progress, stop on failures."""

    def __init__(
        self,
        client: mqtt.Client,
        document: dict[str, Any],
        private_pem: bytes,
        *,
        max_failure_rate: float = 0.1,
        min_executed: int = 5,
        wave_timeout: float = 600.0,
    ) -> None:
        if not 0.0 <= max_failure_rate < 1.0:
            raise ValueError("max_failure_rate must be from 0 to below 1")
        self.client = client
        self.document = document
        self.job_id = str(document["job_id"])
        self.envelope = dumps_bytes(seal(document, private_pem, ENVELOPE_SCHEMA))
        self.max_failure_rate = max_failure_rate
        self.min_executed = min_executed
        self.wave_timeout = wave_timeout
        self.results: dict[Device, DeviceResult] = {}
        self._changed = threading.Condition()
        self.ignored = 0

    # -- progress intake (paho's thread) ---------------------------------------------------------
    def on_progress(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 5 or "/".join(parts[-2:]) != topics.JOBS_PROGRESS:
            return
        device = (parts[2], parts[3])
        try:
            body = loads_object(payload, max_bytes=4096)
        except JsonRejected:
            self.ignored += 1
            return
        if body.get("job_id") != self.job_id or (body.get("site"), body.get("device_id")) != device:
            return  # another job's progress, or a device speaking for another
        with self._changed:
            result = self.results.get(device)
            if result is None or result.status in FINAL:
                return  # not targeted yet, or already final (a duplicate delivery)
            result.status = str(body.get("status", "pending"))
            result.step = str(body.get("step", ""))
            result.detail = str(body.get("detail", ""))
            result.rolled_back = bool(body.get("rolled_back"))
            result.updates += 1
            self._changed.notify_all()
        if result.status in FINAL:
            self._clear(device)

    def _notify_topic(self, device: Device) -> str:
        return topics.prefix(*device) + topics.JOBS_NOTIFY

    def _clear(self, device: Device) -> None:
        self.client.publish(self._notify_topic(device), b"", qos=1, retain=True)

    # -- the rollout --------------------------------------------------------------------------------
    def run(self, waves: Sequence[Sequence[Device]]) -> RolloutReport:
        report = RolloutReport(self.job_id, results=self.results)
        for number, wave in enumerate(waves, 1):
            started = time.monotonic()
            with self._changed:
                for device in wave:
                    self.results[device] = DeviceResult()
            for device in wave:
                self.client.publish(self._notify_topic(device), self.envelope, qos=1, retain=True)
            log.info("job %s wave %d: published to %d devices", self.job_id, number, len(wave))
            deadline = started + self.wave_timeout
            with self._changed:
                while not all(self.results[d].status in FINAL for d in wave):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(min(left, 1.0))
            w = WaveReport(number, len(wave), seconds=time.monotonic() - started)
            for device in wave:
                status = self.results[device].status
                if status == "succeeded":
                    w.succeeded += 1
                elif status in FINAL:
                    w.failed += 1
                else:
                    w.silent += 1
                    self._clear(device)  # it never answered: do not leave the job waiting for it
            report.waves.append(w)
            log.info(
                "job %s wave %d: %d succeeded, %d failed, %d silent",
                self.job_id,
                number,
                w.succeeded,
                w.failed,
                w.silent,
            )
            rate = report.failures / max(report.executed, 1)
            if report.executed >= self.min_executed and rate > self.max_failure_rate and number < len(waves):
                report.stopped = True
                report.not_started = sum(len(rest) for rest in waves[number:])
                report.reason = (
                    f"failure rate {rate:.0%} ({report.failures} of {report.executed}) is above "
                    f"{self.max_failure_rate:.0%} after wave {number}"
                )
                log.warning("job %s: %s", self.job_id, report.reason)
                break
        return report


def discover(client: mqtt.Client, received: Iterable[tuple[str, bytes]]) -> list[Device]:
    """Devices from retained ``status`` messages already received (site, device_id), sorted."""
    found = set()
    for topic, payload in received:
        m = STATUS_TOPIC.match(topic)
        if m and payload:
            found.add((m.group(1), m.group(2)))
    return sorted(found)


# -- the command: deskwatch-collector jobs start ... ---------------------------------------------------
def add_parser(sub: Any) -> None:
    p = sub.add_parser("jobs", help="start a signed remote job for a device, a site or the fleet, in waves")
    p.add_argument("action", choices=["start"])
    p.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT")
    p.add_argument("--ca-file", help="CA bundle: enables TLS")
    p.add_argument("--cert-file", help="client certificate (mutual TLS)")
    p.add_argument("--key-file", help="client key (mutual TLS)")
    p.add_argument("--signing-key", required=True, help="Ed25519 private key (PEM) the devices trust for jobs")
    p.add_argument("--job-id", default=None, help="default: <kind>-<UTC time>")
    p.add_argument("--kind", required=True, choices=["config", "model", "software"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config change (YAML value)")
    p.add_argument("--url", help="model/software: where the device downloads the artifact")
    p.add_argument("--sha256", help="model/software: the artifact's sha256")
    p.add_argument("--bytes", type=int, help="model/software: the artifact's size")
    p.add_argument("--file", help="model: the manifest file it replaces")
    p.add_argument("--version", help="software: the bundle's version")
    p.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="software: the version may be older than what the devices run (refused otherwise)",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", action="append", metavar="SITE/DEVICE", help="one device (repeatable)")
    target.add_argument("--site", action="append", help="every device of a site seen on the broker (repeatable)")
    target.add_argument("--fleet", action="store_true", help="every device seen on the broker")
    p.add_argument("--waves", default="1,5,25", help="wave sizes, the rest after them (default %(default)s)")
    p.add_argument("--max-failure-rate", type=share, default=0.1, help="stop above this share (default %(default)s)")
    p.add_argument("--min-executed", type=int, default=5, help="judge the rate only after this many devices")
    p.add_argument("--wave-timeout", type=seconds_at_least(1.0), default=600.0, help="seconds a wave may take")
    p.add_argument("--discover-seconds", type=seconds, default=3.0, help="time to collect retained status messages")


class BadArgument(ValueError):
    """A command-line argument that cannot be used; the message names it and says why."""


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` (the value is YAML: 3, true, [09:00, '15:00']) as a change."""
    import yaml

    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadArgument(f"--set {item!r}: expected KEY=VALUE")
        try:
            changes[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem", None) or "cannot be parsed"
            raise BadArgument(f"--set {item!r}: the value is not YAML ({where})") from None
    return changes


def parse_waves(text: str) -> list[int]:
    """``--waves 1,5,25``: positive wave sizes."""
    parts = [x.strip() for x in text.split(",") if x.strip()]
    if not parts or not all(x.isdigit() and int(x) > 0 for x in parts):
        raise BadArgument(f"--waves {text!r}: expected wave sizes such as 1,5,25 (whole numbers above 0)")
    return [int(x) for x in parts]


def parse_devices(items: Sequence[str]) -> list[Device]:
    """``--device SITE/DEVICE`` (a device id is unique within its site only)."""
    devices = []
    for item in items:
        site, sep, device_id = item.partition("/")
        if not sep or not TARGET_ID.fullmatch(site) or not TARGET_ID.fullmatch(device_id):
            raise BadArgument(f"--device {item!r}: expected SITE/DEVICE, e.g. acme/desk-0042 (letters, digits, _ -)")
        devices.append((site, device_id))
    return devices


def parse_broker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "1883"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BadArgument(f"--broker {text!r}: expected HOST:PORT, e.g. broker.example:8883")
    return host or "127.0.0.1", int(port)


def run_command(args: Any) -> int:
    from deskwatch_contract.jobs import JobInvalid

    try:  # every argument checked before anything connects
        host, port = parse_broker(str(args.broker))
        config_set = parse_set(args.set)
        sizes = parse_waves(str(args.waves))
        devices = parse_devices(args.device or [])
        if args.allow_downgrade and args.kind != "software":
            raise BadArgument("--allow-downgrade: only for --kind software")
    except BadArgument as exc:
        print(f"deskwatch-collector jobs: {exc}", file=sys.stderr)
        return 2
    artifact = None
    if args.kind != "config":
        artifact = {"url": args.url, "sha256": args.sha256, "bytes": args.bytes}
        artifact.update({"file": args.file} if args.kind == "model" else {"version": args.version})
        if args.kind == "software" and args.allow_downgrade:
            artifact["allow_downgrade"] = True
    job_id = args.job_id or f"{args.kind}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    try:
        doc = make_job(
            job_id,
            args.kind,
            devices=devices,
            sites=args.site or [],
            fleet=args.fleet,
            config_set=config_set,
            artifact=artifact,
        )
        private_pem = open(args.signing_key, "rb").read()  # noqa: SIM115 - read once
    except (JobInvalid, OSError) as exc:
        print(f"deskwatch-collector jobs: {exc}", file=sys.stderr)
        return 2
    statuses: list[tuple[str, bytes]] = []
    rollout_box: list[Rollout] = []

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/" + topics.STATUS):
            statuses.append((msg.topic, bytes(msg.payload)))
        elif rollout_box:
            rollout_box[0].on_progress(msg.topic, bytes(msg.payload))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"deskwatch-jobs-{job_id}"[:64], protocol=mqtt.MQTTv5)
    if args.ca_file:
        client.tls_set(ca_certs=args.ca_file, certfile=args.cert_file, keyfile=args.key_file)
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ValueError) as exc:
        print(f"deskwatch-collector jobs: cannot reach the broker {args.broker}: {exc}", file=sys.stderr)
        return 69
    client.loop_start()
    try:
        client.subscribe(f"{topics.ROOT}/+/+/{topics.JOBS_PROGRESS}", qos=1)
        if devices:
            targets = sorted(set(devices))
        else:
            for site in args.site or ["+"]:
                client.subscribe(f"{topics.ROOT}/{site}/+/{topics.STATUS}", qos=1)
            time.sleep(args.discover_seconds)
            targets = discover(client, list(statuses))
        if not targets:
            print("deskwatch-collector jobs: no target device found", file=sys.stderr)
            return 1
        rollout = Rollout(
            client,
            doc,
            private_pem,
            max_failure_rate=args.max_failure_rate,
            min_executed=args.min_executed,
            wave_timeout=args.wave_timeout,
        )
        rollout_box.append(rollout)
        report = rollout.run(plan_waves(targets, sizes))
    finally:
        client.loop_stop()
        client.disconnect()
    print(f"job {job_id} ({args.kind}) to {len(targets)} devices")
    for line in report.lines():
        print(line)
    return 1 if report.stopped or report.failures else 0
