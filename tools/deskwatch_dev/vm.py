"""An emulated Raspberry-Pi-shaped arm64 machine for the appliance image (qemu-system-aarch64, TCG).

The disk has the partition layout of the A/B image (see image-build/README.md):

    p1  FAT  autoboot   autoboot.txt: which boot partition the firmware starts
    p2  FAT  boot A     kernel, initrd, cmdline.txt (root=...p5), the technician's bundle folder
    p3  FAT  boot B     the same for slot B (root=...p6)
    p5  ext4 root A
    p6  ext4 root B
    p7  ext4 data       /var/lib/deskwatch, shared by both slots

:class:`PiFirmware` stands in for the Pi's boot firmware: it reads autoboot.txt from p1,
keeps the one-shot tryboot flag across a reboot (set when the kernel restarts with the
command ``0 tryboot``, cleared before the next boot starts), loads the kernel, initrd and
cmdline.txt from the chosen FAT partition, and passes ``/chosen/bootloader/tryboot`` and
``partition`` in the device tree, as the Pi firmware does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SECTOR = 512
LAYOUT = """label: dos
unit: sectors
start=2048, size=64MiB, type=c
size=96MiB, type=c
size=96MiB, type=c
type=5
size={root_mib}MiB, type=83
size={root_mib}MiB, type=83
size={data_mib}MiB, type=83
"""
AUTOBOOT, BOOT_A, BOOT_B, ROOT_A, ROOT_B, DATA = 1, 2, 3, 5, 6, 7
SLOT_OF_BOOT = {BOOT_A: "A", BOOT_B: "B"}
ROOT_OF_BOOT = {BOOT_A: ROOT_A, BOOT_B: ROOT_B}
QEMU = "qemu-system-aarch64"
CPU = "cortex-a72"  # a Raspberry Pi 4's core; ``cortex-a76`` is a Pi 5's (dot-product int8, fp16)


def machine_args(cpu: str = CPU) -> list[str]:
    return ["-cpu", cpu, "-smp", "2", "-m", "1024"]


@dataclass(frozen=True)
class Partition:
    number: int
    offset: int  # bytes
    size: int  # bytes


class CommandFailed(subprocess.CalledProcessError):
    """A failed command whose message carries what it printed (``CalledProcessError``'s says
    only "exit status 1": qemu's "failed to find romfile" was found by re-running it by hand)."""

    def __str__(self) -> str:
        said = (self.stderr or self.stdout or "").strip().splitlines()[-5:]
        return super().__str__() + ("\n  " + "\n  ".join(said) if said else "")


def run(*cmd: str | os.PathLike[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        [str(c) for c in cmd], check=False, capture_output=True, text=True, **kw
    )
    if done.returncode != 0:
        raise CommandFailed(done.returncode, done.args, done.stdout, done.stderr)
    return done


def partitions(disk: Path) -> dict[int, Partition]:
    table = json.loads(run("sfdisk", "-J", disk).stdout)["partitiontable"]["partitions"]
    out = {}
    for p in table:
        number = int(re.search(r"(\d+)$", p["node"]).group(1))  # type: ignore[union-attr]
        out[number] = Partition(number, p["start"] * SECTOR, p["size"] * SECTOR)
    return out


def create_disk(disk: Path, root_mib: int = 1600, data_mib: int = 1024) -> dict[int, Partition]:
    """The card, sparse. ``data_mib``: /var/lib/deskwatch, where a software job downloads its
    bundle (about 450 MB; a real card's data partition is the rest of the card)."""
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as fh:
        fh.truncate((2048 * SECTOR) + (64 + 2 * 96 + 2 * root_mib + data_mib + 8) * 1024 * 1024)
    layout = LAYOUT.format(root_mib=root_mib, data_mib=data_mib)
    subprocess.run(["sfdisk", "-q", str(disk)], input=layout, text=True, check=True)
    return partitions(disk)


def write_fat(disk: Path, part: Partition, label: str, files: dict[str, bytes | Path]) -> None:
    """A fresh FAT file system in ``part`` holding ``files`` (name -> content or host path)."""
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "fat.img"
        run("mkfs.vfat", "-C", "-n", label, image, str(part.size // 1024))
        for name, content in files.items():
            put_fat_file(image, None, name, content)
        run(
            "dd",
            f"if={image}",
            f"of={disk}",
            f"bs={SECTOR}",
            f"seek={part.offset // SECTOR}",
            "conv=notrunc",
            "status=none",
        )


def _mtools_target(disk: Path, part: Partition | None) -> str:
    return f"{disk}@@{part.offset}" if part is not None else str(disk)


def put_fat_file(disk: Path, part: Partition | None, name: str, content: bytes | Path) -> None:
    target = _mtools_target(disk, part)
    parent = os.path.dirname(name)
    if parent:
        subprocess.run(["mmd", "-D", "s", "-i", target, f"::{parent}"], capture_output=True, check=False)
    if isinstance(content, Path):
        run("mcopy", "-o", "-i", target, content, f"::{name}")
    else:
        with tempfile.NamedTemporaryFile() as fh:
            fh.write(content)
            fh.flush()
            run("mcopy", "-o", "-i", target, fh.name, f"::{name}")


def read_fat_file(disk: Path, part: Partition, name: str) -> bytes | None:
    proc = subprocess.run(["mcopy", "-n", "-i", _mtools_target(disk, part), f"::{name}", "-"], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def fat_listing(disk: Path, part: Partition, folder: str) -> list[str]:
    proc = subprocess.run(
        ["mdir", "-b", "-i", _mtools_target(disk, part), f"::{folder}"], capture_output=True, text=True
    )
    return [line.rsplit("/", 1)[-1] for line in proc.stdout.split()] if proc.returncode == 0 else []


def write_ext4(disk: Path, part: Partition, label: str, tree: Path | None) -> None:
    args = ["mkfs.ext4", "-q", "-F", "-L", label, "-E", f"offset={part.offset}"]
    if tree is not None:
        args += ["-d", str(tree)]
    run(*args, disk, f"{part.size // 1024}k")


# -- the boot firmware stand-in -----------------------------------------------------------------
def parse_autoboot(text: str) -> dict[str, dict[str, str]]:
    """autoboot.txt as {section: {key: value}} (sections [all] and [tryboot])."""
    sections: dict[str, dict[str, str]] = {"all": {}}
    current = "all"
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip().lower()
            sections.setdefault(current, {})
        elif "=" in line:
            key, value = line.split("=", 1)
            sections[current][key.strip()] = value.strip()
    return sections


@dataclass
class BootChoice:
    partition: int
    tryboot: bool
    cmdline: str
    kernel: Path
    initrd: Path


class PiFirmware:
    """The Raspberry Pi firmware's partition choice, for qemu (see the module docstring)."""

    TRYBOOT_COMMAND = re.compile(r"Restarting system with command '0 tryboot'")

    def __init__(self, disk: Path, workdir: Path, cpu: str = CPU):
        self.disk = disk
        self.workdir = workdir
        self.cpu = cpu
        self.tryboot_flag = False  # the Pi keeps it in a register across a reboot, not a power cycle
        self.parts = partitions(disk)

    def choose(self) -> BootChoice:
        text = read_fat_file(self.disk, self.parts[AUTOBOOT], "autoboot.txt")
        sections = parse_autoboot(text.decode() if text else "")
        tryboot = self.tryboot_flag and sections["all"].get("tryboot_a_b") == "1"
        self.tryboot_flag = False  # one shot: cleared before the OS starts
        section = sections.get("tryboot", {}) if tryboot else sections["all"]
        partition = int(section.get("boot_partition") or sections["all"].get("boot_partition") or BOOT_A)
        part = self.parts[partition]
        files = {}
        for name in ("cmdline.txt", "vmlinuz", "initrd.img"):
            content = read_fat_file(self.disk, part, name)
            if content is None:
                raise RuntimeError(f"boot partition {partition} has no {name}: the firmware stops here")
            files[name] = self.workdir / f"p{partition}-{name}"
            files[name].write_bytes(content)
        return BootChoice(
            partition, tryboot, files["cmdline.txt"].read_text().strip(), files["vmlinuz"], files["initrd.img"]
        )

    def saw_console(self, line: str) -> None:
        if self.TRYBOOT_COMMAND.search(line):
            self.tryboot_flag = True

    def power_cycle(self) -> None:
        self.tryboot_flag = False

    def device_tree(self, choice: BootChoice) -> Path:
        """qemu virt's own device tree plus /chosen/bootloader {tryboot, partition}."""
        base = self.workdir / f"virt-{self.cpu}.dtb"
        if not base.exists():
            # No NIC, as at power-on: qemu's default one needs a boot ROM (ipxe-qemu) to start at all.
            run(QEMU, "-machine", f"virt,dumpdtb={base}", *machine_args(self.cpu), "-nographic", "-nic", "none")
        dts = run("dtc", "-q", "-I", "dtb", "-O", "dts", base).stdout
        start = dts.index("chosen {")
        end = dts.index("};", start)
        node = f"\tbootloader {{\n\t\t\ttryboot = <{int(choice.tryboot)}>;\n\t\t\tpartition = <{choice.partition}>;\n\t\t}};\n\t"
        out = self.workdir / f"pi-p{choice.partition}-t{int(choice.tryboot)}.dtb"
        subprocess.run(
            ["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(out)],
            input=dts[:end] + node + dts[end:],
            text=True,
            check=True,
        )
        return out


# -- power on ------------------------------------------------------------------------------------
@dataclass
class Boot:
    choice: BootChoice
    ended: str  # "poweroff", "reboot", "timeout", "exit"
    seconds: float
    lines: list[tuple[float, str]] = field(default_factory=list)

    def markers(self) -> dict[str, str]:
        """The guest agent's ``VMTEST key=value`` lines (last value wins)."""
        out: dict[str, str] = {}
        for _t, line in self.lines:
            m = re.search(r"VMTEST (\w[\w.-]*)=(.*)$", line)
            if m:
                out[m.group(1)] = m.group(2).strip()
        return out

    def first(self, pattern: str) -> float | None:
        rx = re.compile(pattern)
        return next((t for t, line in self.lines if rx.search(line)), None)


class Machine:
    def __init__(self, disk: Path, workdir: Path, extra_drives: list[Path] | None = None, cpu: str = CPU):
        self.disk = disk
        self.workdir = workdir
        self.cpu = cpu
        self.firmware = PiFirmware(disk, workdir, cpu)
        self.extra_drives = extra_drives or []

    def power_on(self, timeout: float, on_line: Callable[[float, str], None] | None = None) -> Boot:
        choice = self.firmware.choose()
        dtb = self.firmware.device_tree(choice)
        cmd = [
            QEMU, "-machine", f"virt,dtb={dtb}", *machine_args(self.cpu), "-nographic", "-no-reboot",
            "-kernel", str(choice.kernel), "-initrd", str(choice.initrd),
            "-append", choice.cmdline,
            "-drive", f"file={self.disk},format=raw,if=virtio",
            "-device", "virtio-rng-pci", "-nic", "none",
        ]  # fmt: skip
        for drive in self.extra_drives:
            cmd += ["-drive", f"file={drive},format=raw,if=virtio,readonly=on"]
        start = time.monotonic()
        boot = Boot(choice, "exit", 0.0)
        timed_out = False
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf = b""
        try:
            while time.monotonic() - start < timeout:
                if not sel.select(timeout=1.0):
                    if proc.poll() is not None:
                        break
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode(errors="replace").rstrip("\r")
                    t = time.monotonic() - start
                    boot.lines.append((t, line))
                    self.firmware.saw_console(line)
                    if on_line:
                        on_line(t, line)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)  # output closed: qemu is on its way out
            if proc.poll() is None:
                timed_out = True
                proc.kill()
                self.firmware.power_cycle()  # the harness pulled the plug
            proc.wait()
            sel.close()
        boot.seconds = time.monotonic() - start
        text = "\n".join(line for _t, line in boot.lines[-40:])
        if timed_out:
            boot.ended = "timeout"
        elif "reboot: Power down" in text:
            boot.ended = "poweroff"
        elif "reboot: Restarting system" in text:
            boot.ended = "reboot"
        return boot
