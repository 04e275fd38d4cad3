"""A config job rolled out in waves to 100 simulated devices over a real Mosquitto, stopped
when the failure rate passes the threshold; the devices run the appliance's own job code."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch.config import load_config
from deskwatch_collector.jobs import Rollout, discover, make_job, plan_waves
from deskwatch_contract import topics
from deskwatch_contract.jobs import JobInvalid
from deskwatch_contract.signing import generate_key
from deskwatch_dev.jobfleet import SimFleet
from tests.support.mosquitto import Broker

CHANGE = {"schedule.mode": "random", "schedule.scans_per_hour": 3}


def profiles(n: int = 100) -> list[str]:
    """The first 40 desks run the full profile; after that every third one is in the UK,
    where random scans are not allowed: the change is invalid there."""
    return ["uk" if i >= 40 and i % 3 == 0 else "full" for i in range(n)]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[bytes, Path]:
    private, public = generate_key()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "collector.pub").write_bytes(public)
    return private, tmp_path / "keys"


def rollout_client(broker: Broker, seen: list[tuple[str, bytes]], box: list[Rollout]) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="collector-jobs", protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/status"):
            seen.append((msg.topic, bytes(msg.payload)))
        elif box:
            box[0].on_progress(msg.topic, bytes(msg.payload))

    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.subscribe(f"{topics.ROOT}/+/+/{topics.JOBS_PROGRESS}", qos=1)
    client.subscribe(f"{topics.ROOT}/+/+/{topics.STATUS}", qos=1)
    return client


@pytest.mark.timeout(240)
def test_a_rollout_to_100_devices_stops_at_the_failure_threshold(
    tmp_path: Path, mosquitto: Broker, keys: tuple[bytes, Path]
) -> None:
    fleet = SimFleet(tmp_path / "fleet", mosquitto.port, keys[1], profiles())
    fleet.start()
    seen: list[tuple[str, bytes]] = []
    box: list[Rollout] = []
    client = rollout_client(mosquitto, seen, box)
    try:
        deadline = time.monotonic() + 20
        while len(discover(client, list(seen))) < 100 and time.monotonic() < deadline:
            time.sleep(0.2)
        found = discover(client, list(seen))
        assert len(found) == 100  # every device, from its retained status
        order = sorted(found, key=lambda d: d[1])  # desk-000 ... desk-099
        doc = make_job("cfg-random-3", "config", fleet=True, config_set=CHANGE)
        rollout = Rollout(client, doc, keys[0], max_failure_rate=0.10, min_executed=10, wave_timeout=60)
        box.append(rollout)
        t0 = time.monotonic()
        report = rollout.run(plan_waves(order, [5, 10, 25, 30]))
        elapsed = time.monotonic() - t0
    finally:
        client.loop_stop()
        client.disconnect()
        fleet.stop()
    print("\n".join(report.lines()) + f"\n(rollout took {elapsed:.1f} s)")
    assert [(w.devices, w.succeeded, w.failed, w.silent) for w in report.waves] == [
        (5, 5, 0, 0),
        (10, 10, 0, 0),
        (25, 25, 0, 0),
        (30, 20, 10, 0),  # desks 42, 45, ... 69 are uk: 10 of 70 = 14 % > 10 %
    ]
    assert report.stopped and report.not_started == 30 and "after wave 4" in report.reason
    by_id = {d.device_id: d for d in fleet.devices.values()}
    for i in range(100):
        device = by_id[f"desk-{i:03d}"]
        cfg = yaml.safe_load(device.config.read_text())
        result = report.results.get((device.site, device.device_id))
        if i >= 70:  # the last wave never got the job
            assert result is None and cfg["schedule"]["mode"] in ("interval", "fixed")
            assert not (device.state_dir / "jobs").exists()
        elif device.profile == "uk":  # validated like check-config: refused, nothing changed
            assert result is not None and result.status == "rejected"
            assert "uk profile allows no random scans" in result.detail
            assert cfg["schedule"]["mode"] == "fixed"
        else:
            assert result is not None and result.status == "succeeded", (i, result)
            assert cfg["schedule"] == {"mode": "random", "interval_seconds": 300, "scans_per_hour": 3}
            assert load_config(device.config).schedule.mode == "random"  # what the daemon reads
            assert (device.config.parent / "config.yaml.previous").exists()


def test_the_collector_never_signs_a_job_a_device_would_refuse() -> None:
    with pytest.raises(JobInvalid, match="cannot be changed remotely"):
        make_job("j1", "config", devices=["acme/desk-1"], config_set={"device.id": "someone-else"})
    with pytest.raises(JobInvalid, match="cannot be changed remotely"):
        make_job("j2", "config", sites=["acme"], config_set={"mqtt.tls.key_file": "/tmp/k"})
    with pytest.raises(JobInvalid, match="expires_at"):
        make_job("j3", "config", fleet=True, config_set=CHANGE, ttl=timedelta(seconds=0))
    software = {"url": "https://updates.example/u.bundle", "sha256": "0" * 64, "bytes": 1, "version": "0.3.0"}
    with pytest.raises(JobInvalid, match="allow_downgrade must be true or false"):
        make_job("j5", "software", fleet=True, artifact={**software, "allow_downgrade": "yes"})
    doc = make_job(
        "j4", "config", devices=[("acme", "desk-1")], config_set=CHANGE, now=datetime(2026, 11, 29, tzinfo=UTC)
    )
    assert doc["expires_at"] == "2026-12-06T00:00:00Z" and doc["targets"] == {"devices": ["acme/desk-1"]}
    with pytest.raises(JobInvalid, match="site/device"):  # which desk-1? one at every site
        make_job("j6", "config", devices=["desk-1"], config_set=CHANGE)


def test_waves_take_the_rest_last() -> None:
    devices = [("s", f"d{i}") for i in range(12)]
    assert [len(w) for w in plan_waves(devices, [1, 5])] == [1, 5, 6]
    assert [len(w) for w in plan_waves(devices[:3], [1, 5, 25])] == [1, 2]


@pytest.mark.timeout(120)
def test_the_command_finds_a_sites_devices_and_rolls_out(
    tmp_path: Path, mosquitto: Broker, keys: tuple[bytes, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from deskwatch_collector.cli import main

    fleet = SimFleet(tmp_path / "fleet", mosquitto.port, keys[1], ["full"] * 8, sites=2)
    fleet.start()
    (tmp_path / "jobs.pem").write_bytes(keys[0])
    try:
        code = main(
            [
                "jobs", "start", "--broker", f"127.0.0.1:{mosquitto.port}", "--signing-key", str(tmp_path / "jobs.pem"),
                "--kind", "config", "--set", "schedule.interval_seconds=600", "--site", "site-1",
                "--waves", "1,2", "--job-id", "cfg-600", "--discover-seconds", "1.5",
            ]
        )  # fmt: skip
    finally:
        fleet.stop()
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines() == [
        "job cfg-600 (config) to 4 devices",
        *[line for line in out.splitlines() if line.startswith("wave ")],
        "done: 4 of 4 devices succeeded",
    ]
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("wave ")] == [
        "wave 1",
        "wave 2",
        "wave 3",
    ]
    changed = {d.device_id for d in fleet.devices.values() if "600" in d.config.read_text()}
    assert changed == {d.device_id for d in fleet.devices.values() if d.site == "site-1"}


@pytest.mark.timeout(120)
def test_the_command_signs_a_device_with_its_site(
    tmp_path: Path, mosquitto: Broker, keys: tuple[bytes, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--device SITE/DEVICE: the signed document names the site too, so a desk of the same
    name at another site refuses the job even if it reached its jobs/notify."""
    import base64
    import json

    from deskwatch_collector.cli import main
    from tests.support.mosquitto import Collector

    fleet = SimFleet(tmp_path / "fleet", mosquitto.port, keys[1], ["full"] * 2, sites=2)
    fleet.start()
    notify = Collector(mosquitto, f"{topics.ROOT}/+/+/{topics.JOBS_NOTIFY}")
    (tmp_path / "jobs.pem").write_bytes(keys[0])
    try:
        code = main(
            [
                "jobs", "start", "--broker", f"127.0.0.1:{mosquitto.port}", "--signing-key", str(tmp_path / "jobs.pem"),
                "--kind", "config", "--set", "schedule.interval_seconds=600", "--device", "site-1/desk-001",
                "--job-id", "cfg-one", "--wave-timeout", "20",
            ]
        )  # fmt: skip
        assert notify.wait_for(lambda got: any(m.payload for m in got), 10)
    finally:
        fleet.stop()
        notify.close()
    assert code == 0, capsys.readouterr()
    envelope = json.loads(next(m.payload for m in notify.messages if m.payload))
    assert json.loads(base64.b64decode(envelope["document"]))["targets"] == {"devices": ["site-1/desk-001"]}
    changed = {(d.site, d.device_id) for d in fleet.devices.values() if "600" in d.config.read_text()}
    assert changed == {("site-1", "desk-001")}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "schedule.fixed_times=[09:00"], "--set 'schedule.fixed_times=[09:00': the value is not YAML"),
        (["--set", "=3"], "--set '=3': expected KEY=VALUE"),
        (["--waves", "1,x"], "--waves '1,x': expected wave sizes such as 1,5,25"),
        (["--waves", "1,0"], "--waves '1,0': expected wave sizes such as 1,5,25"),
        (["--device", "desk-1"], "--device 'desk-1': expected SITE/DEVICE"),
        (["--device", "acme/desk 1"], "--device 'acme/desk 1': expected SITE/DEVICE"),
        (["--broker", "127.0.0.1:port"], "--broker '127.0.0.1:port': expected HOST:PORT"),
    ],
)
def test_the_command_names_a_bad_argument_before_it_connects(
    tmp_path: Path, keys: tuple[bytes, Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Exit 2 with the argument and what is wrong with it - no traceback, no broker needed
    (nothing listens on the port: a command that got as far as connecting would exit 69)."""
    import socket

    from deskwatch_collector.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    (tmp_path / "jobs.pem").write_bytes(keys[0])
    base = {"--set": "schedule.scans_per_hour=3", "--device": "acme/desk-1", "--broker": f"127.0.0.1:{free}"}
    for flag, value in base.items():
        if flag not in args:
            args = [*args, flag, value]
    code = main(["jobs", "start", "--kind", "config", "--signing-key", str(tmp_path / "jobs.pem"), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
