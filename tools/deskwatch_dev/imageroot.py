"""The appliance's root file system, built the way the image builds it, for tests and the emulator.

- :func:`base_tarball`: Debian bookworm (minbase plus what
  ``image-build/stage-deskwatch/00-deskwatch/00-packages`` provides, minus the Pi-only
  packages), debootstrapped once and cached as a tarball;
- :func:`machine_tarball`: that base plus what a bootable machine needs and Raspberry Pi
  OS brings by itself (a kernel with its initramfs, init, udev) and the test broker
  (Mosquitto inside the emulated machine), also cached;
- :func:`install_layer`: ``image-build/install-layer.sh`` run on an extracted copy.

arm64 (the Pi's architecture) runs under qemu-user-static when binfmt emulation is
registered, else the host's own architecture; ``DESKWATCH_IMAGE_ARCH`` forces one. The
cache is ``/var/cache/deskwatch-test`` (``DESKWATCH_TEST_CACHE``), pip's cache beside it.
Measured on the 2-core CI machine (arm64): debootstrap 516 s cold, the machine layer
198 s cold, the install layer 245 s cold / about 120 s warm.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("DESKWATCH_TEST_CACHE", "/var/cache/deskwatch-test"))
SUITE = "bookworm"
MIRROR = os.environ.get("DESKWATCH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
INCLUDE = "python3,python3-venv,python3-pip,python3-systemd,ca-certificates,systemd,libgomp1"
NATIVE = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
# A bootable machine: what Raspberry Pi OS Lite has and debootstrap's minbase lacks; the
# kernel is Debian's generic arm64 one (the Pi's own needs the Pi's firmware).
MACHINE_PACKAGES = (
    "linux-image-arm64 initramfs-tools systemd-sysv udev kmod iproute2 util-linux dosfstools e2fsprogs mosquitto"
)
# Only what mounting the root needs goes into the initramfs (MODULES=list): smaller, faster.
INITRAMFS_MODULES = "virtio_mmio virtio_pci virtio_blk virtio_rng ext4 vfat nls_cp437 nls_ascii"


def default_arch() -> str:
    """arm64 when this host can run it (qemu-user-static registered with binfmt), else native."""
    if NATIVE == "arm64":
        return NATIVE
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not binfmt.exists() and shutil.which("update-binfmts") and os.geteuid() == 0:
        # binfmt registrations do not survive a container restart; qemu-user-static's is cheap to redo
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, check=False, timeout=30)
    return "arm64" if binfmt.exists() else NATIVE


ARCH = os.environ.get("DESKWATCH_IMAGE_ARCH") or default_arch()


def can_build(arch: str = ARCH) -> str | None:
    """Why this host cannot build the root file system, or None when it can."""
    if os.geteuid() != 0:
        return "debootstrap and chroot need root"
    if shutil.which("debootstrap") is None:
        return "apt-get install debootstrap"
    if arch != NATIVE and not Path(f"/proc/sys/fs/binfmt_misc/qemu-{'aarch64' if arch == 'arm64' else arch}").exists():
        return f"{arch} needs qemu-user-static and binfmt-support (update-binfmts --enable)"
    return None


def _tar_into(tarball: Path, work: Path) -> None:
    shutil.rmtree(work / "var/cache/apt/archives", ignore_errors=True)
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(work), "--numeric-owner", "-czf", str(partial), "."], check=True, timeout=900)
    partial.rename(tarball)


def base_tarball(arch: str = ARCH) -> Path:
    """The debootstrapped base system for ``arch``, built once and cached."""
    key = hashlib.sha256(f"{SUITE} {arch} minbase {INCLUDE} {MIRROR}".encode()).hexdigest()[:12]
    tarball = CACHE / f"{SUITE}-{arch}-{key}.tar.gz"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"build-{arch}-{os.getpid()}"
    try:
        subprocess.run(
            ["debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={INCLUDE}", SUITE, str(work), MIRROR],
            check=True,
            capture_output=True,
            timeout=1500,
        )
        _tar_into(tarball, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


class _Chroot:
    """/proc and /dev mounted into ``root`` while in use."""

    def __init__(self, root: Path):
        self.root = root

    def __enter__(self) -> _Chroot:
        (self.root / "proc").mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "proc", "proc", str(self.root / "proc")], check=True)
        subprocess.run(["mount", "--bind", "/dev", str(self.root / "dev")], check=True)
        return self

    def __exit__(self, *exc: object) -> None:
        for where in ("dev", "proc"):
            subprocess.run(["umount", "-l", str(self.root / where)], check=False)

    def run(self, *cmd: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
        env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]
        return subprocess.run(
            ["chroot", str(self.root), *env, "DEBIAN_FRONTEND=noninteractive", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def machine_tarball(arch: str = "arm64") -> Path:
    """The base plus a kernel, init and udev (and the test broker), built once and cached."""
    base = base_tarball(arch)
    key = hashlib.sha256(f"{base.name} {MACHINE_PACKAGES} {INITRAMFS_MODULES}".encode()).hexdigest()[:12]
    tarball = CACHE / f"{SUITE}-{arch}-machine-{key}.tar.gz"
    if tarball.exists():
        return tarball
    work = CACHE / f"build-machine-{arch}-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        subprocess.run(["tar", "-C", str(work), "--numeric-owner", "-xzf", str(base)], check=True, timeout=600)
        conf = work / "etc/initramfs-tools"
        (conf / "conf.d").mkdir(parents=True, exist_ok=True)
        (conf / "conf.d/deskwatch-machine.conf").write_text("MODULES=list\n")
        (conf / "modules").write_text("\n".join(INITRAMFS_MODULES.split()) + "\n")
        if not (work / "etc/resolv.conf").exists() or not (work / "etc/resolv.conf").stat().st_size:
            shutil.copy("/etc/resolv.conf", work / "etc/resolv.conf")
        with _Chroot(work) as chroot:
            for cmd in (
                ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *MACHINE_PACKAGES.split()],
                ["apt-get", "clean"],
            ):
                proc = chroot.run(*cmd)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} in the {arch} chroot failed: {proc.stderr[-2000:]}")
        shutil.rmtree(work / "var/lib/apt/lists", ignore_errors=True)
        (work / "var/lib/apt/lists").mkdir()
        _tar_into(tarball, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mounts").read_text()
    return [line.split()[1] for line in text.splitlines() if line.split()[1].startswith(str(path))]


def install_layer(root: Path, tarball: Path, *, keys: Path | None = None, arch: str = ARCH) -> str:
    """Extract ``tarball`` into ``root`` and run install-layer.sh on it; returns its log."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xzf", str(tarball)], check=True, timeout=600)
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "PIP_CACHE_DIR": str(CACHE / f"pip-{arch}"),
        "PIP_CERT": os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"),
    }
    if keys is not None:
        env["DESKWATCH_KEYS"] = str(keys)
    proc = subprocess.run(
        [str(REPO / "image-build/install-layer.sh"), str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"install-layer.sh failed ({proc.returncode}): {log[-3000:]}")
    return log
