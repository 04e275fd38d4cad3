"""Config: strict validation, every error at once with its line, exit 78, the example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deskwatch.cli import main
from deskwatch.config import ConfigError, load_config, load_config_text
from deskwatch.config.example import example_text
from tests.support.common import REPO
from tests.support.service import ServiceUser


def errors_of(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "test.yaml")
    return [(i.line, i.key, i.message) for i in info.value.issues]


def test_example_config_is_current_and_valid() -> None:
    committed = (REPO / "config.example.yaml").read_text()
    assert committed == example_text(), (
        "config.example.yaml is stale: run 'deskwatch example-config -o config.example.yaml'"
    )
    cfg = load_config(REPO / "config.example.yaml")
    assert cfg.mqtt.tls.enabled is True  # TLS by default
    assert cfg.evidence.retention_days <= 20


def test_an_unknown_distance_below_the_tolerance_is_refused_in_words() -> None:
    base = "device: {id: d1, site: s1, worker_id: w1}\nmqtt: {host: localhost}\n"
    issues = errors_of(base + "vision: {identity_tolerance: 0.6, identity_unknown_distance: 0.5}\n")
    assert issues == [
        (
            3,
            "vision.identity_unknown_distance",
            "0.5 is below identity_tolerance (0.6): it must be at least as large (a face between the two is "
            "judged neither way); raise it or lower the tolerance",
        )
    ]
    # equal: the band switched off, every face is the worker or somebody else
    cfg = load_config_text(base + "vision: {identity_tolerance: 0.6, identity_unknown_distance: 0.6}\n")
    assert cfg.vision.identity_unknown_distance == 0.6


def test_every_key_in_the_example_is_documented() -> None:
    lines = (REPO / "config.example.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped.endswith(":") is False and ":" in stripped:
            assert lines[i - 1].strip().startswith("#"), f"undocumented key on line {i + 1}: {line}"


def test_all_errors_reported_at_once_with_lines() -> None:
    text = """\
device:
  id: desk 1
  site: acme
  worker_id: w1
mqtt:
  prot: 12
  port: 99999
camera:
  backend: replay
schedule:
  timezone: Mars/Olympus
  mode: randm
evidence:
  retention_days: 30
"""
    errs = errors_of(text)
    by_key = {key: (line, msg) for line, key, msg in errs}
    assert by_key["device.id"][0] == 2 and "letters, digits" in by_key["device.id"][1]
    assert by_key["mqtt.prot"][0] == 6 and "did you mean 'port'" in by_key["mqtt.prot"][1]
    assert by_key["mqtt.port"] == (7, "must be between 1 and 65535")
    assert by_key["camera.source"][0] == 8 and "replay backend needs a source" in by_key["camera.source"][1]
    assert by_key["schedule.timezone"][0] == 11 and "unknown time zone" in by_key["schedule.timezone"][1]
    assert by_key["schedule.mode"][0] == 12 and "did you mean 'random'" in by_key["schedule.mode"][1]
    assert by_key["evidence.retention_days"] == (14, "must be between 1 and 20")
    assert len(errs) == 7


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        ("device: {id: a, site: b}\n", "device.worker_id", "is required"),
        (
            "device: {id: a, site: b, worker_id: c}\nmqtt: {host: broker.example.com, tls: {enabled: false}}\n",
            "mqtt.tls.enabled",
            "allow_insecure",
        ),
        ("device: {id: a, site: b, worker_id: c}\npolicy: {profile: uk}\n", "policy.profile", "no random scans"),
        (
            "device: {id: a, site: b, worker_id: c}\nschedule: {shifts: [{days: [mon], start: '9:00', end: '17:00'}]}\n",
            "schedule.shifts[0].start",
            "HH:MM",
        ),
        (  # 24:00 ends a day: as a start it is the next day's midnight, and 24:00-00:00 no time at all
            "device: {id: a, site: b, worker_id: c}\nschedule: {shifts: [{days: [mon], start: '24:00', end: '00:00'}]}\n",
            "schedule.shifts[0].start",
            'starts at "00:00"',
        ),
        (  # a scheduled check at a time no shift holds would never happen, and nothing would say so
            "device: {id: a, site: b, worker_id: c}\npolicy: {profile: uk}\n"
            "schedule: {mode: fixed, fixed_times: ['10:30', '18:00']}\n",
            "schedule.fixed_times",
            "'18:00' is in no shift",
        ),
        (
            "device: {id: a, site: b, worker_id: c}\nmqtt: {tls: {cert_file: /nonexistent.crt}}\n",
            "mqtt.tls.cert_file",
            "file not found",
        ),
        (
            "device: {id: a, site: b, worker_id: c}\ncamera: {burst_frames: many}\n",
            "camera.burst_frames",
            "whole number",
        ),
        (
            "device: {id: a, site: b, worker_id: c}\nschedule: {scans_per_hour: 6, min_gap_minutes: 10}\n",
            "schedule.min_gap_minutes",
            "well below the mean gap",
        ),
        ("device: [a, b]\n", "device", "must be a mapping"),
        ("device: {id: a, site: b, worker_id: c}\ndevice: {id: d, site: e, worker_id: f}\n", "device", "appears twice"),
        ("device: {id: a, site: b, worker_id: c\n", "(syntax)", "YAML syntax error"),
    ],
)
def test_broken_configs_name_the_key_and_the_fix(text: str, key: str, needle: str) -> None:
    errs = errors_of(text)
    assert any(k == key and needle in m for _, k, m in errs), errs


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    pw = tmp_path / "password"
    pw.write_text("s3cret")
    pw.chmod(0o644)
    text = f"device: {{id: a, site: b, worker_id: c}}\nmqtt: {{username: dev, password_file: {pw}}}\n"
    errs = errors_of(text)
    assert any(k == "mqtt.password_file" and "chmod 600" in m for _, k, m in errs)
    pw.chmod(0o600)
    assert load_config_text(text).mqtt.password_file == str(pw)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    path = tmp_path / "c.yaml"
    path.write_text("device: {id: a, site: b, worker_id: c}\nmqtt: {tls: {ca_file: ca.crt}}\n")
    assert load_config(path).mqtt.tls.ca_file == str(tmp_path / "ca.crt")


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REPO / "config.example.yaml")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("device: {id: a, site: b, worker_id: c}\nmqtt: {port: 0}\ncamera: {backend: usb}\n")
    assert main(["check-config", str(bad)]) == 78
    err = capsys.readouterr().err
    assert f"{bad}:2: mqtt.port = 0: must be between 1 and 65535" in err
    assert f"{bad}:3: camera.backend = 'usb'" in err
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 78
    assert "config file not found" in capsys.readouterr().err


def test_check_config_as_root_checks_what_the_daemons_user_can_read(
    deskwatch_user: ServiceUser, capsys: pytest.CaptureFixture[str]
) -> None:
    """Root reads any file: `sudo deskwatch check-config` answers for the daemon's user, which
    must read the config and the files it names (the daemon stops with 78 otherwise)."""
    etc = deskwatch_user.base / "etc"
    etc.mkdir(mode=0o750)
    os.chown(etc, 0, deskwatch_user.gid)
    ca = etc / "ca.crt"
    ca.write_text("x")
    ca.chmod(0o600)  # root's alone
    cfg = etc / "config.yaml"
    cfg.write_text(f"device: {{id: a, site: b, worker_id: c}}\nmqtt: {{tls: {{ca_file: {ca}}}}}\n")
    cfg.chmod(0o600)
    assert main(["check-config", str(cfg)]) == 78
    err = capsys.readouterr().err
    assert f"{cfg}: valid, but the daemon's user deskwatch could not open it all" in err
    assert f"deskwatch cannot read {cfg} (mode 0600, owner root:root) (config file); run: chown root:" in err
    assert f"deskwatch cannot read {ca} (mode 0600, owner root:root) (mqtt.tls.ca_file); run: chmod 644 {ca}" in err
    os.chown(cfg, 0, deskwatch_user.gid)
    cfg.chmod(0o640)
    ca.chmod(0o644)
    assert main(["check-config", str(cfg)]) == 0
    assert "deskwatch, the daemon's user, can read it and the files it names" in capsys.readouterr().out


def test_run_refuses_a_bad_config_with_78_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("device: {id: a, site: b, worker_id: c}\nschedule: {timezone: Nowhere/City}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "deskwatch", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 78
    assert "schedule.timezone" in proc.stderr and "Traceback" not in proc.stderr


def test_a_tolerance_raised_before_the_undecided_band_existed_still_loads() -> None:
    """A config from before identity_unknown_distance (c8a2b65) with identity_tolerance above
    0.65 - valid then, up to 1.0 - was refused after the update ('0.65 is below
    identity_tolerance (0.7)'), for a key its author never wrote: the daemon exits 78 and the
    update's health check rolls it back. Left out, the band starts at 0.65 or at the tolerance
    where that is larger (no band: every face the worker or somebody else, as before)."""
    base = "device: {id: d1, site: s1, worker_id: w1}\nmqtt: {host: localhost}\n"
    cfg = load_config_text(base + "vision: {identity_tolerance: 0.7}\n")
    assert cfg.vision.unknown_distance == 0.7
    assert load_config_text(base).vision.unknown_distance == 0.65  # the default band: 0.6 to 0.65
    cfg = load_config_text(base + "vision: {identity_tolerance: 0.55, identity_unknown_distance: 0.7}\n")
    assert cfg.vision.unknown_distance == 0.7
