"""Facts a technician needs to find this desk: the board's serial number and its addresses."""

from __future__ import annotations

import socket
from pathlib import Path

SERIAL_SOURCES = (
    Path("/proc/device-tree/serial-number"),  # Raspberry Pi (and other device-tree boards)
    Path("/sys/firmware/devicetree/base/serial-number"),
)


def serial_number(cpuinfo: Path = Path("/proc/cpuinfo"), sources: tuple[Path, ...] = SERIAL_SOURCES) -> str | None:
    """The board's serial number, or None on a machine that has none to tell."""
    for path in sources:
        try:
            value = path.read_bytes().rstrip(b"\0").decode("ascii", "replace").strip()
        except OSError:
            continue
        if value:
            return value[:64]
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Serial" and value.strip():
                return value.strip()[:64]
    except OSError:
        pass
    return None


def route_address(target: str = "192.0.2.1") -> str | None:
    """The source address the kernel would use towards ``target`` (no packet is sent:
    connecting a UDP socket only picks a route); None without a route."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((target, 9))
            return str(sock.getsockname()[0])
    except OSError:
        return None
