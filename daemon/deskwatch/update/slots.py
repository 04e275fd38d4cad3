"""A/B slots the Raspberry Pi way: ``autoboot.txt`` and the firmware's one-shot tryboot flag.

The SD card (see image-build/README.md)::

    p1 FAT autoboot   autoboot.txt, deskwatch-update.json (mounted at /boot/autoboot)
    p2 FAT boot A     p3 FAT boot B     (kernel, initrd, cmdline.txt; /boot/firmware)
    p5 ext4 root A    p6 ext4 root B    p7 ext4 data (/var/lib/deskwatch)

``autoboot.txt`` (read by the firmware from p1)::

    [all]
    tryboot_a_b=1
    boot_partition=2      # the committed slot
    [tryboot]
    boot_partition=3      # the slot on trial

``reboot "0 tryboot"`` sets the one-shot flag: the firmware clears it and starts the
``[tryboot]`` partition once. Any later reset (a crash, a watchdog, a power cut, or our
own plain reboot after a failed health check) starts ``[all]`` again: the old slot.
Committing means rewriting ``[all] boot_partition``. The firmware tells the booted
system which partition it started and whether it was a trial in
``/proc/device-tree/chosen/bootloader/{partition,tryboot}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deskwatch.system.files import write_atomically

AUTOBOOT_DIR = Path("/boot/autoboot")
AUTOBOOT_FILE = "autoboot.txt"
STATE_FILE = "deskwatch-update.json"
BOOTLOADER_DT = Path("/proc/device-tree/chosen/bootloader")


class UpdateError(Exception):
    """An update cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Slot:
    name: str
    boot_partition: int
    root_partition: int


SLOTS = (Slot("A", 2, 5), Slot("B", 3, 6))


def slot_named(name: str) -> Slot:
    for slot in SLOTS:
        if slot.name == name:
            return slot
    raise UpdateError(f"no slot {name!r} (slots are A and B)")


def slot_of_boot_partition(partition: int) -> Slot:
    for slot in SLOTS:
        if slot.boot_partition == partition:
            return slot
    raise UpdateError(f"boot partition {partition} is not an A/B slot (expected 2 or 3): is this an A/B image?")


def other(slot: Slot) -> Slot:
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


# -- autoboot.txt --------------------------------------------------------------------------------
@dataclass
class Autoboot:
    boot_partition: int
    tryboot_partition: int
    tryboot_a_b: bool = True

    @classmethod
    def parse(cls, text: str) -> Autoboot:
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
                key, value = (part.strip() for part in line.split("=", 1))
                sections[current][key] = value
        main, trial = sections["all"], sections.get("tryboot", {})
        try:
            boot = int(main["boot_partition"])
            tryboot = int(trial.get("boot_partition", boot))
        except (KeyError, ValueError):
            raise UpdateError("autoboot.txt has no [all] boot_partition=N: this card is not set up for A/B") from None
        return cls(boot, tryboot, main.get("tryboot_a_b") == "1")

    def render(self) -> str:
        return (
            "# Written by deskwatch: the firmware boots [all] boot_partition; after\n"
            '# `reboot "0 tryboot"` it boots [tryboot] boot_partition once.\n'
            "[all]\n"
            f"tryboot_a_b={int(self.tryboot_a_b)}\n"
            f"boot_partition={self.boot_partition}\n"
            "[tryboot]\n"
            f"boot_partition={self.tryboot_partition}\n"
        )


def _write_atomically(path: Path, data: bytes) -> None:
    write_atomically(path, data, 0o644, tmp=path.with_name(path.name + ".new"))


def read_autoboot(directory: Path = AUTOBOOT_DIR) -> Autoboot:
    path = directory / AUTOBOOT_FILE
    try:
        return Autoboot.parse(path.read_text())
    except FileNotFoundError:
        raise UpdateError(f"{path} is missing: the autoboot partition is not mounted or the card is not A/B") from None


def write_autoboot(autoboot: Autoboot, directory: Path = AUTOBOOT_DIR) -> None:
    _write_atomically(directory / AUTOBOOT_FILE, autoboot.render().encode())


# -- what the firmware booted ---------------------------------------------------------------------
@dataclass(frozen=True)
class BootedFrom:
    partition: int
    tryboot: bool

    @property
    def slot(self) -> Slot:
        return slot_of_boot_partition(self.partition)


def booted_from(dt_dir: Path = BOOTLOADER_DT) -> BootedFrom:
    try:
        partition = int.from_bytes((dt_dir / "partition").read_bytes()[:4], "big")
        tryboot = int.from_bytes((dt_dir / "tryboot").read_bytes()[:4], "big") == 1
    except OSError:
        raise UpdateError(
            f"{dt_dir} is missing: the firmware did not say which partition it booted (not a Raspberry Pi?)"
        ) from None
    return BootedFrom(partition, tryboot)


# -- the update record (on the autoboot partition, shared by both slots) ---------------------------
def read_state(directory: Path = AUTOBOOT_DIR) -> dict[str, Any]:
    path = directory / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        return {"state": "unknown", "reason": f"{path} unreadable: {exc}"}
    return data if isinstance(data, dict) else {}


def write_state(state: dict[str, Any], directory: Path = AUTOBOOT_DIR) -> None:
    _write_atomically(directory / STATE_FILE, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode())


# -- partition devices and the slot-specific lines -------------------------------------------------
ROOT_ARG = re.compile(r"(?:^|\s)root=(\S+)")


def partition_device(number: int, cmdline: str) -> Path:
    """The block device of partition ``number`` on the disk the kernel's root= names."""
    m = ROOT_ARG.search(cmdline)
    if not m:
        raise UpdateError("the kernel command line has no root=: cannot tell which disk holds the slots")
    root = m.group(1)
    uuid = re.fullmatch(r"PARTUUID=([0-9a-fA-F]{8})-(\d{2})", root)
    if uuid:
        return Path(f"/dev/disk/by-partuuid/{uuid.group(1).lower()}-{number:02d}")
    dev = re.fullmatch(r"(/dev/\S*?\d)p(\d+)|(/dev/[a-z]+)(\d+)", root)
    if dev and dev.group(1):
        return Path(f"{dev.group(1)}p{number}")
    if dev and dev.group(3):
        return Path(f"{dev.group(3)}{number}")
    raise UpdateError(f"root={root} is neither PARTUUID=xxxxxxxx-NN nor a /dev partition")


def retarget(text: str, old: Slot, new: Slot) -> str:
    """cmdline.txt or fstab with ``old``'s partitions replaced by ``new``'s (PARTUUID or /dev names)."""
    swaps = {old.root_partition: new.root_partition, old.boot_partition: new.boot_partition}

    def fix(m: re.Match[str]) -> str:
        number = int(m.group(2))
        if number not in swaps:
            return m.group(0)
        width = len(m.group(2))
        return f"{m.group(1)}{swaps[number]:0{width}d}"

    return re.sub(r"(PARTUUID=[0-9a-fA-F]{8}-|/dev/mmcblk\d+p|/dev/[sv]d[a-z])(\d+)\b", fix, text)
