"""A/B updates: autoboot.txt, the signed bundle, install, and the commit/rollback decision.

The partitions here are plain files and the mounts directories (the real ones are in the
emulator: ``make vm-test``, tools/deskwatch_dev/vmtest.py); the decisions are the real code.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deskwatch.update import bundle as bundle_mod
from deskwatch.update.install import Health, System, confirm, install
from deskwatch.update.slots import (
    SLOTS,
    Autoboot,
    UpdateError,
    booted_from,
    partition_device,
    read_autoboot,
    read_state,
    retarget,
)
from deskwatch_contract.signing import generate_key

A, B = SLOTS


def test_autoboot_round_trip_and_the_firmware_example() -> None:
    text = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
    ab = Autoboot.parse(text)
    assert (ab.boot_partition, ab.tryboot_partition, ab.tryboot_a_b) == (2, 3, True)
    assert Autoboot.parse(ab.render()) == ab
    with pytest.raises(UpdateError, match="not set up for A/B"):
        Autoboot.parse("[tryboot]\nboot_partition=3\n")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "console=serial0 root=PARTUUID=d35c0001-05 rootfstype=ext4 rootwait",
            "console=serial0 root=PARTUUID=d35c0001-06 rootfstype=ext4 rootwait",
        ),
        (
            "PARTUUID=d35c0001-05 / ext4 defaults 0 1\nPARTUUID=d35c0001-02 /boot/firmware vfat defaults 0 2\n"
            "PARTUUID=d35c0001-01 /boot/autoboot vfat defaults 0 2\nPARTUUID=d35c0001-07 /var/lib/deskwatch ext4 d 0 2\n",
            "PARTUUID=d35c0001-06 / ext4 defaults 0 1\nPARTUUID=d35c0001-03 /boot/firmware vfat defaults 0 2\n"
            "PARTUUID=d35c0001-01 /boot/autoboot vfat defaults 0 2\nPARTUUID=d35c0001-07 /var/lib/deskwatch ext4 d 0 2\n",
        ),
        ("root=/dev/mmcblk0p5 rw", "root=/dev/mmcblk0p6 rw"),
    ],
)
def test_retarget_points_a_slot_image_at_slot_b(text: str, want: str) -> None:
    assert retarget(text, A, B) == want
    assert retarget(want, A, B) == want  # already B's: unchanged


def test_partition_devices_from_the_kernel_root_argument() -> None:
    assert partition_device(3, "root=PARTUUID=D35C0001-05 rw") == Path("/dev/disk/by-partuuid/d35c0001-03")
    assert partition_device(6, "console=tty1 root=/dev/mmcblk0p5") == Path("/dev/mmcblk0p6")
    assert partition_device(1, "root=/dev/vda5") == Path("/dev/vda1")
    with pytest.raises(UpdateError, match="no root="):
        partition_device(1, "console=ttyAMA0")


def test_what_the_firmware_booted_comes_from_the_device_tree(tmp_path: Path) -> None:
    (tmp_path / "partition").write_bytes((3).to_bytes(4, "big"))
    (tmp_path / "tryboot").write_bytes((1).to_bytes(4, "big"))
    booted = booted_from(tmp_path)
    assert (booted.partition, booted.tryboot, booted.slot) == (3, True, B)
    with pytest.raises(UpdateError, match="not a Raspberry Pi"):
        booted_from(tmp_path / "missing")


# -- install and confirm on files ---------------------------------------------------------------------
class FakeSystem(System):
    """Partitions are files, mounts are directories, the clock and systemd are scripted."""

    def __init__(self, base: Path, partition: int, tryboot: bool = False) -> None:
        super().__init__(
            autoboot_dir=base / "autoboot",
            dt_dir=base / "dt",
            cmdline_file=base / "cmdline",
            keys_dir=base / "keys",
            source_root=base / "running",
        )
        self.base = base
        self.version = "0.9.0"
        self.units: list[dict[str, str]] = []
        self.clock = 0.0
        for d in ("autoboot", "dt", "keys", "running/etc/deskwatch", "dev"):
            (base / d).mkdir(parents=True, exist_ok=True)
        (base / "cmdline").write_text("console=serial0 root=/dev/mmcblk0p5 rootwait\n")
        (base / "running/etc/deskwatch/config.yaml").write_text("device: {id: desk-1}\n")
        (base / "running/etc/deskwatch/config.yaml").chmod(0o640)
        if os.geteuid() == 0:  # as provisioned: readable by the service user's group only
            os.chown(base / "running/etc/deskwatch/config.yaml", 0, 997)
        self.boot(partition, tryboot)
        for n in (2, 3, 5, 6):
            (base / f"dev/p{n}").write_bytes(b"old slot")

    def boot(self, partition: int, tryboot: bool) -> None:
        (self.dt_dir / "partition").write_bytes(partition.to_bytes(4, "big"))
        (self.dt_dir / "tryboot").write_bytes(int(tryboot).to_bytes(4, "big"))

    def device(self, partition: int) -> Path:
        return self.base / f"dev/p{partition}"

    @contextlib.contextmanager
    def mounted(self, device: Path, fstype: str) -> Iterator[Path]:
        where = self.base / "mnt" / device.name
        where.mkdir(parents=True, exist_ok=True)
        yield where

    def reboot(self, tryboot: bool) -> None:
        self.reboots.append("tryboot" if tryboot else "plain")

    def unit(self, name: str) -> dict[str, str]:
        return self.units.pop(0) if len(self.units) > 1 else self.units[0]

    def installed_version(self) -> str:
        return self.version

    def sleep(self, seconds: float) -> None:
        self.clock += seconds

    def monotonic(self) -> float:
        return self.clock


@pytest.fixture
def keys(tmp_path: Path) -> tuple[bytes, bytes]:
    return generate_key()


def make_bundle(tmp_path: Path, private: bytes, version: str = "0.9.1") -> Path:
    boot, root = tmp_path / "boot.img", tmp_path / "root.img"
    boot.write_bytes(b"FAT boot image " * 1000)
    root.write_bytes(b"ext4 root image " * 5000)
    out = tmp_path / f"update-{version}.bundle"
    bundle_mod.write_bundle(out, version=version, boot_image=boot, root_image=root, private_pem=private)
    return out


def card(tmp_path: Path, keys: tuple[bytes, bytes], partition: int = 2, tryboot: bool = False) -> FakeSystem:
    system = FakeSystem(tmp_path / "card", partition, tryboot)
    (system.keys_dir / "release.pub").write_bytes(keys[1])
    (system.autoboot_dir / "autoboot.txt").write_text(Autoboot(2, 3).render())
    (system.base / "mnt/p3").mkdir(parents=True)
    (system.base / "mnt/p3/cmdline.txt").write_text("console=serial0 root=PARTUUID=d35c0001-05 rootwait\n")
    (system.base / "mnt/p6/etc").mkdir(parents=True)
    (system.base / "mnt/p6/etc/fstab").write_text("PARTUUID=d35c0001-05 / ext4 defaults 0 1\n")
    return system


def test_install_writes_the_other_slot_and_arms_one_trial_boot(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    system = card(tmp_path, keys)
    steps: list[str] = []
    state = install(system, make_bundle(tmp_path, keys[0]), job_id="job-7", progress=lambda s, d: steps.append(s))
    assert steps == ["verifying", "writing", "writing", "preparing", "rebooting"]
    assert system.device(3).read_bytes() == b"FAT boot image " * 1000
    assert system.device(6).read_bytes() == b"ext4 root image " * 5000
    assert system.device(2).read_bytes() == system.device(5).read_bytes() == b"old slot"  # the running slot
    assert read_autoboot(system.autoboot_dir) == Autoboot(2, 3)  # committed stays A; trial is B
    assert (state["state"], state["to_slot"], state["job_id"], state["version"]) == ("trying", "B", "job-7", "0.9.1")
    assert read_state(system.autoboot_dir)["state"] == "trying"
    assert system.reboots == ["tryboot"]
    assert "root=PARTUUID=d35c0001-06" in (system.base / "mnt/p3/cmdline.txt").read_text()
    assert (system.base / "mnt/p6/etc/fstab").read_text().startswith("PARTUUID=d35c0001-06 /")
    copied = system.base / "mnt/p6/etc/deskwatch/config.yaml"
    assert copied.read_text() == "device: {id: desk-1}\n"
    original = (system.source_root / "etc/deskwatch/config.yaml").stat()
    assert (copied.stat().st_uid, copied.stat().st_gid, copied.stat().st_mode) == (
        original.st_uid,
        original.st_gid,
        original.st_mode,
    )


def test_a_bundle_signed_with_another_key_writes_nothing(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    system = card(tmp_path, keys)
    stranger = generate_key()[0]
    with pytest.raises(UpdateError, match="unknown key"):
        install(system, make_bundle(tmp_path, stranger))
    assert system.device(3).read_bytes() == system.device(6).read_bytes() == b"old slot"
    assert read_state(system.autoboot_dir) == {} and system.reboots == []


def test_a_tampered_manifest_is_refused(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    system = card(tmp_path, keys)
    good = make_bundle(tmp_path, keys[0])
    bad = tmp_path / "tampered.bundle"
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "manifest.json":
                data = data.replace(b'"0.9.1"', b'"9.9.9"')
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(UpdateError, match="signature does not verify"):
        install(system, bad)
    assert system.device(6).read_bytes() == b"old slot" and system.reboots == []


def test_an_image_that_does_not_match_its_manifest_never_reaches_the_firmware(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    system = card(tmp_path, keys)
    good = make_bundle(tmp_path, keys[0])
    bad = tmp_path / "corrupt.bundle"
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "root.ext4.gz":
                data = gzip.compress(b"ext4 root image " * 4999 + b"EVIL root image ")
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(UpdateError, match="does not match the signed manifest"):
        install(system, bad)
    assert read_autoboot(system.autoboot_dir) == Autoboot(2, 3)
    assert read_state(system.autoboot_dir)["state"] == "failed" and system.reboots == []


def test_no_install_during_a_trial_boot(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    system = card(tmp_path, keys, partition=3, tryboot=True)
    with pytest.raises(UpdateError, match="trial boot"):
        install(system, make_bundle(tmp_path, keys[0]))


READY = {"ActiveState": "active", "SubState": "running", "NRestarts": "0", "MainPID": "812", "Result": "success"}


def trial(tmp_path: Path, keys: tuple[bytes, bytes]) -> FakeSystem:
    system = card(tmp_path, keys)
    install(system, make_bundle(tmp_path, keys[0]))
    system.boot(3, tryboot=True)  # the firmware starts slot B once
    system.version = "0.9.1"
    system.reboots.clear()
    return system


def test_a_healthy_trial_commits(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    system = trial(tmp_path, keys)
    system.units = [{"ActiveState": "activating", "SubState": "start"}, READY]
    state = confirm(system, Health(ready_timeout=60, settle=10))
    assert state["state"] == "committed" and "READY at 0.9.1" in state["reason"]
    assert read_autoboot(system.autoboot_dir).boot_partition == 3 and system.reboots == []


def test_a_daemon_that_exits_fails_the_check_and_the_old_slot_records_the_rollback(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    system = trial(tmp_path, keys)
    system.units = [
        {"ActiveState": "activating", "SubState": "auto-restart", "Result": "exit-code", "ExecMainStatus": "69"}
    ]
    state = confirm(system, Health(ready_timeout=60, settle=10))
    assert state["state"] == "rolling_back" and "exit status 69" in state["reason"]
    assert system.reboots == ["plain"]  # the firmware will start [all] = A
    assert read_autoboot(system.autoboot_dir).boot_partition == 2
    system.boot(2, tryboot=False)
    system.version = "0.9.0"
    state = confirm(system)
    assert state["state"] == "rolled_back" and "exit status 69" in state["reason"]
    assert json.loads((system.autoboot_dir / "deskwatch-update.json").read_text())["state"] == "rolled_back"


def test_a_daemon_that_restarts_after_ready_fails_the_check(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    system = trial(tmp_path, keys)
    system.units = [READY, READY, {**READY, "NRestarts": "1", "MainPID": "900"}]
    state = confirm(system, Health(ready_timeout=60, settle=10))
    assert state["state"] == "rolling_back" and "did not stay up" in state["reason"]


def test_a_trial_that_never_confirms_is_rolled_back_by_the_firmware(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """Kernel panic, hang until the watchdog, power cut: the flag is gone, A boots again."""
    system = trial(tmp_path, keys)
    system.boot(2, tryboot=False)
    system.version = "0.9.0"
    state = confirm(system)
    assert state["state"] == "rolled_back" and "did not confirm itself" in state["reason"]
    assert read_autoboot(system.autoboot_dir).boot_partition == 2


def test_a_bundle_that_is_not_a_regular_file_is_refused_without_waiting(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """A FIFO at the bundle's name would block root in open(2) until systemd's timeout."""
    import threading

    system = card(tmp_path, keys)
    fifo = tmp_path / "update.bundle"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            install(system, fifo)
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(5)
    hung = runner.is_alive()
    if hung:  # let the blocked reader go
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        runner.join(5)
    assert not hung, "install() blocked on a FIFO"
    assert isinstance(errors[0], UpdateError) and "not a regular file" in str(errors[0])
    assert system.device(6).read_bytes() == b"old slot" and read_state(system.autoboot_dir) == {}


def test_an_older_bundle_is_refused_unless_a_downgrade_is_allowed(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    system = card(tmp_path, keys)  # runs 0.9.0
    old = make_bundle(tmp_path, keys[0], version="0.3.0")
    with pytest.raises(UpdateError, match=r"0\.3\.0 is older than the running 0\.9\.0"):
        install(system, old)
    assert system.device(6).read_bytes() == b"old slot" and read_state(system.autoboot_dir) == {}
    with pytest.raises(UpdateError, match=r"the job names 0\.9\.1"):
        install(system, old, expect_version="0.9.1", allow_downgrade=True)
    assert install(system, old, allow_downgrade=True, reboot=False)["version"] == "0.3.0"
    install(system, make_bundle(tmp_path, keys[0], version="0.9.0"), reboot=False)  # the same version again


@pytest.mark.parametrize(
    ("older", "newer"),
    [("0.3.0", "0.9.0"), ("0.9.0", "0.10.0"), ("0.9", "0.9.1"), ("1.0.0rc1", "1.0.0"), ("1.0.0rc2", "1.0.0rc10")],
)
def test_versions_compare_by_their_numbers(older: str, newer: str) -> None:
    from deskwatch.update.install import version_key

    assert version_key(older) < version_key(newer)
    assert version_key("0.9") == version_key("0.9.0") == version_key("0.9.0+build7")
    with pytest.raises(UpdateError, match="not a version"):
        version_key("latest")
