"""The image boots: the installed root file system in qemu-system-aarch64 (TCG, no KVM).

A freshly flashed A/B card (tools/deskwatch_dev/vmtest.py) with the technician's bundle
on boot A: provisioning under a real systemd, deskwatch.service READY with a replay
camera and a TLS broker inside the machine, the daemon's read-only view of the system,
and a hung daemon (SIGSTOP) restarted by systemd's watchdog. Measured on the 2-core CI
machine, warm caches, load 3-5: power-on to READY 140 s (74 s of it provisioning and its
selftest), watchdog restart 112 s, the whole test about 4.5 min (5 min at load 6-8); the
root file system is shared with test_image_install_layer.py. On a slower 2-core machine
the boot took 528-552 s, a third of the whole `make test`, so it is an image boot behind its
own command, ``make image-boot`` (this file alone, with DESKWATCH_IMAGE_BOOT=1), and not part
of ``make test``. The A/B update scenarios take about 25 minutes: ``make vm-test``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from deskwatch_dev import vm, vmtest
from tests.support.image import ImageRoot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.image_boot,  # deselected unless DESKWATCH_IMAGE_BOOT=1 (tests/conftest.py)
    pytest.mark.timeout(2400),
    pytest.mark.skipif(shutil.which(vm.QEMU) is None, reason="apt-get install qemu-system-arm"),
    pytest.mark.skipif(shutil.which("mcopy") is None, reason="apt-get install mtools"),
    pytest.mark.skipif(shutil.which("dtc") is None, reason="apt-get install device-tree-compiler"),
]


@pytest.fixture(scope="module")
def boot(image_root: ImageRoot, tmp_path_factory: pytest.TempPathFactory) -> vmtest.Report:
    if not image_root.bootable:
        pytest.skip(f"the {image_root.arch} root file system has no kernel: the emulator needs arm64")
    work = tmp_path_factory.mktemp("vm")
    report = vmtest.boot_scenario(image_root.root, work, timeout=float(os.environ.get("DESKWATCH_VM_TIMEOUT", "1500")))
    (work / "console.log").write_text(report.console())
    (work / "disk.img").unlink(missing_ok=True)  # 4 GB sparse: not worth keeping
    marks = report.markers
    print(
        f"\nemulator: disk {report.timings['disk_build_s']} s; power-on to READY "
        f"{report.boots[0].first(r'VMTEST deskwatch_active=True') or -1:.1f} s "
        f"(kernel+initrd+systemd; READY at {marks.get('daemon_ready_monotonic')} s after the kernel started); "
        f"provisioning {marks.get('provision_start_monotonic')}-{marks.get('provision_end_monotonic')} s; "
        f"watchdog restart {marks.get('watchdog_restart_seconds')} s; whole boot {report.timings['boot_s']} s; "
        f"console log {work / 'console.log'}"
    )
    return report


def test_power_on_to_ready_under_a_real_systemd(boot: vmtest.Report) -> None:
    marks = boot.markers
    assert boot.boots[0].ended == "poweroff", boot.console()[-3000:]
    assert marks["slot_partition"] == "2" and marks["tryboot"] == "0"  # the firmware stand-in's device tree
    assert marks["deskwatch_active"] == "True", boot.console()[-3000:]
    assert float(marks["daemon_ready_monotonic"]) > float(marks["daemon_start_monotonic"]) > 0
    assert "agent_error" not in marks, marks["agent_error"]


def test_provisioning_applied_from_the_boot_partition(boot: vmtest.Report) -> None:
    marks = boot.markers
    assert marks["provision_status"] in ("0", "1"), marks  # 1: applied, but the selftest's clock check failed
    assert marks["config_installed"] == "True"
    assert (marks["device_key_mode"], marks["device_key_owner"]) == ("600", "deskwatch")
    assert marks["bundle_left"].split(",") == ["bundle.yaml.applied", "provision-result.txt"]  # secrets gone
    console = boot.console()
    assert "provisioned lab/desk-vm1" in console
    assert "status=31/SYS" not in console  # the selftest's adjtimex no longer kills the unit


def test_the_daemon_sees_a_read_only_system(boot: vmtest.Report) -> None:
    marks = boot.markers
    assert marks["daemon_view_opt_deskwatch"] == "read-only"
    assert marks["daemon_view_etc_deskwatch"] == "read-only"
    assert marks["daemon_view_usr"] == "read-only"
    assert marks["daemon_view_var_lib_deskwatch"] == "writable"


def test_a_hung_daemon_is_restarted_by_the_watchdog(boot: vmtest.Report) -> None:
    marks = boot.markers
    assert marks["watchdog_restarted"] == "True", boot.console()[-3000:]
    journal = [line for line in boot.console().splitlines() if " WATCHDOG " in line]
    assert any("Watchdog timeout (limit 1min 30s)!" in line for line in journal), journal
    assert any("Failed with result 'watchdog'" in line for line in journal), journal
    assert 90 <= float(marks["watchdog_restart_seconds"]) < 300


def test_console_has_no_python_traceback(boot: vmtest.Report) -> None:
    assert "Traceback (most recent call last)" not in boot.console()


def test_firmware_stand_in_reads_autoboot_like_the_pi(tmp_path: Path) -> None:
    """The emulator's firmware: [all] normally, [tryboot] once after `reboot "0 tryboot"`."""
    disk = tmp_path / "disk.img"
    parts = vm.create_disk(disk, root_mib=8)
    vm.write_fat(
        disk,
        parts[vm.AUTOBOOT],
        "AUTOBOOT",
        {"autoboot.txt": b"[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"},
    )
    for n in (vm.BOOT_A, vm.BOOT_B):
        vm.write_fat(
            disk,
            parts[n],
            f"BOOT{n}",
            {"cmdline.txt": f"root=/dev/vda{n + 3}\n".encode(), "vmlinuz": b"k", "initrd.img": b"i"},
        )
    fw = vm.PiFirmware(disk, tmp_path)
    assert (fw.choose().partition, fw.choose().tryboot) == (2, False)
    fw.saw_console("[  155.0] reboot: Restarting system with command '0 tryboot'")
    choice = fw.choose()
    assert (choice.partition, choice.tryboot, choice.cmdline) == (3, True, "root=/dev/vda6")
    assert fw.choose().partition == 2  # one shot: the flag is cleared before the OS starts
