"""deskwatch provision: a bundle on the boot partition is validated fully, applied atomically or not at all."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import time
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
    crt, key = pki.client(cert_cn or f"acme-support/{device_id}")
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
        ("cn", "CN='acme-support/desk-9999' but bundle.yaml says device 'acme-support/desk-0042'"),
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

    bundle = make_bundle(tmp_path, pki, cert_cn="acme-support/desk-9999" if breakage == "cn" else None)
    if breakage == "key":
        _other_crt, other_key = pki.client("acme-support/desk-other")
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
    bundle = make_bundle(tmp_path, pki, cert_cn="other-site/desk-0042", extra="schedule: {mode: whenever}\n")
    assert bundle.is_dir()
    assert provision(tmp_path) == 78
    err = capsys.readouterr().err
    assert "CN='other-site/desk-0042'" in err
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
    tmp_path: Path, pki: Pki, make_broker: MakeBroker, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker: Broker = make_broker(mutual=True, acl=fleet_acl(pki))
    bundle = make_bundle(tmp_path, pki, port=broker.port)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as on a developer's machine: the selftest runs in-process
    code = provision(tmp_path, "--skip", "clock", "--skip", "models", "--skip", "framing")
    out = capsys.readouterr().out
    assert code == 0, out
    result = (bundle / "provision-result.txt").read_text()
    assert "Selftest:" in result and "broker       PASS" in result and "camera       PASS" in result
    assert os.stat(tmp_path / "etc/deskwatch/device.key").st_mode & 0o077 == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="installing files for another user needs root")
def test_as_root_the_selftest_runs_as_the_service_user(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from deskwatch.technician import service_user

    calls: list[tuple[str, list[str]]] = []

    def fake_run_as_user(user: str, argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        calls.append((user, argv))
        return subprocess.CompletedProcess(argv, 0, stdout="camera       PASS\n")

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(service_user, "run_as_user", fake_run_as_user)
    bundle = make_bundle(tmp_path, pki)
    assert provision(tmp_path, "--skip", "clock", "--service-user", "nobody") == 0
    [(user, argv)] = calls
    assert user == "nobody" and argv[1:4] == ["-m", "deskwatch", "selftest"] and argv[-2:] == ["--skip", "clock"]
    assert argv[argv.index("--service-user") + 1] == "nobody"  # its permission row judges for that user
    assert "(run as user nobody)" in (bundle / "provision-result.txt").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="running the selftest as the service user needs root")
def test_a_selftest_that_outlasts_its_limit_is_ended_by_provisioning_and_the_technician_told(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """deskwatch-provision.service killed provisioning at its TimeoutStartSec=300 during the
    selftest (twice in the emulator under load): the config was in, the card's result file was
    never written. Provisioning now ends the selftest itself at --selftest-timeout (a real child
    of the service user's, hanging) and the result file says it was cut short and what to do."""
    from deskwatch.technician import service_user

    hang = ["/bin/sleep", "60"]
    monkeypatch.setattr(service_user, "selftest_argv", lambda *a, **kw: hang)
    bundle = make_bundle(tmp_path, pki)
    t0 = time.monotonic()
    code = provision(tmp_path, "--service-user", "nobody", "--selftest-timeout", "2")
    assert code == 1 and time.monotonic() - t0 < 30
    result = (bundle / "provision-result.txt").read_text()
    assert "deskwatch provisioned at" in result and "Secrets moved to" in result
    assert "selftest NOT finished: cut short after 2 s (its time limit)" in result, result
    assert "Run `sudo deskwatch selftest` at the desk" in result
    assert (tmp_path / "etc/deskwatch/config.yaml").is_file()  # the config stays installed
    assert "Traceback" not in capsys.readouterr().err


def test_the_result_file_says_the_selftest_runs_before_it_starts(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If provisioning is killed during the selftest all the same (a power cut), the card
    already says the config is in and the selftest did not finish."""
    from deskwatch.commands import provision as command

    seen: list[str] = []

    def selftest(*args: Any, **kw: Any) -> tuple[int, str]:
        seen.append((bundle / "provision-result.txt").read_text())
        return 0, "camera       PASS"

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(command, "_selftest_here", selftest)
    bundle = make_bundle(tmp_path, pki)
    assert provision(tmp_path) == 0
    [during] = seen
    assert "deskwatch provisioned at" in during and "NOT finished (provisioning was cut off during it)" in during
    assert "Run `sudo deskwatch selftest` at the desk" in during
    assert "camera       PASS" in (bundle / "provision-result.txt").read_text()


# -- a bundle written by an attacker: provisioning runs as root ----------------------------------


def applied_key(root: Path) -> bytes:
    return (root / "etc/deskwatch/device.key").read_bytes()


def test_a_key_that_links_to_the_installed_key_is_refused_and_zeroes_nothing(
    tmp_path: Path, pki: Pki, capsys: Any
) -> None:
    make_bundle(tmp_path, pki)
    assert provision(tmp_path, "--skip-selftest") == 0
    installed = applied_key(tmp_path)
    bundle = make_bundle(tmp_path, pki)  # a new bundle whose key is a link to the installed one
    (bundle / "device.key").unlink()
    (bundle / "device.key").symlink_to(tmp_path / "etc/deskwatch/device.key")
    assert provision(tmp_path, "--skip-selftest") == 78
    assert "device.key is a symbolic link" in capsys.readouterr().err
    assert applied_key(tmp_path) == installed and installed.strip(b"\0")


def test_scrubbing_never_writes_through_a_hard_link(tmp_path: Path, pki: Pki) -> None:
    """Even a key that passed the checks is zeroed only if it is still the file that was read, alone."""
    from deskwatch.technician.provision import scrub_bundle

    bundle = make_bundle(tmp_path, pki)
    victim = tmp_path / "elsewhere.key"
    os.link(bundle / "device.key", victim)  # the bundle's key is also another file
    before = victim.read_bytes()
    scrub_bundle(bundle, before)
    assert victim.read_bytes() == before and not (bundle / "device.key").exists()


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        (
            "ca.crt",
            lambda p: p.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + b"A" * (40 << 20)),
            "ca.crt is 41943068 bytes; at most 262144",
        ),
        ("bundle.yaml", lambda p: p.write_bytes(b"#" * (1 << 20)), "bundle.yaml is 1048576 bytes; at most 65536"),
        ("device.crt", lambda p: os.mkfifo(p), "device.crt is not a regular file"),
        ("ca.crt", lambda p: p.mkdir(), "ca.crt is not a regular file"),
        ("device.crt", lambda p: p.symlink_to("/etc/ssl/certs/ca-certificates.crt"), "device.crt is a symbolic link"),
        ("bundle.yaml", lambda p: p.symlink_to("/etc/hostname"), "bundle.yaml is a symbolic link"),
    ],
    ids=["40MB-ca", "huge-yaml", "fifo", "directory", "cert-link", "yaml-link"],
)
def test_special_files_links_and_huge_files_are_refused(
    tmp_path: Path, pki: Pki, capsys: Any, name: str, make: Any, reason: str
) -> None:
    bundle = make_bundle(tmp_path, pki)
    (bundle / name).unlink()
    make(bundle / name)
    t0 = time.monotonic()
    assert provision(tmp_path, "--skip-selftest") == 78
    assert time.monotonic() - t0 < 10  # a FIFO never blocks it
    assert reason in capsys.readouterr().err
    assert not (tmp_path / "etc/deskwatch").exists()


def test_a_result_file_planted_as_a_link_is_replaced_not_written_through(tmp_path: Path, pki: Pki) -> None:
    bundle = make_bundle(tmp_path, pki)
    target = tmp_path / "precious.txt"  # /etc/shadow in the attack
    target.write_text("do not touch")
    (bundle / "provision-result.txt").symlink_to(target)
    assert provision(tmp_path, "--skip-selftest") == 0
    assert target.read_text() == "do not touch"
    result = bundle / "provision-result.txt"
    assert not result.is_symlink() and "provisioned" in result.read_text()


def test_a_bundle_directory_that_is_a_link_is_refused(tmp_path: Path, pki: Pki, capsys: Any) -> None:
    real = make_bundle(tmp_path / "elsewhere", pki)
    (tmp_path / "boot/firmware").mkdir(parents=True)
    (tmp_path / "boot/firmware/deskwatch").symlink_to(real)
    assert provision(tmp_path, "--skip-selftest") == 78
    assert "is a symbolic link" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_the_selftest_child_runs_with_the_service_users_ids_not_roots() -> None:
    import grp

    from deskwatch.technician.service_user import run_as_user, selftest_as_user

    nobody = pwd.getpwnam("nobody")
    probe = "import os; print(os.getuid(), os.getgid(), os.getgroups())"
    done = run_as_user("nobody", ["/usr/bin/python3", "-c", probe], timeout=30)  # the system Python: nobody may run it
    uid, gid, groups = done.stdout.split(" ", 2)
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid) and "0" not in groups.strip("[]\n").split(", ")
    # and the groups deskwatch.service adds (SupplementaryGroups=video: the camera), as the daemon has them
    assert str(grp.getgrnam("video").gr_gid) in groups.strip("[]\n").split(", ")
    with pytest.raises(LookupError, match="no user"):
        run_as_user("no-such-user-here", ["true"], timeout=5)
    code, text = selftest_as_user("no-such-user-here", Path("/etc/deskwatch/config.yaml"), [])
    assert code == 1 and "NOT run" in text and "never runs as root" in text


# -- files of the old configuration that the new one still uses ---------------------------------


def with_password(bundle: Path, password_file: Path | str) -> None:
    text = (bundle / "bundle.yaml").read_text()
    (bundle / "bundle.yaml").write_text(
        text.replace('protocol: "5"}', f'protocol: "5", username: acme, password_file: {password_file}}}')
    )


def test_reprovisioning_keeps_the_password_file_the_new_config_names(tmp_path: Path, pki: Pki, capsys: Any) -> None:
    """The broker password is put in /etc/deskwatch by hand (never on the card); a new bundle that
    names it must find it there afterwards, not lose it with the old directory."""
    make_bundle(tmp_path, pki, device_id="desk-0042")
    assert provision(tmp_path, "--skip-selftest") == 0
    etc = tmp_path / "etc/deskwatch"
    (etc / "secrets").mkdir(mode=0o700)
    for name in ("mqtt-password", "secrets/mqtt-password"):
        (etc / name).write_text("s3cret\n")
        (etc / name).chmod(0o600)
    bundle = make_bundle(tmp_path, pki, device_id="desk-0043")
    with_password(bundle, etc / "mqtt-password")
    assert provision(tmp_path, "--skip-selftest") == 0, capsys.readouterr().err
    assert (etc / "mqtt-password").read_text() == "s3cret\n"
    assert stat.S_IMODE((etc / "mqtt-password").stat().st_mode) == 0o600
    assert not (etc / "secrets").exists()  # what the new config does not name is not carried over
    assert main(["check-config", str(etc / "config.yaml")]) == 0
    assert "id: desk-0043" in (etc / "config.yaml").read_text()
    assert sorted(p.name for p in bundle.iterdir()) == ["bundle.yaml.applied", "provision-result.txt"]

    # in a directory of its own, and named relative to config.yaml as the daemon reads it
    (etc / "secrets").mkdir(mode=0o700)
    (etc / "mqtt-password").rename(etc / "secrets/mqtt-password")
    bundle = make_bundle(tmp_path, pki, device_id="desk-0044")
    with_password(bundle, "secrets/mqtt-password")
    assert provision(tmp_path, "--skip-selftest") == 0, capsys.readouterr().err
    assert (etc / "secrets/mqtt-password").read_text() == "s3cret\n"
    assert stat.S_IMODE((etc / "secrets").stat().st_mode) == 0o700
    assert main(["check-config", str(etc / "config.yaml")]) == 0
    assert [p.name for p in (tmp_path / "etc").iterdir()] == ["deskwatch"]


def test_reprovisioning_keeps_roots_record_of_the_jobs_already_run(tmp_path: Path, pki: Pki, capsys: Any) -> None:
    """Root's record of the remote jobs it ran lives beside the config: a new bundle replacing
    /etc/deskwatch must keep it, or every signed job still unexpired could be run again."""
    make_bundle(tmp_path, pki, device_id="desk-0042")
    assert provision(tmp_path, "--skip-selftest") == 0
    record = tmp_path / "etc/deskwatch/jobs-run.json"
    record.write_text('{"ran": ["cfg-1"]}\n')
    record.chmod(0o600)
    make_bundle(tmp_path, pki, device_id="desk-0043")
    assert provision(tmp_path, "--skip-selftest") == 0, capsys.readouterr().err
    assert record.read_text() == '{"ran": ["cfg-1"]}\n' and stat.S_IMODE(record.stat().st_mode) == 0o600


def test_a_password_file_missing_from_the_config_directory_changes_nothing(
    tmp_path: Path, pki: Pki, capsys: Any
) -> None:
    make_bundle(tmp_path, pki)
    assert provision(tmp_path, "--skip-selftest") == 0
    before = tree(tmp_path / "etc")
    bundle = make_bundle(tmp_path, pki)
    with_password(bundle, tmp_path / "etc/deskwatch/mqtt-password")
    assert provision(tmp_path, "--skip-selftest") == 78
    err = capsys.readouterr().err
    assert "mqtt.password_file" in err and "file not found" in err and "nothing was changed" in err
    assert tree(tmp_path / "etc") == before
    assert "device.key" in {p.name for p in bundle.iterdir()}  # the technician still has the bundle to fix
    assert "mqtt.password_file" in (bundle / "provision-result.txt").read_text()


def test_a_state_dir_inside_the_config_directory_is_refused(tmp_path: Path, pki: Pki, capsys: Any) -> None:
    """Provisioning replaces the config directory whole: the queue and audit trail must not live in it."""
    make_bundle(tmp_path, pki)
    assert provision(tmp_path, "--skip-selftest") == 0
    state = tmp_path / "etc/deskwatch/state"
    state.mkdir()
    (state / "audit.jsonl").write_text("the worker's record\n")
    before = tree(tmp_path / "etc")
    bundle = make_bundle(tmp_path, pki)
    text = (bundle / "bundle.yaml").read_text().replace(str(tmp_path / "var/lib/deskwatch"), str(state))
    (bundle / "bundle.yaml").write_text(text)
    assert provision(tmp_path, "--skip-selftest") == 78
    err = capsys.readouterr().err
    assert "state_dir" in err and "move it out of" in err and "nothing was changed" in err
    assert tree(tmp_path / "etc") == before


def test_a_failed_check_after_the_swap_puts_the_old_directory_back(tmp_path: Path) -> None:
    from deskwatch.technician.provision import swap_in

    etc, staging = tmp_path / "etc/deskwatch", tmp_path / "etc/.deskwatch.new-x"
    etc.mkdir(parents=True)
    (etc / "config.yaml").write_text("old\n")
    staging.mkdir()
    (staging / "config.yaml").write_text("new\n")

    def check() -> None:
        assert (etc / "config.yaml").read_text() == "new\n"  # runs on the installed directory
        raise ValueError("does not load")

    with pytest.raises(ValueError, match="does not load"):
        swap_in(staging, etc, check)
    assert tree(etc) == {"config.yaml": b"old\n"}
    assert [p.name for p in (tmp_path / "etc").iterdir()] == ["deskwatch"]


def test_a_config_that_does_not_load_as_installed_puts_the_old_one_back(tmp_path: Path, pki: Pki, capsys: Any) -> None:
    """A path reaching the old directory another way (here a link to it) passes every check made
    before the swap and is gone after it: the device keeps its old configuration, the technician
    their bundle and the reason."""
    make_bundle(tmp_path, pki)
    assert provision(tmp_path, "--skip-selftest") == 0
    etc = tmp_path / "etc/deskwatch"
    (etc / "mqtt-password").write_text("s3cret\n")
    (etc / "mqtt-password").chmod(0o600)
    (tmp_path / "etc/deskwatch-link").symlink_to("deskwatch")
    before = tree(etc)
    bundle = make_bundle(tmp_path, pki, device_id="desk-0043")
    with_password(bundle, tmp_path / "etc/deskwatch-link/mqtt-password")
    assert provision(tmp_path, "--skip-selftest") == 78
    err = capsys.readouterr().err
    assert f"as installed in {etc}" in err and "mqtt.password_file" in err and "nothing was changed" in err
    assert tree(etc) == before
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == ["deskwatch", "deskwatch-link"]
    assert "device.key" in {p.name for p in bundle.iterdir()}
    assert "mqtt.password_file" in (bundle / "provision-result.txt").read_text()


def test_a_passphrase_protected_key_is_refused_saying_so_without_asking(tmp_path: Path, pki: Pki, capfd: Any) -> None:
    """First boot has nobody at a terminal: OpenSSL must never prompt for the passphrase."""
    import subprocess

    bundle = make_bundle(tmp_path, pki)
    key = bundle / "device.key"
    subprocess.run(
        ["openssl", "pkey", "-in", key, "-out", f"{key}.enc", "-aes256", "-passout", "pass:secret"], check=True
    )
    Path(f"{key}.enc").replace(key)
    assert provision(tmp_path, "--skip-selftest") == 78
    err = capfd.readouterr().err
    assert (
        "device.key is protected by a passphrase" in err and "openssl pkey -in device.key -out device-nopass.key" in err
    )
    assert "pass phrase" not in err and "Errno" not in err
    assert "device.key is protected by a passphrase" in (bundle / "provision-result.txt").read_text()
    assert not (tmp_path / "etc/deskwatch").exists()


def test_provisioning_for_another_worker_tells_the_technician_what_happens(
    tmp_path: Path, pki: Pki, capsys: Any
) -> None:
    """A desk provisioned again for the next employee: the report said only 'worker w-2',
    nothing of the previous worker's pause, templates and history, nor that w-2 must be enrolled."""
    from deskwatch.handover import Holder, record_path

    state = tmp_path / "var/lib/deskwatch"
    state.mkdir(parents=True, mode=0o700)
    record_path(state).write_text(json.dumps(Holder("w-0001", "acme-support").to_json()))
    bundle = make_bundle(tmp_path, pki)
    assert provision(tmp_path, "--skip-selftest") == 0
    out = capsys.readouterr().out
    assert "This desk was worker w-0001's (site acme-support) and is now worker w-1187's" in out
    assert "deletes w-0001's face templates" in out
    assert "deskwatch enroll --worker w-1187 --consent" in out
    assert "deskwatch enroll --worker w-1187" in (bundle / "provision-result.txt").read_text()


def test_provisioning_for_the_same_worker_id_says_what_to_do_if_it_names_another_person(
    tmp_path: Path, pki: Pki, capsys: Any
) -> None:
    from deskwatch.handover import Holder, record_path

    state = tmp_path / "var/lib/deskwatch"
    state.mkdir(parents=True, mode=0o700)
    record_path(state).write_text(json.dumps(Holder("w-1187", "acme-support").to_json()))
    make_bundle(tmp_path, pki)
    assert provision(tmp_path, "--skip-selftest") == 0
    assert "run deskwatch new-holder before the service starts" in capsys.readouterr().out
