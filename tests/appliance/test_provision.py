"""deskwatch provision: a bundle on the boot partition is validated fully, applied atomically or not at all."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from deskwatch.cli import main
from tests.support.common import PHOTOS
from tests.support.mosquitto import Broker, MakeBroker, Pki, fleet_acl


def make_bundle(
    root: Path, pki: Pki, *, device_id: str = "desk-0042", cert_cn: str | None = None, port: int = 8883, extra: str = ""
) -> Path:
    bundle = root / "boot/firmware/deskwatch"
    bundle.mkdir(parents=True, exist_ok=True)
    crt, key = pki.client(cert_cn or device_id)
    shutil.copy(crt, bundle / "device.crt")
    shutil.copy(key, bundle / "device.key")
    shutil.copy(pki.ca_crt, bundle / "ca.crt")
    for f in bundle.iterdir():
        f.chmod(0o755)  # what a FAT mount shows
    state = root / "var/lib/deskwatch"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    (bundle / "bundle.yaml").write_text(
        f"""device: {{id: {device_id}, site: acme-support, worker_id: w-1187}}
state_dir: {state}
camera: {{backend: replay, source: {PHOTOS / "single_04.jpg"}}}
mqtt: {{host: 127.0.0.1, port: {port}, protocol: "5"}}
policy: {{profile: full}}
{extra}"""
    )
    return bundle


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def provision(root: Path, *extra: str) -> int:
    return main(["provision", "--root", str(root), *extra])


def test_good_bundle_is_applied_and_scrubbed(tmp_path: Path, pki: Pki, capsys: Any) -> None:
    bundle = make_bundle(tmp_path, pki)
    assert provision(tmp_path, "--skip-selftest") == 0
    etc = tmp_path / "etc/deskwatch"
    key = etc / "device.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((etc / "config.yaml").stat().st_mode) == 0o640
    text = (etc / "config.yaml").read_text()
    assert f"key_file: {key}" in text and f"ca_file: {etc / 'ca.crt'}" in text
    # the secrets are gone from the FAT partition; the bundle is marked applied
    assert sorted(p.name for p in bundle.iterdir()) == ["bundle.yaml.applied", "provision-result.txt"]
    assert "provisioned" in (bundle / "provision-result.txt").read_text()
    assert main(["check-config", str(etc / "config.yaml")]) == 0
    # running it again by hand says the bundle was used, and changes nothing
    assert provision(tmp_path, "--skip-selftest") == 78
    assert "already applied" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "etc").iterdir()] == ["deskwatch"]  # no staging leftovers


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("cn", "CN='desk-9999' but bundle.yaml says device.id 'desk-0042'"),
        ("key", "the key does not belong to the certificate"),
        ("nokey", "device.key is missing"),
        ("config", "camera.backend"),
        ("yaml", "YAML syntax error"),
    ],
)
def test_broken_bundle_changes_nothing(tmp_path: Path, pki: Pki, capsys: Any, breakage: str, reason: str) -> None:
    # a device provisioned before: its config must survive a bad bundle untouched
    first = make_bundle(tmp_path / "old", pki)
    assert first.is_dir()
    assert provision(tmp_path / "old", "--skip-selftest") == 0
    shutil.copytree(tmp_path / "old/etc", tmp_path / "etc")
    before = tree(tmp_path / "etc")

    bundle = make_bundle(tmp_path, pki, cert_cn="desk-9999" if breakage == "cn" else None)
    if breakage == "key":
        _other_crt, other_key = pki.client("desk-other")
        shutil.copy(other_key, bundle / "device.key")
    elif breakage == "nokey":
        (bundle / "device.key").unlink()
    elif breakage == "config":
        text = (bundle / "bundle.yaml").read_text().replace("backend: replay", "backend: webcam")
        (bundle / "bundle.yaml").write_text(text)
    elif breakage == "yaml":
        (bundle / "bundle.yaml").write_text("device: {id: desk-0042\n")
    files_before = sorted(p.name for p in bundle.iterdir())

    assert provision(tmp_path) == 78
    err = capsys.readouterr().err
    assert reason in err and "nothing was changed" in err
    assert tree(tmp_path / "etc") == before
    assert [p.name for p in (tmp_path / "etc").iterdir()] == ["deskwatch"]
    assert sorted(p.name for p in bundle.iterdir()) == sorted([*files_before, "provision-result.txt"])
    assert reason in (bundle / "provision-result.txt").read_text()


def test_every_problem_is_reported_at_once(tmp_path: Path, pki: Pki, capsys: Any) -> None:
    bundle = make_bundle(tmp_path, pki, cert_cn="desk-9999", extra="schedule: {mode: whenever}\n")
    assert bundle.is_dir()
    assert provision(tmp_path) == 78
    err = capsys.readouterr().err
    assert "CN='desk-9999'" in err
    assert "bundle.yaml:6: schedule.mode = 'whenever'" in err


def test_reprovision_replaces_the_old_config(tmp_path: Path, pki: Pki) -> None:
    make_bundle(tmp_path, pki, device_id="desk-0042")
    assert provision(tmp_path, "--skip-selftest") == 0
    (tmp_path / "etc/deskwatch/stale-file").write_text("from before")
    make_bundle(tmp_path, pki, device_id="desk-0043")
    assert provision(tmp_path, "--skip-selftest") == 0
    etc = tmp_path / "etc/deskwatch"
    assert "id: desk-0043" in (etc / "config.yaml").read_text()
    assert not (etc / "stale-file").exists()
    assert [p.name for p in (tmp_path / "etc").iterdir()] == ["deskwatch"]


def test_missing_bundle_is_refused(tmp_path: Path, capsys: Any) -> None:
    assert provision(tmp_path) == 78
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "etc").exists()


@pytest.mark.broker
def test_provision_then_selftest_against_real_broker(
    tmp_path: Path, pki: Pki, make_broker: MakeBroker, capsys: Any
) -> None:
    broker: Broker = make_broker(mutual=True, acl=fleet_acl() + "pattern write deskwatch/v1/+/%u/selftest\n")
    bundle = make_bundle(tmp_path, pki, port=broker.port)
    code = provision(tmp_path, "--skip", "clock", "--skip", "models", "--skip", "framing")
    out = capsys.readouterr().out
    assert code == 0, out
    result = (bundle / "provision-result.txt").read_text()
    assert "Selftest:" in result and "broker       PASS" in result and "camera       PASS" in result
    assert os.stat(tmp_path / "etc/deskwatch/device.key").st_mode & 0o077 == 0
