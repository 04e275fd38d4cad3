"""systemd units: `systemd-analyze verify` clean, sandbox settings present, exposure score low,
sysusers/tmpfiles entries create the user and directories in a scratch root."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deskwatch.technician.service_user import SERVICE_USER, UNIT_GROUPS
from tests.support.common import REPO

UNITS = REPO / "systemd"
SERVICE = UNITS / "deskwatch.service"
PROVISION = UNITS / "deskwatch-provision.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not SYSTEM_UNITS.is_dir(),
    reason="systemd-analyze and the system's unit files are needed (Debian: apt-get install systemd)",
)


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> every value it is given (systemd keys may repeat)."""
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A scratch root holding the system's units, ours, and a stand-in deskwatch binary."""
    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in [*UNITS.glob("*.service"), *UNITS.glob("*.path")]:
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    exe = root / "opt/deskwatch/venv/bin/deskwatch"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return root


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False)


@needs_systemd
def test_verify_is_clean(unit_root: Path) -> None:
    # verify exits 0 on unknown keys and bad values: the warnings are on stderr
    ours = sorted(p.name for p in (unit_root / "etc/systemd/system").iterdir())
    assert len(ours) == 5, ours
    proc = analyze("verify", "--man=no", f"--root={unit_root}", *ours)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""


@needs_systemd
def test_verify_would_catch_a_typo(unit_root: Path) -> None:
    unit = unit_root / "etc/systemd/system/deskwatch.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    proc = analyze("verify", "--man=no", f"--root={unit_root}", "deskwatch.service")
    assert "Unknown key 'WatchdogSecs'" in proc.stderr


# systemd-analyze security's exposure (0 best, 10 worst) each unit must stay under. The jobs
# runner (root, runs what the central side signed) was 7.0 with every capability and no
# system-call filter; the commit check 2.6 before its devices, clock and /proc were closed.
EXPOSURE = {
    "deskwatch.service": (2.0, "1.6 when written"),
    "deskwatch-jobs.service": (3.0, "2.8 when written; 7.0 before its sandbox"),
    "deskwatch-update-confirm.service": (2.0, "1.8 when written; 2.6 before"),
    "deskwatch-provision.service": (3.5, "3.3 when written"),
}


@needs_systemd
@pytest.mark.parametrize("unit", sorted(EXPOSURE))
def test_exposure_score_stays_low(unit_root: Path, unit: str) -> None:
    proc = analyze("security", "--offline=true", f"--root={unit_root}", "--no-pager", unit)
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout[-500:] + proc.stderr
    limit, note = EXPOSURE[unit]
    assert float(match.group(1)) <= limit, f"{unit}: exposure {match.group(1)} ({note})"


def writable_in(settings: dict[str, list[str]], path: Path) -> bool:
    """Under ProtectSystem=strict, is ``path`` in one of the unit's ReadWritePaths?"""
    assert settings["ProtectSystem"] == ["strict"]
    writable = [Path(w.lstrip("-")) for line in settings.get("ReadWritePaths", []) for w in line.split()]
    return any(path == w or w in path.parents for w in writable)


def test_the_jobs_runner_may_write_what_its_jobs_write_and_no_more() -> None:
    """What a config job and a software job write, from the code's own paths; /etc beyond the
    config's directory stays read-only (a bug in the runner, or a job from a compromised signer,
    must not reach /etc/shadow or the units)."""
    from deskwatch.jobs.ledger import Ledger
    from deskwatch.update.slots import AUTOBOOT_DIR

    jobs = unit_settings(UNITS / "deskwatch-jobs.service")
    config = Path("/etc/deskwatch/config.yaml")
    for path in (
        config.with_name(config.name + ".job-staged"),  # stage, swap, .previous
        Ledger(config).path,  # root's record of the jobs run
        Path("/var/lib/deskwatch/jobs/done/job.json"),  # the outcome; the download beside the queue
        AUTOBOOT_DIR / "deskwatch-update.json",  # the A/B record and autoboot.txt
    ):
        assert writable_in(jobs, path), path
    for path in (
        Path("/etc/shadow"),
        Path("/etc/systemd/system/x.service"),
        Path("/run/systemd/system/x.service"),
        Path("/usr/bin/x"),
        Path("/root/x"),
    ):
        assert not writable_in(jobs, path), path


def test_the_jobs_runner_has_only_the_capabilities_its_jobs_use() -> None:
    jobs = unit_settings(UNITS / "deskwatch-jobs.service")
    [caps] = jobs["CapabilityBoundingSet"]
    assert set(caps.split()) == {"CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_CHOWN", "CAP_SYS_ADMIN"}
    assert jobs["NoNewPrivileges"] == ["yes"] and jobs["RestrictNamespaces"] == ["yes"]
    assert jobs["PrivateMounts"] == ["yes"]  # the slots it mounts stay in its namespace
    # the slots' disks (SD card, USB disk, the emulator's virtio) and nothing else
    assert jobs["DevicePolicy"] == ["closed"]
    assert {d.split()[0] for d in jobs["DeviceAllow"]} == {"block-mmc", "block-blkext", "block-sd", "block-virtblk"}
    assert "@mount" in jobs["SystemCallFilter"][0].split() and "@system-service" in jobs["SystemCallFilter"][0].split()
    assert {"@module", "@raw-io", "@reboot", "@debug"} <= set(jobs["SystemCallFilter"][1].lstrip("~").split())
    assert jobs["SystemCallErrorNumber"] == ["EPERM"]


def test_service_sandbox_and_lifecycle() -> None:
    s = unit_settings(SERVICE)
    assert s["Type"] == ["notify"]
    assert int(s["WatchdogSec"][0]) >= 30
    assert s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == ["78"]
    for target in ("network-online.target", "time-sync.target"):
        assert target in s["After"][0] and target in s["Wants"][0]
    assert s["ProtectSystem"] == ["strict"]
    assert s["ReadWritePaths"] == ["/var/lib/deskwatch"]
    assert s["StateDirectory"] == ["deskwatch"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert s[key] == ["yes"], key
    assert s["CapabilityBoundingSet"] == [""]
    assert s["SupplementaryGroups"] == ["video"]
    assert s["User"] == ["deskwatch"]
    # what `sudo deskwatch selftest` gives its child, to check as the daemon runs
    assert s["SupplementaryGroups"][0].split() == list(UNIT_GROUPS) and s["User"] == [SERVICE_USER]
    assert "char-video4linux rw" in s["DeviceAllow"]
    assert s["DevicePolicy"] == ["closed"]
    assert s["ConditionPathExists"] == ["/etc/deskwatch/config.yaml"]


def test_provision_unit_runs_before_daemon_once_bundle_present() -> None:
    p = unit_settings(PROVISION)
    assert p["Type"] == ["oneshot"]
    assert p["ConditionPathExists"] == ["/boot/firmware/deskwatch/bundle.yaml"]
    assert "deskwatch.service" in p["Before"][0]
    assert "provision --bundle /boot/firmware/deskwatch" in p["ExecStart"][0]
    assert "deskwatch-provision.service" in unit_settings(SERVICE)["After"][0]
    # /etc/deskwatch is swapped in by rename(2): its parent must be writable, not bind-mounted
    assert "/etc" in p["ReadWritePaths"][0].split()


def test_provisioning_ends_its_selftest_itself_before_the_unit_would_kill_it() -> None:
    """TimeoutStartSec=300 killed provisioning during its selftest (the emulator under load):
    the selftest's own limit (--selftest-timeout, which reports it cut short) plus time for
    validating and installing the bundle must fit within the unit's limit."""
    p = unit_settings(PROVISION)
    argv = p["ExecStart"][0].split()
    assert "--selftest-timeout" in argv, argv
    selftest = float(argv[argv.index("--selftest-timeout") + 1])
    [limit] = p["TimeoutStartSec"]
    assert limit.isdigit(), f"TimeoutStartSec={limit}: give it in seconds"
    assert int(limit) >= selftest + 300, (limit, selftest)


def test_the_first_boot_selftest_can_record_its_camera_use_in_the_workers_history() -> None:
    """Provisioning runs the selftest, which opens the camera and records that in the audit trail
    in the daemon's state directory. Under ProtectSystem=strict a path not in ReadWritePaths is
    read-only: the record was lost ("could not record the selftest capture") while the camera
    ran, and `deskwatch history` never showed the first-boot check."""
    state = unit_settings(SERVICE)["ReadWritePaths"][0].split()
    writable = [p.lstrip("-") for p in unit_settings(PROVISION)["ReadWritePaths"][0].split()]
    for path in state:
        assert any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable), (path, writable)


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers missing")
def test_sysusers_and_tmpfiles_create_user_and_dirs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nvideo:x:44:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\nvideo:!::\n")
    subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(UNITS / "sysusers.d/deskwatch.conf")],
        check=True,
        capture_output=True,
        timeout=30,
    )
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^deskwatch:x:\d+:\d+:[^:]*:/var/lib/deskwatch:/usr/sbin/nologin$", passwd, re.M)
    assert re.search(r"^video:x:44:.*deskwatch", (root / "etc/group").read_text(), re.M)
    subprocess.run(
        ["systemd-tmpfiles", "--create", f"--root={root}", str(UNITS / "tmpfiles.d/deskwatch.conf")],
        check=True,
        capture_output=True,
        timeout=30,
    )
    state = (root / "var/lib/deskwatch").stat()
    assert state.st_mode & 0o777 == 0o700
    assert (root / "etc/deskwatch").stat().st_mode & 0o777 == 0o750


def test_update_confirm_and_jobs_units() -> None:
    """The A/B health check runs after the daemon at every boot; queued jobs start the root side."""
    c = unit_settings(UNITS / "deskwatch-update-confirm.service")
    assert c["Type"] == ["oneshot"] and "deskwatch.service" in c["After"][0]
    assert c["ExecStart"] == ["/opt/deskwatch/venv/bin/deskwatch update confirm"]
    assert c["ReadWritePaths"] == ["/boot/autoboot"]
    path = unit_settings(UNITS / "deskwatch-jobs.path")
    assert path["PathExistsGlob"] == ["/var/lib/deskwatch/jobs/queue/*.json", "/var/lib/deskwatch/jobs/queue/*.running"]
    assert path["Unit"] == ["deskwatch-jobs.service"]
    jobs = unit_settings(UNITS / "deskwatch-jobs.service")
    assert jobs["ExecStart"] == ["/opt/deskwatch/venv/bin/deskwatch jobs run-queued"]
    # a unit whose system-call filter meets adjtimex(2) (the selftest's clock check) must not be killed
    assert unit_settings(PROVISION)["SystemCallErrorNumber"] == ["EPERM"]
