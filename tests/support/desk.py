"""Fixtures for the workstation companion: a virtual X display, a stand-in appliance, configs.

- ``xvfb``: an Xvfb server on a free display (``-displayfd``), with ``xvfb.env``
  (the environment with ``DISPLAY`` set), ``xvfb.run(*argv)`` for X clients
  (xdotool, import) and ``xvfb.screenshot(path)``.
- ``desk_config``: factory ``desk_config(broker, **mqtt_extra) -> Path`` writing an
  appliance-format config for the companion.
- :class:`FakeAppliance`: answers ``cmd/pause`` / ``cmd/resume`` / ``activity`` on
  ``cmd/result`` (``answer`` decides: "ok", "refuse", "malformed", "silent") and
  publishes ``scan`` and ``event`` payloads built with the contract's builders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.common import REPO

ARTIFACTS = REPO / "test-artifacts"


@dataclass
class Xvfb:
    display: str
    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=20, check=check)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.run("import", "-window", "root", str(path))
        return path


@pytest.fixture(scope="session")
def xvfb() -> Iterator[Xvfb]:
    """One X server for the whole session: Tk keeps its display connection open after its
    windows are destroyed, and Xlib ends the process if that server goes away under it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Xvfb tests run on Linux")
    missing = [tool for tool in ("Xvfb", "xdotool", "import") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: apt install xvfb xdotool imagemagick (tools/bootstrap.sh)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as fh:
            number = fh.readline().strip()
        if not number:
            raise RuntimeError(f"Xvfb did not start (exit {proc.poll()})")
        env = dict(os.environ, DISPLAY=f":{number}")
        env.pop("WAYLAND_DISPLAY", None)
        yield Xvfb(f":{number}", proc, env)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


DESK_CONFIG = """\
# The companion's own desk.yaml: which appliance, and its own broker credentials.
device: {{id: {device_id}, site: acme}}
mqtt:
  host: 127.0.0.1
  port: {port}
  reconnect_min_seconds: 0.1
  reconnect_max_seconds: 1.0
  connect_timeout_seconds: 3
  tls: {tls}
{credentials}"""


@pytest.fixture
def desk_config(tmp_path: Path) -> Callable[..., Path]:
    def write(
        broker: Any,
        *,
        device_id: str = "desk-a",
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> Path:
        path = tmp_path / f"desk-{device_id}.yaml"
        tls = "{enabled: false}"
        if broker is not None and broker.tls:
            tls = f"{{enabled: true, ca_file: {broker.pki.ca_crt}}}"
        credentials = ""
        if username:
            secret = tmp_path / f"{username}.password"
            secret.write_text((password or "") + "\n")
            secret.chmod(0o600)
            credentials = f"  username: {username}\n  password_file: {secret}\n"
        path.write_text(
            DESK_CONFIG.format(device_id=device_id, port=port or broker.port, tls=tls, credentials=credentials)
        )
        return path

    return write


class FakeAppliance:
    """Stands in for the daemon on the broker: answers commands, publishes scans and events."""

    def __init__(
        self,
        broker: Any,
        *,
        device_id: str = "desk-a",
        site: str = "acme",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        from deskwatch.config import load_config_text

        self.cfg = load_config_text(f"device: {{id: {device_id}, site: {site}, worker_id: w-1}}\n")
        self.prefix = f"deskwatch/v1/{site}/{device_id}/"
        self.answer = "ok"
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=device_id)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(self.prefix + t, 1) for t in ("cmd/pause", "cmd/resume", "activity")]
        )
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.pki.ca_crt))
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise TimeoutError("fake appliance did not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        from deskwatch.delivery.payloads import result_payload
        from deskwatch_contract.intake import CommandIntake, kind_for_topic

        kind = kind_for_topic(msg.topic[len(self.prefix) :])
        body = json.loads(msg.payload)
        with self.cond:
            self.received.append((kind, body))
            self.cond.notify_all()
        if self.answer == "silent":
            return
        if self.answer == "malformed":
            self.publish(
                "cmd/result",
                {"schema": "deskwatch.cmd.result/1", "request_id": body.get("request_id"), "ok": "yes"},
                wait=False,
            )
            self.publish("cmd/result", b"\xff not json", wait=False)
            return
        # The appliance's own intake decides (validation), the answer mode can force a refusal.
        result = CommandIntake(handler=lambda k, b: None).handle(kind, bytes(msg.payload))
        ok, error = result.ok, result.error
        if self.answer == "refuse":
            ok, error = False, "pauses are not allowed during the team meeting"
        self.publish("cmd/result", result_payload(result.request_id, kind, ok, error), wait=False)

    def publish(self, suffix: str, payload: dict[str, Any] | bytes, *, wait: bool = True) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(self.prefix + suffix, data, qos=1)
        if wait:  # never from paho's own callbacks: the network thread would wait for itself
            info.wait_for_publish(5)

    def publish_scan(self, findings: tuple[str, ...] = (), *, evidence: bytes | None = None) -> None:
        from deskwatch.app import payload_source
        from deskwatch.delivery.payloads import event_payload, scan_payload
        from deskwatch.domain import CheckOutcome, Finding, ScanRecord, new_id, utcnow

        now = utcnow()
        record = ScanRecord(scan_id=new_id(now), trigger="schedule", started_at=now, finished_at=now, frames=3)
        record.checks = [
            CheckOutcome(r, "violation" if r in findings else "pass") for r in ("away_from_desk", "phone_use", "eating")
        ]
        record.findings = [Finding(f, 0.87, 0, detail=f"{f.replace('_', ' ')} in 3 of 3 frames") for f in findings]
        self.publish("scan", scan_payload(payload_source(self.cfg), record))
        for finding in record.findings:

            @dataclass
            class Ev:
                jpeg: bytes
                width: int = 160
                height: int = 120
                sha256: str = "0" * 64

            ev = Ev(evidence) if evidence is not None else None
            payload = event_payload(payload_source(self.cfg), finding, record, ev, None if ev else "not_allowed")
            self.publish("event", payload)
            if evidence is not None:
                self.publish(f"evidence/{payload['event_id']}", evidence)

    def wait_received(self, n: int, timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < n and time.monotonic() < deadline:
                self.cond.wait(0.1)
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def make_fake_appliance() -> Iterator[Callable[[Any], FakeAppliance]]:
    made: list[FakeAppliance] = []

    def make(broker: Any, **kwargs: Any) -> FakeAppliance:
        made.append(FakeAppliance(broker, **kwargs))
        return made[-1]

    yield make
    for appliance in made:
        appliance.close()


@pytest.fixture
def fake_appliance(mosquitto: Any) -> Iterator[FakeAppliance]:
    appliance = FakeAppliance(mosquitto)
    yield appliance
    appliance.close()
