"""status names the desk (serial, IP) and says everything that keeps it from being covered."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from deskwatch.app import Daemon, Parts, build_delivery
from deskwatch.camera.fake import FakeCamera
from deskwatch.config import load_config
from deskwatch.system import clock as clock_mod
from deskwatch.system.clock import ClockSync
from deskwatch.system.device_info import serial_number
from deskwatch_contract import load_schema
from tests.support.common import FakeClock
from tests.support.fakes import RecordingDelivery, ScriptedVision, SilentNotifier
from tests.support.mosquitto import Broker, Collector


def test_serial_number_from_the_device_tree_or_cpuinfo(tmp_path: Path) -> None:
    dt = tmp_path / "serial-number"
    dt.write_bytes(b"10000000a1b2c3d4\0")
    assert serial_number(tmp_path / "none", (dt,)) == "10000000a1b2c3d4"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nHardware\t: BCM2835\nSerial\t\t: 00000000deadbeef\n")
    assert serial_number(cpuinfo, (tmp_path / "none",)) == "00000000deadbeef"
    assert serial_number(tmp_path / "none", ()) is None


def test_reasons_include_an_unsynced_clock_and_a_worker_not_enrolled(
    write_config: Callable[..., Path], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.synced = False
    cfg = load_config(write_config("policy: {profile: full}"))
    delivery, notifier = RecordingDelivery(), SilentNotifier()
    daemon = Daemon(
        cfg,
        clock=clock,
        parts=Parts(camera=FakeCamera(frames=[]), vision=ScriptedVision(), delivery=delivery, notifier=notifier),
    )
    assert daemon.reasons() == [
        "clock: not synchronised, no scans until it is (schedule.require_synced_clock)",
        "identity: worker w-1 not enrolled (deskwatch enroll)",
    ]
    daemon._heartbeat()
    assert delivery.degraded == "; ".join(daemon.reasons())
    # systemctl status says the same as the status message, not the camera alone
    assert notifier.sent[-1].endswith("DEGRADED: " + "; ".join(daemon.reasons()))
    clock.synced = True
    templates = Path(cfg.state_dir) / "templates"
    templates.mkdir(mode=0o700, exist_ok=True)
    (templates / "w-1.npz").write_bytes(b"enrolled")
    assert daemon.reasons() == []
    # enrolled, but the vision stage cannot use the templates (another backend): said, not silent
    daemon.vision.identity_problem = "the templates are from another backend or model: enrol worker w-1 again"  # type: ignore[attr-defined]
    assert daemon.reasons() == [
        "identity: off, the templates are from another backend or model: enrol worker w-1 again"
    ]


def test_systemctl_status_says_the_day_of_a_next_scan_that_is_not_today(write_config: Callable[..., Path]) -> None:
    """Friday after the shift, the next scan is Monday's: STATUS= says so, not a bare time
    an operator reads as this evening's or tomorrow's."""
    shifts = '{timezone: Europe/London, mode: interval, interval_seconds: 600, shifts: [{days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}]}'
    cfg = load_config(write_config(f"schedule: {shifts}"))
    clock = FakeClock(datetime(2026, 12, 4, 17, 30, tzinfo=UTC))  # Friday evening
    parts = Parts(camera=FakeCamera(frames=[]), vision=ScriptedVision(), delivery=RecordingDelivery(),
                  notifier=SilentNotifier())  # fmt: skip
    daemon = Daemon(cfg, clock=clock, parts=parts)
    assert daemon.planner.plan() == datetime(2026, 12, 7, 9, 10, tzinfo=UTC)
    assert daemon.status_text().startswith("next scan Mon 2026-12-07 09:10:00 GMT · ")
    clock.advance(3 * 86400 - 8 * 3600 - 20 * 60)  # Monday 09:10, the scan is due: the next is today's
    daemon.planner.plan()
    assert daemon.status_text().startswith("next scan 09:20:00 GMT · ")


def test_the_system_clock_asks_the_time_service_at_most_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    from deskwatch import schedule

    answers = iter([ClockSync(False, "timesyncd", "no flag yet"), ClockSync(True, "timesyncd", "flag")])
    asked: list[bool] = []

    def ask(**_kw: object) -> ClockSync:
        asked.append(True)
        return next(answers)

    monotonic = [100.0]
    monkeypatch.setattr(clock_mod, "clock_sync", ask)
    monkeypatch.setattr(schedule.time, "monotonic", lambda: monotonic[0])
    system = schedule.SystemClock()
    assert system.synchronised() is False
    monotonic[0] += 59
    assert system.synchronised() is False and len(asked) == 1
    monotonic[0] += 2
    assert system.synchronised() is True and len(asked) == 2


def test_the_daemons_unit_cannot_read_the_kernel_clock_but_timesyncd_tells(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """adjtimex is refused in deskwatch.service (ProtectClock): no flag + timesyncd = not synchronised."""
    monkeypatch.setattr(clock_mod, "kernel_clock_synchronised", lambda: (None, "adjtimex failed (errno 1)"))
    monkeypatch.setattr(clock_mod, "TIMESYNCD_FLAG", tmp_path / "synchronized")
    binary = tmp_path / "systemd-timesyncd"
    monkeypatch.setattr(clock_mod, "TIMESYNCD", (binary,))
    assert clock_mod.clock_sync().synced is None  # no timesyncd: cannot tell
    binary.write_text("")
    assert clock_mod.clock_sync().synced is False
    (tmp_path / "synchronized").write_text("")
    assert clock_mod.clock_sync().synced is True


@pytest.mark.broker
def test_status_carries_serial_ip_and_reasons(write_config: Callable[..., Path], mosquitto: Broker) -> None:
    cfg = load_config(
        write_config(
            f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, tls: {{enabled: false}}, reconnect_max_seconds: 1}}"
        )
    )
    listener = Collector(mosquitto, f"deskwatch/v1/{cfg.device.site}/{cfg.device.id}/status")
    delivery = build_delivery(cfg, models={})
    delivery.serial = "10000000a1b2c3d4"
    delivery.start()
    try:
        assert delivery.wait_first_attempt(10)
        delivery.set_degraded(
            ["clock: not synchronised (event times may be wrong)", "identity: worker w-1 not enrolled"]
        )
        assert listener.wait_for(lambda got: any(json.loads(m.payload)["state"] == "degraded" for m in got), 10)
        # a model job swapped a model: the fleet sees the new hash at once, not at the next restart
        delivery.set_models({"nanodet_g416_int8.tflite": "ab" * 32})
        assert listener.wait_for(lambda got: any(json.loads(m.payload)["models"] for m in got), 10)
    finally:
        delivery.stop()
        listener.close()
    status = next(json.loads(m.payload) for m in listener.messages if json.loads(m.payload)["state"] == "degraded")
    jsonschema.validate(status, load_schema("status"))
    assert (status["serial"], status["ip"]) == ("10000000a1b2c3d4", "127.0.0.1")
    assert status["reasons"] == [
        "clock: not synchronised (event times may be wrong)",
        "identity: worker w-1 not enrolled",
    ]
    after = [json.loads(m.payload) for m in listener.messages if json.loads(m.payload)["models"]]
    assert [(m["state"], m["models"]) for m in after] == [  # then the goodbye says the same
        ("degraded", {"nanodet_g416_int8.tflite": "ab" * 32}),
        ("offline", {"nanodet_g416_int8.tflite": "ab" * 32}),
    ]


def test_a_long_reason_is_shortened_to_what_the_schema_allows() -> None:
    """A camera's error text can be long; status must stay valid for every consumer."""
    from datetime import UTC, datetime

    from deskwatch.delivery.payloads import Source, status_payload

    long = "camera: " + "x" * 400
    payload = status_payload(
        Source("acme", "desk-a", "w-1", "full"), state="degraded", session=1, version="1",
        models={}, since=datetime(2026, 11, 29, tzinfo=UTC), reasons=[long, "clock: not synchronised"],
    )  # fmt: skip
    jsonschema.validate(payload, load_schema("status"))
    assert len(payload["reasons"][0]) == 200 and payload["reasons"][0].startswith("camera: xxx")
    assert payload["reasons"][1] == "clock: not synchronised"
