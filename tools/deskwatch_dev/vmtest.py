"""The appliance image in the emulator: boot, provisioning, watchdog, and A/B updates.

``python -m deskwatch_dev.vmtest boot`` (also tests/appliance/test_image_emulator.py: ``make image-boot``),
``python -m deskwatch_dev.vmtest ab`` (``make vm-test``; about 25 minutes, not in CI) and
``python -m deskwatch_dev.vmtest bench`` (``make vm-bench``: ``deskwatch bench`` on arm64 beside
this machine, :mod:`deskwatch_dev.vmbench`; about 35 minutes with one run, not in CI).

What the guest gets on top of the installed root file system (test image only): the
agent (``vm_agent.py``, reports ``VMTEST key=value`` lines on the serial console), a
Mosquitto with TLS and client certificates on 127.0.0.1 (the machine has no network),
a replay camera directory, the A/B fstab, and the technician's bundle on boot A. The
machine itself is :mod:`deskwatch_dev.vm`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deskwatch_dev import vm

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PHOTOS = REPO / "tests/data/photos"
DISK_ID = "d35c0001"
DEVICE_ID = "desk-vm1"
SITE = "lab"
FRAMES = ("empty_04.jpg", "single_01.jpg", "single_03.jpg", "face_01.jpg")
VENV_SITE = "opt/deskwatch/venv/lib/python3.11/site-packages"
MODELS = "opt/deskwatch/venv/share/deskwatch/models"
BUNDLE_YAML = f"""device: {{id: {DEVICE_ID}, site: {SITE}, worker_id: w-1}}
mqtt:
  host: localhost
  port: 8883
camera:
  backend: replay
  source: /usr/share/deskwatch-vmtest/frames
  burst_frames: 3
  burst_seconds: 1.0
schedule:
  timezone: UTC
  shifts: [{{days: [mon, tue, wed, thu, fri, sat, sun], start: '00:00', end: '24:00'}}]
  mode: interval
  interval_seconds: 60
  # the guest has no NTP server to reach: scan by its clock as it is
  require_synced_clock: false
"""


def partuuid(number: int) -> str:
    return f"PARTUUID={DISK_ID}-{number:02d}"


def make_pki(directory: Path) -> Path:
    """The fleet CA, the broker's certificate (``broker.crt``, localhost) and the device's
    (``device.crt``, CN ``site/device id``), made with the project's own ``deskwatch-ca``
    as a technician would make them."""
    from deskwatch_contract import access, ca

    ca_dir = directory / "ca"
    if not (ca_dir / "ca.key").exists():
        ca.init(ca_dir, days=30, name="vm test CA")
    ca.server(ca_dir, "localhost", directory, ips=["127.0.0.1"], days=30)
    ca.issue(ca_dir, access.device(SITE, DEVICE_ID), directory, days=30)
    return directory


def guest_files(root: Path, pki: Path) -> list[Path]:
    """Put the test-only files into ``root``; returns what was added (to take it out again)."""
    added: list[Path] = []

    def put(rel: str, content: bytes | Path, mode: int = 0o644) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            added.append(path)
        if isinstance(content, Path):
            shutil.copyfile(content, path)
        else:
            path.write_bytes(content)
        path.chmod(mode)

    # the A/B layout: each slot's fstab names its own partitions (install.retarget adjusts it)
    put(
        "etc/fstab",
        (
            f"{partuuid(vm.ROOT_A)}  /                   ext4  defaults,noatime  0 1\n"
            f"{partuuid(vm.BOOT_A)}  /boot/firmware      vfat  defaults,umask=0077  0 2\n"
            f"{partuuid(vm.AUTOBOOT)}  /boot/autoboot      vfat  defaults,umask=0077  0 2\n"
            f"{partuuid(vm.DATA)}  /var/lib/deskwatch  ext4  defaults,noatime  0 2\n"
        ).encode(),
    )
    put("etc/hostname", b"deskwatch-vm\n")
    put("etc/hosts", b"127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tdeskwatch-vm\n")
    (root / "boot/autoboot").mkdir(parents=True, exist_ok=True)
    put("usr/local/lib/deskwatch-vmtest/agent.py", HERE / "vm_agent.py", 0o755)
    put(
        "etc/systemd/system/deskwatch-vmtest.service",
        b"[Unit]\nDescription=deskwatch emulator test agent (test image only)\nAfter=basic.target\n"
        b"[Service]\nType=simple\nExecStart=/usr/bin/python3 /usr/local/lib/deskwatch-vmtest/agent.py\n"
        b"[Install]\nWantedBy=multi-user.target\n",
    )
    link = root / "etc/systemd/system/multi-user.target.wants/deskwatch-vmtest.service"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/etc/systemd/system/deskwatch-vmtest.service")
        added.append(link)
    for name in FRAMES:
        put(f"usr/share/deskwatch-vmtest/frames/{name}", PHOTOS / name)
    for name in ("ca.crt", "broker.crt", "broker.key"):
        put(f"etc/mosquitto/certs/{name}", pki / name, 0o644)  # a throwaway broker key, readable by mosquitto
    put(
        "etc/mosquitto/conf.d/vmtest.conf",
        b"listener 8883 127.0.0.1\ncafile /etc/mosquitto/certs/ca.crt\ncertfile /etc/mosquitto/certs/broker.crt\n"
        b"keyfile /etc/mosquitto/certs/broker.key\nrequire_certificate true\nuse_identity_as_username true\n",
    )
    return added


def kernel_files(root: Path) -> tuple[Path, Path]:
    kernel = sorted((root / "boot").glob("vmlinuz-*"))
    initrd = sorted((root / "boot").glob("initrd.img-*"))
    if not kernel or not initrd:
        raise RuntimeError(
            f"{root}/boot has no kernel and initramfs: build it from deskwatch_dev.imageroot.machine_tarball"
        )
    return kernel[-1], initrd[-1]


def cmdline(root_partition: int, extra: str = "") -> bytes:
    line = f"console=ttyAMA0 root={partuuid(root_partition)} rootfstype=ext4 rw rootwait quiet {extra}"
    return line.strip().encode() + b"\n"


def data_tree(work: Path, root: Path) -> Path:
    """The data partition's top directory: /var/lib/deskwatch, owned by the service user."""
    tree = work / "data-tree"
    tree.mkdir(exist_ok=True)
    passwd = (root / "etc/passwd").read_text().splitlines()
    uid, gid = next((int(f[2]), int(f[3])) for f in (line.split(":") for line in passwd) if f[0] == "deskwatch")
    os.chown(tree, uid, gid)
    tree.chmod(0o700)
    return tree


def build_disk(
    disk: Path, root: Path, work: Path, pki: Path, *, scenario: str, kernel_args: str = ""
) -> dict[str, float]:
    """The A/B card: autoboot, boot A with the technician's bundle, root A, data; slot B empty."""
    t0 = time.monotonic()
    parts = vm.create_disk(disk)
    subprocess.run(["sfdisk", "--disk-id", str(disk), f"0x{DISK_ID}"], check=True, capture_output=True)
    kernel, initrd = kernel_files(root)
    vm.write_fat(
        disk,
        parts[vm.AUTOBOOT],
        "AUTOBOOT",
        {
            "autoboot.txt": b"[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n",
            "vmtest/scenario": scenario.encode() + b"\n",
        },
    )
    vm.write_fat(
        disk,
        parts[vm.BOOT_A],
        "BOOTA",
        {
            "vmlinuz": kernel,
            "initrd.img": initrd,
            "cmdline.txt": cmdline(vm.ROOT_A, kernel_args),
            "deskwatch/bundle.yaml": BUNDLE_YAML.encode(),
            "deskwatch/ca.crt": pki / "ca.crt",
            "deskwatch/device.crt": pki / "device.crt",
            "deskwatch/device.key": pki / "device.key",
        },
    )
    vm.write_ext4(disk, parts[vm.ROOT_A], "rootA", root)
    vm.write_ext4(disk, parts[vm.DATA], "data", data_tree(work, root))
    return {"disk_build_s": round(time.monotonic() - t0, 1)}


# -- update bundles -------------------------------------------------------------------------------
def boot_image(out: Path, root: Path) -> None:
    kernel, initrd = kernel_files(root)
    out.unlink(missing_ok=True)
    vm.run("mkfs.vfat", "-C", "-n", "BOOT", out, str(96 * 1024))
    vm.put_fat_file(out, None, "vmlinuz", kernel)
    vm.put_fat_file(out, None, "initrd.img", initrd)
    vm.put_fat_file(out, None, "cmdline.txt", cmdline(vm.ROOT_A))


def root_image(out: Path, root: Path, version: str, *, break_model: bool) -> None:
    """The root file system as a shrunk ext4 image, at ``version``; ``break_model`` truncates
    the object model, so the new daemon refuses to start (exit 69): the failed update."""
    init = root / VENV_SITE / "deskwatch/__init__.py"
    model = next((root / MODELS).glob("nanodet*int8*.tflite"))
    original, model_bytes = init.read_text(), model.read_bytes()
    try:
        text = "\n".join(
            f'__version__ = "{version}"' if line.startswith("__version__ = ") else line
            for line in original.splitlines()
        )
        init.write_text(text + "\n")
        if break_model:
            model.write_bytes(model_bytes[: len(model_bytes) // 2])
        out.unlink(missing_ok=True)
        vm.run("mkfs.ext4", "-q", "-F", "-L", "root", "-d", root, out, "1600M")
    finally:
        init.write_text(original)
        model.write_bytes(model_bytes)
    vm.run("e2fsck", "-fy", out)
    vm.run("resize2fs", "-M", out)
    dump = vm.run("dumpe2fs", "-h", out).stdout
    blocks, size = (int(dump.split(f"{k}:")[1].split()[0]) for k in ("Block count", "Block size"))
    os.truncate(out, blocks * size)


def make_bundle(work: Path, root: Path, name: str, version: str, key: Path, *, break_model: bool) -> Path:
    from deskwatch.update.bundle import write_bundle

    boot, image = work / "boot.vfat", work / f"root-{name}.ext4"
    if not boot.exists():
        boot_image(boot, root)
    root_image(image, root, version, break_model=break_model)
    out = work / f"update-{name}.bundle"
    write_bundle(out, version=version, boot_image=boot, root_image=image, private_pem=key.read_bytes())
    image.unlink()
    return out


# -- scenarios ----------------------------------------------------------------------------------------
@dataclass
class Report:
    timings: dict[str, float] = field(default_factory=dict)
    boots: list[vm.Boot] = field(default_factory=list)

    @property
    def markers(self) -> dict[str, str]:
        return self.boots[-1].markers() if self.boots else {}

    def console(self) -> str:
        return "\n".join(f"{t:7.1f} {line}" for boot in self.boots for t, line in boot.lines)


Echo = Callable[[float, str], None]


def boot_scenario(root: Path, work: Path, *, echo: Echo | None = None, timeout: float = 1200) -> Report:
    """Power on a freshly flashed card: provisioning, READY, read-only view, watchdog restart."""
    pki = make_pki(work / "pki")
    added = guest_files(root, pki)
    disk = work / "disk.img"
    try:
        report = Report(build_disk(disk, root, work, pki, scenario="boot"))
    finally:
        for path in reversed(added):
            path.unlink(missing_ok=True)
    machine = vm.Machine(disk, work)
    boot = machine.power_on(timeout=timeout, on_line=echo)
    report.boots.append(boot)
    report.timings["boot_s"] = round(boot.seconds, 1)
    return report


def ab_scenario(root: Path, work: Path, keys: Path, *, echo: Echo | None = None, timeout: float = 1500) -> Report:
    """A good update that commits, then a bad one that fails its health check and rolls back.

    ``keys`` holds ``updates.pem``, whose public half the image trusts, and ``jobs.pem``: with
    it, each update is a signed software job, a signed config job before the good one, run
    as the central side's would be: through deskwatch-jobs.path and the sandboxed
    deskwatch-jobs.service (without it, the guest runs ``deskwatch update install``)."""
    pki = make_pki(work / "pki")
    report = Report()
    added = guest_files(root, pki)
    try:
        t0 = time.monotonic()
        bundles = {
            "good": make_bundle(work, root, "good", "0.9.1", keys / "updates.pem", break_model=False),
            "bad": make_bundle(work, root, "bad", "0.9.2", keys / "updates.pem", break_model=True),
        }
        report.timings["bundles_s"] = round(time.monotonic() - t0, 1)
        disk = work / "disk.img"
        report.timings.update(build_disk(disk, root, work, pki, scenario="install"))
    finally:
        for path in reversed(added):
            path.unlink(missing_ok=True)
    parts = vm.partitions(disk)
    for round_name in ("good", "bad"):
        vm.put_fat_file(disk, parts[vm.AUTOBOOT], "vmtest/scenario", b"install\n")
        if (keys / "jobs.pem").exists():  # the update as a remote job, a config job before the good one
            for name, job in remote_jobs(round_name, bundles[round_name], keys / "jobs.pem").items():
                vm.put_fat_file(disk, parts[vm.AUTOBOOT], f"vmtest/jobs/{name}.json", job)
        machine = vm.Machine(disk, work, extra_drives=[bundles[round_name]])
        started = time.monotonic()
        for n in range(1, 5):
            boot = machine.power_on(timeout=timeout, on_line=echo)
            report.boots.append(boot)
            report.timings[f"{round_name}_boot{n}_s"] = round(boot.seconds, 1)
            if boot.ended != "reboot":
                break
        report.timings[f"{round_name}_total_s"] = round(time.monotonic() - started, 1)
    return report


def remote_jobs(round_name: str, bundle: Path, key: Path) -> dict[str, bytes]:
    """Signed jobs for this device, as the collector sends them: queued in the guest, they
    run through deskwatch-jobs.path and the sandboxed deskwatch-jobs.service (file name =
    job id). The software job reads the bundle from the drive it is attached as (/dev/vdb)."""
    import hashlib

    from deskwatch_collector.jobs import make_job
    from deskwatch_contract.jobs import ENVELOPE_SCHEMA
    from deskwatch_contract.jsonutil import dumps_bytes
    from deskwatch_contract.signing import seal

    if bundle.stat().st_size % 512:  # a drive is whole sectors: the job names what the guest reads
        with open(bundle, "ab") as fh:
            fh.write(bytes(512 - bundle.stat().st_size % 512))
    digest = hashlib.sha256()
    with open(bundle, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    version = "0.9.1" if round_name == "good" else "0.9.2"
    artifact = {"url": "file:///dev/vdb", "sha256": digest.hexdigest(), "bytes": bundle.stat().st_size}
    target = [f"{SITE}/{DEVICE_ID}"]
    docs = {f"software-{round_name}": make_job(f"software-{round_name}", "software", devices=target,
                                                artifact={**artifact, "version": version})}  # fmt: skip
    if round_name == "good":
        docs["config-interval"] = make_job(
            "config-interval", "config", devices=target, config_set={"schedule.interval_seconds": 120}
        )
    return {name: dumps_bytes(seal(doc, key.read_bytes(), ENVELOPE_SCHEMA)) for name, doc in docs.items()}


def _echo_markers(t: float, line: str) -> None:
    if "VMTEST" in line or "Restarting system" in line or "WATCHDOG" in line or line.startswith("JOBS"):
        print(f"{t:7.1f} {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    from deskwatch_dev import imageroot

    parser = argparse.ArgumentParser(prog="python -m deskwatch_dev.vmtest", description=__doc__)
    parser.add_argument("scenario", choices=["boot", "ab", "bench"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/deskwatch-vm"), help="scratch directory (GBs)")
    bench = parser.add_argument_group("bench (deskwatch_dev.vmbench: the bench on arm64 beside this machine)")
    bench.add_argument("--photos", type=Path, help="every photo in DIR (default: ten of tests/data/photos)")
    bench.add_argument(
        "--runs", type=int, default=1, help="bench runs on each machine (default 1; 0: the model probe only)"
    )
    bench.add_argument("--bench-args", default=None, help="extra bench flags (default '--no-hog --no-faceid')")
    bench.add_argument("--no-native", action="store_true", help="skip the same bench on this machine")
    bench.add_argument(
        "--kernel-args", default="", help="added to the guest kernel's command line (transparent_hugepage=madvise)"
    )
    bench.add_argument(
        "--cpu", default=vm.CPU, help=f"the emulated core (default {vm.CPU}, a Pi 4's; cortex-a76: a Pi 5's)"
    )
    args = parser.parse_args(argv)
    why = imageroot.can_build("arm64")
    if why or not shutil.which(vm.QEMU):
        print(f"cannot run: {why or 'apt-get install qemu-system-arm'}", file=sys.stderr)
        return 69
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    t0 = time.monotonic()
    keys = args.work / "keys"
    for kind in ("updates", "jobs"):
        from deskwatch_contract.signing import generate_key

        (keys / "public" / kind).mkdir(parents=True, exist_ok=True)
        private, public = generate_key()
        (keys / "public" / kind / "vmtest.pub").write_bytes(public)
        (keys / f"{kind}.pem").write_bytes(private)
    if args.scenario == "bench":
        from deskwatch_dev import vmbench

        photos = vmbench.stage_photos(
            vmbench.photo_set(args.photos or PHOTOS, None if args.photos else vmbench.PHOTOS), args.work / "photos"
        )
        bench_args = vmbench.BENCH_ARGS if args.bench_args is None else args.bench_args
        native = [] if args.no_native else vmbench.native_runs(photos, bench_args, args.runs)
        (args.work / "x86-bench.json").write_text(json.dumps(native, indent=1))
        t0 = time.monotonic()
    root = args.work / "rootfs"
    imageroot.install_layer(root, imageroot.machine_tarball("arm64"), keys=keys / "public", arch="arm64")
    install_s = time.monotonic() - t0
    print(f"root file system installed in {install_s:.0f} s", flush=True)
    try:
        if args.scenario == "bench":
            report, outputs = vmbench.bench_scenario(
                root,
                args.work,
                photos,
                bench_args,
                args.runs,
                cpu=args.cpu,
                kernel_args=args.kernel_args,
                echo=_echo_markers,
            )
            (args.work / "console.log").write_text(report.console())
            vmbench.print_report(report, outputs, native, install_s, args.work, root)
            return 0
        if args.scenario == "boot":
            report = boot_scenario(root, args.work, echo=_echo_markers)
        else:
            report = ab_scenario(root, args.work, keys, echo=_echo_markers)
    finally:
        for m in reversed(imageroot.mounts_under(root)):
            subprocess.run(["umount", "-l", m], check=False)
    (args.work / "console.log").write_text(report.console())
    print(json.dumps(report.timings, indent=1))
    for n, boot in enumerate(report.boots, 1):
        marks = boot.markers()
        print(
            f"power-on {n}: firmware chose p{boot.choice.partition} (tryboot={int(boot.choice.tryboot)}), "
            f"{boot.ended} after {boot.seconds:.1f} s; update state {marks.get('update_state', '-')}; "
            f"{marks.get('running_version', '')}"
        )
    print(f"console log: {args.work / 'console.log'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
