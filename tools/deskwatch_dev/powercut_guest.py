"""The power-cut test's workload, run *inside* the User-Mode Linux guest (see powercut.py).

The guest attaches its data disk (an NBD device served by the host with a volatile write
cache), mounts it (ext4 replays its journal: the first thing a device does after a power
cut), opens the device's real outbox with the daemon's real delivery code and reports
what it recovered. Then, by ``PC_MODE``:

- ``work``: queue scans the way the scanner does (each with 0-3 findings and their
  sealed thumbnails, in one call) while the publisher drains to the host's broker; print
  ``ACK`` for every scan once ``send_scan`` has returned (the daemon's promise: durable).
  The host cuts the power at a random moment.
- ``final``: deliver everything left, shut down cleanly and power off.

Every line for the host starts with ``@@PC``. ``PC_SYNC`` (default FULL) overrides the
outbox's ``synchronous`` pragma: the harness's own check that it catches OFF/NORMAL.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import glob
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
import uuid
from typing import Any

NBD_SET_SOCK, NBD_SET_BLKSIZE, NBD_DO_IT, NBD_SET_SIZE_BLOCKS, NBD_SET_FLAGS = 0xAB00, 0xAB01, 0xAB03, 0xAB07, 0xAB0A
IHAVEOPT, OPT_EXPORT_NAME = 0x49484156454F5054, 1
DATA = os.path.join(os.environ.get("PC_SCRATCH", "/tmp"), "data")  # the init script's tmpfs


def say(*words: object) -> None:
    sys.stdout.write("@@PC " + " ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def attach_nbd(host: str, port: int) -> None:
    """What nbd-client does: handshake with the server, hand the socket to the kernel."""
    if not os.path.exists("/sys/module/nbd"):
        module = glob.glob("/usr/lib/uml/modules/*/kernel/drivers/block/nbd.ko")[0]
        fd = os.open(module, os.O_RDONLY)
        if ctypes.CDLL(None, use_errno=True).syscall(313, fd, b"nbds_max=1", 0) != 0:  # finit_module
            raise OSError(ctypes.get_errno(), "finit_module nbd.ko")
        for _ in range(200):
            if os.path.exists("/dev/nbd0"):
                break
            time.sleep(0.01)
    sock = socket.create_connection((host, port), timeout=10)

    def recv(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise OSError("the disk server closed the connection")
            buf += chunk
        return buf

    recv(18)  # NBDMAGIC, IHAVEOPT, handshake flags
    sock.sendall(struct.pack(">I", 1 | 2))  # fixed newstyle, no zeroes
    sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, 0))
    size, flags = struct.unpack(">QH", recv(10))
    sock.settimeout(None)
    dev = os.open("/dev/nbd0", os.O_RDWR)
    fcntl.ioctl(dev, NBD_SET_BLKSIZE, 4096)
    fcntl.ioctl(dev, NBD_SET_SIZE_BLOCKS, size // 4096)
    fcntl.ioctl(dev, NBD_SET_FLAGS, flags)
    fcntl.ioctl(dev, NBD_SET_SOCK, sock.fileno())
    if os.fork() == 0:  # serves the device until the power goes
        os.setsid()
        with contextlib.suppress(OSError):
            fcntl.ioctl(dev, NBD_DO_IT)
        os._exit(0)
    for _ in range(500):
        with open("/sys/block/nbd0/size") as f:
            if int(f.read()) > 0:
                return
        time.sleep(0.01)
    raise OSError("/dev/nbd0 did not come up")


def config(broker: str, seal_to: str, photo: str) -> Any:
    from deskwatch.config import load_config_text

    host, port = broker.split(":")
    return load_config_text(
        f"""
device: {{id: desk-pc, site: powercut, worker_id: w-1}}
state_dir: {DATA}/state
camera: {{backend: replay, source: {photo}}}
mqtt:
  host: {host}
  port: {port}
  protocol: "5"
  allow_insecure: true
  tls: {{enabled: false}}
  reconnect_min_seconds: 0.1
  reconnect_max_seconds: 1.0
evidence: {{seal_to: "{seal_to}"}}
""",
        "powercut.yaml",
    )


def fake_jpeg(rng: random.Random) -> bytes:
    return b"\xff\xd8\xff\xe0" + rng.randbytes(rng.randint(2_000, 20_000)) + b"\xff\xd9"


def main() -> int:
    os.makedirs(DATA, exist_ok=True)
    attach_nbd(os.environ["PC_HOST"], int(os.environ["PC_NBD"]))
    fsck = subprocess.run(["fsck.ext4", "-p", "/dev/nbd0"], capture_output=True, text=True)
    subprocess.run(["mount", "-t", "ext4", "/dev/nbd0", DATA], check=True)
    say("MOUNTED", f"fsck={fsck.returncode}")

    from deskwatch.app import build_delivery

    t0 = time.monotonic()
    delivery = build_delivery(
        config(os.environ["PC_BROKER"], os.environ["PC_SEAL_TO"], os.environ["PC_PHOTO"]), version="powercut", models={}
    )
    outbox: Any = delivery.outbox
    outbox._db.execute(f"PRAGMA synchronous={os.environ.get('PC_SYNC', 'FULL')}")  # the harness's own control
    check = outbox._db.execute("PRAGMA integrity_check").fetchone()[0]
    stats = outbox.stats()
    say(
        "RECOVERED",
        json.dumps(
            {
                "integrity": check,
                "last_seq": stats["last_seq"],
                "depth": stats["depth"],
                "lost_events": stats["lost"]["events"],
                "corrupt_files": len(glob.glob(f"{DATA}/state/*.corrupt-*")),
                "open_s": round(time.monotonic() - t0, 2),
            }
        ),
    )
    delivery.start()
    if os.environ.get("PC_MODE") == "final":
        deadline = time.monotonic() + 120
        while delivery.outbox_depth() > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        depth = delivery.outbox_depth()
        delivery.stop(5)
        say("DRAINED", json.dumps({"left": depth}))
        subprocess.run(["umount", DATA], check=False)
        return 0
    rng = random.Random()
    say("WRITING")
    while True:
        scan_id = str(uuid.uuid4())
        events = [
            (
                {
                    "schema": "deskwatch.event/1",
                    "type": "phone_use",
                    "scan_id": scan_id,
                    "evidence": {"width": 320, "height": 240},
                },
                fake_jpeg(rng),
            )
            for _ in range(rng.randint(0, 3))
        ]
        ids = delivery.send_scan({"schema": "deskwatch.scan/1", "scan_id": scan_id, "findings": len(events)}, events)
        say("ACK", scan_id, *ids)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # the host reads this line; the guest powers off either way
        say("FAILED", repr(exc))
        sys.exit(1)
