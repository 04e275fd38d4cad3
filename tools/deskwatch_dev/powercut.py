"""Power cuts under a device writing its outbox: ``python -m deskwatch_dev.powercut --cuts 200``.

The device is a User-Mode Linux guest (Debian's ``user-mode-linux``: a real Linux 6.1
kernel with real ext4, run as a process; it sees this machine's files read-only through
hostfs, so it runs this checkout's code with this venv's Python). Its data disk is an
NBD device served from here by :class:`VolatileDisk`, a disk with a *volatile write
cache*: writes stay in memory until the guest flushes; at the cut, each unflushed 4 KiB
block independently reaches the image or not, as a real disk may reorder and drop its
cache. A cut is SIGKILL to the whole guest (its page cache dies with it) and the
disk's cache being dropped, at a random moment while the guest queues scans and
delivers them to a real Mosquitto on this machine over a tap interface.

After each cut the next boot recovers (ext4 replays its journal, the outbox opens,
``PRAGMA integrity_check``) and goes on; a last boot delivers everything left. Then
every scan the guest acknowledged (``send_scan`` returned) must have arrived with all
its findings, each event with one ``seq`` never used by another. What a cut catches
half-queued is not acknowledged; it leaves a gap the outbox counts (``lost``).

Why not a VM: ``/dev/kvm`` on this machine is PVM (``kvm_pvm``), which runs only guest
kernels built for it; a stock Debian kernel crawls through its firmware under it, and
TCG emulation takes ~15 s per boot. UML boots in ~1.5 s. Its own block driver (ubd)
does not pass flushes to the host file in this kernel, hence the NBD disk.

Needs root, /dev/net/tun, ``linux.uml`` (apt-get install user-mode-linux), mkfs.ext4.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch_dev.devservers import MOSQUITTO, stop_process
from deskwatch_dev.volatile_disk import DiskServer, VolatileDisk

UML = shutil.which("linux.uml") or "/usr/bin/linux.uml"
REPO = Path(__file__).resolve().parents[2]


def missing_requirements() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "power cuts need root (a tap interface, a UML guest)"
    if not os.path.exists(UML):
        return "linux.uml is missing: apt-get install user-mode-linux"
    if not glob.glob("/usr/lib/uml/modules/*/kernel/drivers/block/nbd.ko"):
        return "the UML nbd module is missing (user-mode-linux package)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 is missing: apt-get install e2fsprogs"
    return None


# -- the broker side --------------------------------------------------------------------------------
class Receiver:
    """What the central side got: events (event_id -> seqs seen), scans, evidence."""

    def __init__(self, host: str, port: int) -> None:
        self.events: dict[str, set[int]] = {}
        self.scans: dict[str, int] = {}
        self.evidence: set[str] = set()
        self.lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="powercut-central")
        self.client.on_message = self._on_message
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.on_connect = lambda c, *a: c.subscribe("deskwatch/v1/#", qos=1)
        self.client.connect(host, port)
        self.client.loop_start()
        if not done.wait(10):
            raise TimeoutError("the test's subscriber got no SUBACK")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.split("/")[4]
        with self.lock:
            if kind == "event":
                p = json.loads(msg.payload)
                self.events.setdefault(p["event_id"], set()).add(int(p["seq"]))
            elif kind == "scan":
                p = json.loads(msg.payload)
                self.scans[p["scan_id"]] = int(p["findings"])
            elif kind == "evidence":
                self.evidence.add(msg.topic.split("/")[5])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- one run -----------------------------------------------------------------------------------------
@dataclass
class Boot:
    mode: str
    lines: list[str] = field(default_factory=list)
    acked_scans: dict[str, list[str]] = field(default_factory=dict)  # scan_id -> event ids
    recovered: dict[str, Any] | None = None
    cut_after_s: float | None = None
    seconds: float = 0.0
    disk: dict[str, int] = field(default_factory=dict)


@dataclass
class Result:
    cuts: int
    sync: str
    boots: list[Boot]
    scans_acked: int
    events_acked: int
    events_delivered: int
    scans_lost: int
    events_lost: int  # acknowledged as queued, never delivered: must be 0
    seq_reused: int  # a seq carried by two different events: must be 0
    gaps_announced: int  # events a cut caught half-queued (never acknowledged), counted by the outbox
    integrity_failures: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "boots"}
        out["seconds_per_cut"] = round(self.seconds / max(1, self.cuts + 1), 2)
        return out


class PowerCutRun:
    def __init__(self, workdir: Path, *, sync: str = "FULL", seed: int = 1, log: Any = None) -> None:
        self.workdir = workdir
        self.sync = sync
        self.rng = random.Random(seed)
        self.log = log or (lambda text: None)
        net = 16 + os.getpid() % 200
        self.tap = f"dwpc{os.getpid() % 100000}"
        self.host_ip, self.guest_ip = f"10.231.{net}.1", f"10.231.{net}.2"
        self.image = workdir / "data.img"
        self.mosquitto: subprocess.Popen[bytes] | None = None

    # -- set-up ------------------------------------------------------------------------------------
    def __enter__(self) -> PowerCutRun:
        subprocess.run(["ip", "tuntap", "add", "dev", self.tap, "mode", "tap"], check=True, capture_output=True)
        subprocess.run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.tap], check=True)
        subprocess.run(["ip", "link", "set", self.tap, "up"], check=True)
        self.broker_port = 18830 + os.getpid() % 1000
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "user root\n"
            f"listener {self.broker_port} {self.host_ip}\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 1000000\nlog_dest none\n"
        )
        self.mosquitto = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.host_ip, self.broker_port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.mosquitto.poll() is not None:
                    raise RuntimeError("the test broker did not start") from None
                time.sleep(0.05)
        self.receiver = Receiver(self.host_ip, self.broker_port)
        with open(self.image, "wb") as f:
            f.truncate(256 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", str(self.image)], check=True)
        from deskwatch_contract.ca import evidence_key

        _, public, _ = evidence_key(self.workdir / "keys")
        self.seal_to = public.read_text().strip()
        self.init = self.workdir / "init.sh"
        # The guest's root is the host's, read-only; its writable scratch is a tmpfs on a
        # directory of its own. Not on /tmp: a checkout (and its venv) under /tmp would vanish.
        scratch = self.workdir / "guest-scratch"
        scratch.mkdir()
        self.init.write_text(
            "#!/bin/sh\n"
            "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmpfs {scratch}\n"
            "mount -t devtmpfs dev /dev 2>/dev/null\n"
            f"ip link set lo up; ip link set vec0 up; ip addr add {self.guest_ip}/24 dev vec0\n"
            f"cd {scratch}; export TMPDIR={scratch} PC_SCRATCH={scratch}\n"
            f"PYTHONPATH={REPO / 'tools'} {sys.executable} -m deskwatch_dev.powercut_guest\n"
            "sync; halt -f -p >/dev/null 2>&1; sleep 10\n"
        )
        self.init.chmod(0o755)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.receiver.close()
        stop_process(self.mosquitto)
        subprocess.run(["ip", "link", "del", self.tap], capture_output=True)

    # -- boots -------------------------------------------------------------------------------------
    def boot(self, mode: str, cut_after: float | None) -> Boot:
        disk = VolatileDisk(self.image, self.rng)
        server = DiskServer(disk, self.host_ip)
        photo = REPO / "tests/data/photos/single_01.jpg"
        cmd = [
            UML, "mem=256M", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "ro", "quiet",
            f"init={self.init}", f"vec0:transport=tap,ifname={self.tap},gro=1", "con=null", "con0=null,fd:1",
            f"PC_MODE={mode}", f"PC_HOST={self.host_ip}", f"PC_NBD={server.port}",
            f"PC_BROKER={self.host_ip}:{self.broker_port}", f"PC_SYNC={self.sync}", f"PC_SEAL_TO={self.seal_to}",
            f"PC_PHOTO={photo}",
        ]  # fmt: skip
        boot = Boot(mode, cut_after_s=cut_after)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

        def power_off() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            disk.cut()  # after the kill: what was in flight reached the disk's cache, then the cache is cut

        watchdog = threading.Timer(180, power_off)
        watchdog.start()
        timer: threading.Timer | None = None
        assert proc.stdout is not None
        other: collections.deque[str] = collections.deque(maxlen=20)  # the guest's own words, if it fails
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not line.startswith("@@PC "):
                other.append(line)
                continue
            word, _, rest = line[5:].partition(" ")
            if word == "ACK":
                scan_id, *ids = rest.split()
                boot.acked_scans[scan_id] = ids
            elif word == "WRITING" and cut_after is not None:
                timer = threading.Timer(cut_after, power_off)
                timer.start()
            elif word == "RECOVERED":
                boot.recovered = json.loads(rest)
                boot.lines.append(line)
            else:
                boot.lines.append(line)
        proc.wait()
        if boot.recovered is None and not boot.lines:
            boot.lines += [f"guest (no report): {line}" for line in other]
        for t in (timer, watchdog):
            if t is not None:
                t.cancel()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of the guest outlives its boot
        if cut_after is None:
            disk.close()
        else:
            disk.cut()
        boot.seconds = round(time.monotonic() - t0, 2)
        boot.disk = dict(disk.stats)
        return boot

    def run(self, cuts: int) -> Result:
        t0 = time.monotonic()
        boots = []
        for i in range(cuts):
            boot = self.boot("work", cut_after=self.rng.uniform(0.2, 2.5))
            boots.append(boot)
            self.log(
                f"cut {i + 1}/{cuts}: {len(boot.acked_scans)} scans acknowledged, cut after "
                f"{boot.cut_after_s:.2f} s of writing; recovered {json.dumps(boot.recovered)}; disk {boot.disk}"
            )
        final = self.boot("final", cut_after=None)
        boots.append(final)
        self.log(f"final boot: recovered {json.dumps(final.recovered)}; {' '.join(final.lines[-1:])}")
        time.sleep(1.0)  # the last PUBACKed messages reach the subscriber
        return self._judge(cuts, boots, time.monotonic() - t0)

    def _judge(self, cuts: int, boots: list[Boot], seconds: float) -> Result:
        with self.receiver.lock:
            events, scans = dict(self.receiver.events), dict(self.receiver.scans)
        acked_scans = {s: ids for b in boots for s, ids in b.acked_scans.items()}
        acked_events = [e for ids in acked_scans.values() for e in ids]
        seq_owner: dict[int, str] = {}
        reused = 0
        for event_id, seqs in events.items():
            for seq in seqs:
                if seq_owner.setdefault(seq, event_id) != event_id:
                    reused += 1
        scans_lost = sum(1 for s, ids in acked_scans.items() if scans.get(s) != len(ids))
        recovered = [b.recovered for b in boots if b.recovered]
        return Result(
            cuts=cuts,
            sync=self.sync,
            boots=boots,
            scans_acked=len(acked_scans),
            events_acked=len(acked_events),
            events_delivered=sum(1 for e in acked_events if e in events),
            scans_lost=scans_lost,
            events_lost=sum(1 for e in acked_events if e not in events),
            seq_reused=reused + sum(1 for seqs in events.values() if len(seqs) > 1),
            gaps_announced=max((r.get("lost_events", 0) for r in recovered), default=0),
            integrity_failures=sum(1 for r in recovered if r.get("integrity") != "ok") + (len(boots) - len(recovered)),
            seconds=round(seconds, 1),
        )


def run(cuts: int, *, sync: str = "FULL", seed: int = 1, verbose: bool = False) -> Result:
    why = missing_requirements()
    if why:
        raise RuntimeError(why)
    with (
        tempfile.TemporaryDirectory(prefix="deskwatch-powercut-") as tmp,
        PowerCutRun(Path(tmp), sync=sync, seed=seed, log=print if verbose else None) as pc,
    ):
        return pc.run(cuts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deskwatch_dev.powercut", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuts", type=int, default=50)
    parser.add_argument(
        "--sync", default="FULL", choices=["FULL", "NORMAL", "OFF"], help="the outbox's synchronous pragma"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = run(args.cuts, sync=args.sync, seed=args.seed, verbose=not args.quiet)
    except RuntimeError as exc:
        print(f"powercut: {exc}", file=sys.stderr)
        return 69
    print(json.dumps(result.summary(), indent=2))
    ok = result.events_lost == 0 and result.scans_lost == 0 and result.seq_reused == 0 and not result.integrity_failures
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
