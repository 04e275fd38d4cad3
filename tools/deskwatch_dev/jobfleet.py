"""Simulated devices for job rollouts: the real device-side job code, many devices, one connection.

Each :class:`SimDevice` has its own config file and state directory and runs the
appliance's own :class:`deskwatch.jobs.agent.JobAgent` (signature, expiry, target,
progress) and root-side :func:`deskwatch.jobs.executor.run_queued` (validation exactly
like ``check-config``, the atomic swap, the rollback); only systemd is simulated (the
daemon always comes back READY). The devices share one MQTT connection to the real
broker: the broker still routes every device's retained job and progress.

Devices on the ``uk`` profile refuse a change to random scans (the profile forbids
them): a fleet with a share of them makes a rollout fail the way a real one would.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch.jobs.agent import JobAgent
from deskwatch.jobs.executor import Services, run_queued
from deskwatch_contract import topics
from deskwatch_contract.jsonutil import dumps_bytes

FRAMES = Path(__file__).resolve().parents[2] / "demo" / "frames"  # never opened: the camera is not used
CONFIGS = {
    "full": "policy: {profile: full}\nschedule: {mode: interval, interval_seconds: 300}\n",
    "uk": "policy: {profile: uk}\nschedule: {mode: fixed, fixed_times: ['10:00', '15:00']}\n",
}


class ReadyServices(Services):
    """systemd as a healthy device shows it: every restart comes back READY at once."""

    def restart(self, unit: str) -> None:
        pass

    def state(self, unit: str) -> dict[str, str]:
        return {"ActiveState": "active", "SubState": "running", "MainPID": "100", "NRestarts": "0"}

    def sleep(self, seconds: float) -> None:
        self._t = getattr(self, "_t", 0.0) + seconds

    def monotonic(self) -> float:
        return getattr(self, "_t", 0.0)


@dataclass
class SimDevice:
    site: str
    device_id: str
    profile: str
    state_dir: Path
    config: Path
    agent: JobAgent


class SimFleet:
    def __init__(self, root: Path, port: int, keys_dir: Path, profiles: list[str], *, sites: int = 4) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="deskwatch-sim-fleet", protocol=mqtt.MQTTv5)
        self.port = port
        self.devices: dict[str, SimDevice] = {}
        self._work: queue.Queue[tuple[SimDevice, bytes] | None] = queue.Queue()
        for i, profile in enumerate(profiles):
            site, device_id = f"site-{i % sites}", f"desk-{i:03d}"
            state = root / device_id
            state.mkdir(parents=True)
            state.chmod(0o700)
            config = state / "config.yaml"
            config.write_text(
                f"device: {{id: {device_id}, site: {site}, worker_id: w-{i}}}\nstate_dir: {state}\n"
                f"mqtt: {{host: 127.0.0.1, port: {port}, tls: {{enabled: false}}}}\n"
                f"camera: {{backend: replay, source: {FRAMES}}}\n" + CONFIGS[profile]
            )
            config.chmod(0o640)
            prefix = topics.prefix(site, device_id)

            def publish(payload: dict[str, Any], topic: str = prefix + topics.JOBS_PROGRESS) -> None:
                self._publish(topic, payload)

            agent = JobAgent(
                site=site,
                device_id=device_id,
                version="sim",
                state_dir=state,
                publish=publish,
                models_dir=state / "models",
                keys_dir=keys_dir,
            )
            self.devices[prefix + topics.JOBS_NOTIFY] = SimDevice(site, device_id, profile, state, config, agent)
        self.keys_dir = keys_dir
        self.client.on_message = self._on_message
        self._worker = threading.Thread(target=self._run, name="sim-fleet", daemon=True)

    def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        self.client.publish(topic, dumps_bytes(payload), qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device = self.devices.get(msg.topic)
        if device is not None:
            self._work.put((device, bytes(msg.payload)))

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            device, payload = item
            device.agent.handle_notify(payload)
            run_queued(device.state_dir, device.config, keys_dir=self.keys_dir, services=ReadyServices(), settle=2.0)
            device.agent.tick()

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        self._worker.start()
        for topic, device in self.devices.items():
            self.client.subscribe(topic, qos=1)
            status = {"schema": "deskwatch.status/1", "site": device.site, "device_id": device.device_id}
            self.client.publish(
                topics.prefix(device.site, device.device_id) + topics.STATUS, dumps_bytes(status), 1, True
            )

    def stop(self) -> None:
        self._work.put(None)
        self._worker.join(30)
        self.client.loop_stop()
        self.client.disconnect()
