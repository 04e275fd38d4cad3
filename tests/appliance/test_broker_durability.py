"""What the shipped Mosquitto keeps when it dies, as broker/README.md states it: with the
persistence lines of broker/mosquitto-fleet.conf, a message the broker acknowledged to a
device (which then deletes it from its outbox) and still holds for the collector's
persistent session survives a clean stop and a kill -9 after the broker's next save,
and is lost by a kill -9 before it. Mosquitto's save is the same for its autosave tick
and for SIGUSR1, which stands in for the tick here (autosave_interval is 60 s).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from deskwatch_dev.devservers import MOSQUITTO, free_port, stop_process, wait_port
from tests.support.common import REPO

pytestmark = [pytest.mark.broker]

CONF = REPO / "broker" / "mosquitto-fleet.conf"
README = REPO / "broker" / "README.md"
TOPIC = "deskwatch/v1/acme/desk-a/event"


def persistence_lines() -> list[str]:
    return [ln for ln in CONF.read_text().splitlines() if ln.startswith(("persistence", "autosave", "max_queued"))]


class ShippedBroker:
    """A plain loopback listener with the shipped persistence settings (paths swapped)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"log_dest file {work}/log"]
        lines += [ln.replace("/var/lib/mosquitto/", f"{work}/") for ln in persistence_lines()]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        (work / "m.conf").write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Path:
        return self.work / "mosquitto.db"

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.work / "m.conf")])
        wait_port(self.port, 10, self.proc)

    def end(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)
        self.proc = None

    def save(self) -> None:
        """Mosquitto's save, as at its autosave tick."""
        assert self.proc is not None
        before = self.db.stat().st_mtime_ns if self.db.exists() else None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while (self.db.stat().st_mtime_ns if self.db.exists() else None) == before:
            assert time.monotonic() < deadline, "Mosquitto did not save"
            time.sleep(0.02)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ShippedBroker]:
    b = ShippedBroker(tmp_path)
    b.start()
    yield b
    stop_process(b.proc)


def collector_session(port: int, seconds: float) -> list[str]:
    """The collector's persistent session (as collector/mqtt.py opens it): what it gets."""
    got: list[str] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="collector-1", protocol=mqtt.MQTTv5)
    c.on_message = lambda client, userdata, msg: got.append(msg.payload.decode())
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    c.subscribe(TOPIC, qos=1)
    time.sleep(seconds)
    c.disconnect()
    c.loop_stop()
    return got


def publish_acked(port: int, numbers: range) -> None:
    """A device publishes at QoS 1; every one is PUBACKed (its outbox would delete it now)."""
    d = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acme/desk-a", protocol=mqtt.MQTTv5)
    d.connect("127.0.0.1", port)
    d.loop_start()
    try:
        for n in numbers:
            info = d.publish(TOPIC, f"event {n}", qos=1)
            info.wait_for_publish(5)
            assert info.is_published(), f"event {n} not acknowledged"
    finally:
        d.disconnect()
        d.loop_stop()


def events(got: list[str]) -> set[int]:
    return {int(p.split()[1]) for p in got}


@pytest.mark.slow
def test_what_a_broker_crash_keeps_of_what_it_acknowledged(broker: ShippedBroker) -> None:
    collector_session(broker.port, 0.5)  # subscribed, then away (restarting, its database down)
    publish_acked(broker.port, range(1, 11))
    broker.save()
    publish_acked(broker.port, range(11, 21))  # acknowledged after the last save
    broker.end(signal.SIGKILL)  # the OOM killer, a power cut
    broker.start()
    assert events(collector_session(broker.port, 3)) == set(range(1, 11)), "11-20 are lost, 1-10 kept"

    collector_session(broker.port, 0.5)
    publish_acked(broker.port, range(21, 31))
    broker.end(signal.SIGTERM)  # systemctl stop / restart: Mosquitto saves first
    broker.start()
    assert events(collector_session(broker.port, 3)) == set(range(21, 31))


def test_the_readme_states_the_window_of_the_shipped_settings() -> None:
    """broker/README.md and the contract name the shipped save interval and what a crash loses."""
    (interval,) = [int(m) for m in re.findall(r"^autosave_interval (\d+)$", CONF.read_text(), re.M)]
    assert not any(ln.startswith("autosave_on_changes") for ln in persistence_lines())
    readme = README.read_text()
    section = readme[readme.index("## Durability") :]
    assert f"`autosave_interval {interval}`" in section and "kill -9" in section
    assert "tests/appliance/test_broker_durability.py" in section
    contract = (REPO / "docs" / "mqtt-contract.md").read_text()
    assert f"the last {interval} s" in contract and "broker/README.md#durability" in contract
