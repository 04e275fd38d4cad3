"""Install a bundle into the inactive slot, offer it to the firmware once, and confirm or roll back.

Runs as root (``deskwatch update install`` / ``confirm``; the daemon itself never writes
partitions). The sequence and who decides at each step:

1. ``install``: verify the signed manifest (nothing is written before), stream both
   images onto the inactive slot's partitions while hashing them, point the new slot's
   ``cmdline.txt`` and ``fstab`` at its own partitions, copy ``/etc/deskwatch`` (the
   device's config and certificate) into it, set ``[tryboot] boot_partition``, record
   ``trying`` in ``deskwatch-update.json`` and ``reboot "0 tryboot"``.
2. The firmware starts the new slot once.
3. ``confirm`` (``deskwatch-update-confirm.service``, every boot): on the trial slot it
   runs the health check (the daemon reaches READY and stays up, at the bundle's
   version); pass: rewrite ``[all] boot_partition`` (commit); fail: record why and
   reboot plainly, so the firmware starts the old slot. If the trial slot never gets
   that far (kernel panic, hang until the watchdog resets, power cut), the firmware
   starts the old slot all the same; ``confirm`` there records ``rolled_back``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from deskwatch_contract.signing import load_public_keys

from .bundle import KEYS_DIR, Manifest, image_chunks, open_bundle, read_manifest
from .slots import (
    AUTOBOOT_DIR,
    BOOTLOADER_DT,
    BootedFrom,
    Slot,
    UpdateError,
    booted_from,
    other,
    partition_device,
    read_autoboot,
    read_state,
    retarget,
    slot_named,
    write_autoboot,
    write_state,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]  # (step, detail)
SERVICE = "deskwatch.service"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class System:
    """Where the slots, the firmware's answers and the services are; tests point it elsewhere."""

    autoboot_dir: Path = AUTOBOOT_DIR
    dt_dir: Path = BOOTLOADER_DT
    cmdline_file: Path = Path("/proc/cmdline")
    keys_dir: Path = KEYS_DIR
    source_root: Path = Path("/")  # the running slot, whose carry_over paths go to the new one
    carry_over: tuple[str, ...] = ("etc/deskwatch", "etc/machine-id")
    reboots: list[str] = field(default_factory=list)

    def booted(self) -> BootedFrom:
        return booted_from(self.dt_dir)

    def device(self, partition: int) -> Path:
        return partition_device(partition, self.cmdline_file.read_text())

    def reboot(self, tryboot: bool) -> None:
        arg = ["--reboot-argument=0 tryboot"] if tryboot else []
        log.warning("rebooting%s", " into the trial slot (tryboot)" if tryboot else "")
        subprocess.run(["systemctl", "reboot", *arg], check=False)

    @contextlib.contextmanager
    def mounted(self, device: Path, fstype: str) -> Iterator[Path]:
        where = Path(tempfile.mkdtemp(prefix="deskwatch-slot-"))
        subprocess.run(["mount", "-t", fstype, str(device), str(where)], check=True, capture_output=True)
        try:
            yield where
        finally:
            subprocess.run(["umount", str(where)], check=False, capture_output=True)
            with contextlib.suppress(OSError):
                where.rmdir()

    def unit(self, name: str) -> dict[str, str]:
        proc = subprocess.run(
            ["systemctl", "show", name, "-p", "ActiveState,SubState,NRestarts,MainPID,Result,ExecMainStatus"],
            capture_output=True,
            text=True,
            check=False,
        )
        return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)

    def installed_version(self) -> str:
        from .. import __version__

        return __version__

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()


# -- install -----------------------------------------------------------------------------------------
def write_image(system: System, bundle: BinaryIO, manifest: Manifest, name: str, partition: int) -> float:
    image = manifest.images[name]
    device = system.device(partition)
    t0 = time.monotonic()
    fd = os.open(device, os.O_WRONLY)
    try:
        for chunk in image_chunks(bundle, image):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.monotonic() - t0


def prepare_slot(system: System, target: Slot) -> None:
    """The slot-specific lines of the new slot, and the device's own files carried over."""
    source = other(target)
    with system.mounted(system.device(target.boot_partition), "vfat") as boot:
        cmdline = boot / "cmdline.txt"
        if not cmdline.exists():
            raise UpdateError("the new boot image has no cmdline.txt")
        cmdline.write_text(retarget(cmdline.read_text(), source, target))
    with system.mounted(system.device(target.root_partition), "ext4") as root:
        fstab = root / "etc/fstab"
        if fstab.exists():
            fstab.write_text(retarget(fstab.read_text(), source, target))
        for rel in system.carry_over:
            carry(system.source_root / rel, root / rel)
        os.sync()


def carry(src: Path, dst: Path) -> None:
    """Copy a file or tree into the new slot with modes *and owners* (the device key is
    0600 and owned by the service user: a root-owned copy locks the daemon out of it)."""
    if not src.exists():
        return
    if src.is_dir():
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst)
    for path in [dst, *(dst.rglob("*") if dst.is_dir() else [])]:
        st = (src / path.relative_to(dst)).lstat()
        os.lchown(path, st.st_uid, st.st_gid)


def version_key(version: str) -> tuple[Any, ...]:
    """A version as something to compare: its numbers (``0.10.0`` after ``0.9.1``; ``0.9`` is
    ``0.9.0``), a pre-release (``1.0.0rc1``) before its release, a ``+local`` part ignored.
    UpdateError when it does not start with a number."""
    m = re.fullmatch(r"(\d+(?:\.\d+)*)([0-9A-Za-z.-]*)(?:\+[0-9A-Za-z.+-]*)?", version)
    if not m:
        raise UpdateError(f"{version!r} is not a version such as 0.2.0")
    release = [int(part) for part in m.group(1).split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre = tuple((1, int(t)) if t.isdigit() else (0, t.lower()) for t in re.findall(r"\d+|[A-Za-z]+", m.group(2)))
    return (tuple(release), 0 if pre else 1, pre)


def check_version(manifest: Manifest, running: str, *, expect: str | None, allow_downgrade: bool) -> None:
    """The bundle is the version its job names, and not older than what runs unless allowed:
    every old release stays signed, so an old bundle (or its replayed job) must not roll a
    device back to its known bugs without someone saying so."""
    if expect is not None and manifest.version != expect:
        raise UpdateError(f"the bundle is deskwatch {manifest.version} but the job names {expect}")
    if allow_downgrade:
        return
    try:
        older = version_key(manifest.version) < version_key(running)
    except UpdateError as exc:
        raise UpdateError(f"cannot tell whether the bundle is older than what runs: {exc}") from None
    if older:
        raise UpdateError(
            f"the bundle's deskwatch {manifest.version} is older than the running {running}: refused "
            "(a downgrade needs a job signed with software.allow_downgrade, or --allow-downgrade)"
        )


def install(
    system: System,
    bundle: Path | BinaryIO,
    *,
    job_id: str | None = None,
    reboot: bool = True,
    progress: Progress | None = None,
    expect_version: str | None = None,
    allow_downgrade: bool = False,
) -> dict[str, Any]:
    """Write ``bundle`` to the inactive slot and (unless ``reboot`` is False) start its trial.

    ``bundle`` is a path (opened once here) or a file already open: the manifest is verified
    and the images are written from that one open file, never from a name that could meanwhile
    name another (signed, older) bundle. ``expect_version``: the version the job names;
    a bundle older than the running version needs ``allow_downgrade``."""
    versions = (expect_version, allow_downgrade)
    if isinstance(bundle, Path):
        with open_bundle(bundle) as fh:
            return _install(system, fh, str(bundle), versions, job_id=job_id, reboot=reboot, progress=progress)
    return _install(system, bundle, "the downloaded bundle", versions, job_id=job_id, reboot=reboot, progress=progress)


def _install(
    system: System,
    bundle: BinaryIO,
    label: str,
    versions: tuple[str | None, bool],
    *,
    job_id: str | None,
    reboot: bool,
    progress: Progress | None,
) -> dict[str, Any]:
    say = progress or (lambda step, detail: None)
    booted = system.booted()
    if booted.tryboot:
        raise UpdateError("this is a trial boot of a new slot: let it confirm or roll back before installing again")
    autoboot = read_autoboot(system.autoboot_dir)
    if booted.partition != autoboot.boot_partition:
        raise UpdateError(
            f"running from partition {booted.partition} but autoboot.txt boots {autoboot.boot_partition}: "
            "fix autoboot.txt before updating"
        )
    current = booted.slot
    target = other(current)
    keys = load_public_keys(system.keys_dir)
    say("verifying", f"{Path(label).name}: signature and manifest")
    manifest = read_manifest(bundle, keys, path=label)
    expect_version, allow_downgrade = versions
    check_version(manifest, system.installed_version(), expect=expect_version, allow_downgrade=allow_downgrade)
    state: dict[str, Any] = {
        "state": "installing",
        "version": manifest.version,
        "from_version": system.installed_version(),
        "from_slot": current.name,
        "to_slot": target.name,
        "job_id": job_id,
        "started_at": _now(),
        "key_id": manifest.key_id,
    }
    write_state(state, system.autoboot_dir)
    timings: dict[str, float] = {}
    try:
        for name, partition in (("boot", target.boot_partition), ("root", target.root_partition)):
            say("writing", f"{name} image ({manifest.images[name].bytes // 2**20} MiB) to slot {target.name}")
            timings[f"write_{name}_s"] = round(write_image(system, bundle, manifest, name, partition), 1)
        say("preparing", f"slot {target.name}: its partitions, and /etc/deskwatch carried over")
        prepare_slot(system, target)
    except (UpdateError, OSError, subprocess.CalledProcessError) as exc:
        state.update(state="failed", reason=str(exc), finished_at=_now())
        write_state(state, system.autoboot_dir)
        raise UpdateError(
            f"installing into slot {target.name} failed, nothing changed for the firmware: {exc}"
        ) from exc
    autoboot.tryboot_partition = target.boot_partition
    write_autoboot(autoboot, system.autoboot_dir)
    state.update(state="trying", installed_at=_now(), timings=timings)
    write_state(state, system.autoboot_dir)
    log.info(
        "update %s written to slot %s in %s; trial boot next",
        manifest.version,
        target.name,
        ", ".join(f"{k} {v} s" for k, v in timings.items()),
        extra={"journal": {"DESKWATCH_EVENT": "update_installed", "UPDATE_VERSION": manifest.version}},
    )
    if reboot:
        say("rebooting", f"trial boot of slot {target.name} ({manifest.version})")
        system.reboot(tryboot=True)
    return state


# -- confirm (every boot) ------------------------------------------------------------------------------
@dataclass
class Health:
    ready_timeout: float = 300.0  # the daemon must reach READY within this
    settle: float = 30.0  # ... and stay up, without a restart, this long


def health_check(system: System, expected_version: str, health: Health) -> tuple[bool, str]:
    """(passed, why): the daemon is READY at the new version and stays up."""
    version = system.installed_version()
    if version != expected_version:
        return False, f"the trial slot runs deskwatch {version}, the bundle promised {expected_version}"
    deadline = system.monotonic() + health.ready_timeout
    state: dict[str, str] = {}
    while system.monotonic() < deadline:
        state = system.unit(SERVICE)
        if state.get("ActiveState") == "active" and state.get("SubState") == "running":
            break
        if state.get("ActiveState") == "failed" or state.get("SubState") == "auto-restart":
            return False, (
                f"{SERVICE} exited before READY (result {state.get('Result')}, "
                f"exit status {state.get('ExecMainStatus')}): see journalctl -u {SERVICE}"
            )
        system.sleep(2.0)
    else:
        return False, (
            f"{SERVICE} not READY within {health.ready_timeout:.0f} s "
            f"(state {state.get('ActiveState')}/{state.get('SubState')}, restarts {state.get('NRestarts')})"
        )
    restarts, pid = state.get("NRestarts"), state.get("MainPID")
    end = system.monotonic() + health.settle
    while system.monotonic() < end:
        system.sleep(2.0)
        now = system.unit(SERVICE)
        if now.get("ActiveState") != "active" or now.get("NRestarts") != restarts or now.get("MainPID") != pid:
            return False, (
                f"{SERVICE} did not stay up for {health.settle:.0f} s after READY "
                f"(state {now.get('ActiveState')}/{now.get('SubState')}, restarts {now.get('NRestarts')})"
            )
    return True, f"{SERVICE} READY at {version} and up for {health.settle:.0f} s"


def confirm(system: System, health: Health | None = None) -> dict[str, Any]:
    """Decide the fate of a pending update on this boot; returns the (updated) record."""
    state = read_state(system.autoboot_dir)
    if state.get("state") not in ("trying", "rolling_back"):
        return state
    booted = system.booted()
    target = slot_named(str(state.get("to_slot")))
    if booted.tryboot and booted.partition == target.boot_partition and state["state"] == "trying":
        t0 = system.monotonic()
        ok, why = health_check(system, str(state.get("version")), health or Health())
        state["health_check_s"] = round(system.monotonic() - t0, 1)
        if ok:
            autoboot = read_autoboot(system.autoboot_dir)
            autoboot.boot_partition = target.boot_partition
            write_autoboot(autoboot, system.autoboot_dir)
            state.update(state="committed", reason=why, finished_at=_now())
            write_state(state, system.autoboot_dir)
            log.info(
                "update %s committed: slot %s boots from now on (%s)",
                state.get("version"),
                target.name,
                why,
                extra={"journal": {"DESKWATCH_EVENT": "update_committed", "UPDATE_VERSION": str(state.get("version"))}},
            )
            return state
        state.update(state="rolling_back", reason=why)
        write_state(state, system.autoboot_dir)
        log.error(
            "update %s failed its health check: %s; rebooting into slot %s",
            state.get("version"),
            why,
            state.get("from_slot"),
            extra={"journal": {"DESKWATCH_EVENT": "update_failed", "UPDATE_VERSION": str(state.get("version"))}},
        )
        system.reboot(tryboot=False)
        return state
    if booted.partition == target.boot_partition:
        return state  # the trial slot, booted normally: cannot happen before a commit; leave it alone
    reason = state.get("reason") if state["state"] == "rolling_back" else None
    state.update(
        state="rolled_back",
        reason=reason or "the new slot did not confirm itself (crash, hang or power loss during its trial boot)",
        finished_at=_now(),
    )
    write_state(state, system.autoboot_dir)
    log.error(
        "update %s rolled back: running slot %s (%s) again: %s",
        state.get("version"),
        booted.slot.name,
        system.installed_version(),
        state["reason"],
        extra={"journal": {"DESKWATCH_EVENT": "update_rolled_back", "UPDATE_VERSION": str(state.get("version"))}},
    )
    return state
