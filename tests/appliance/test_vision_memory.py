"""Giving memory back: the read-only file mappings dropped after packing, the heap trimmed (issue 13)."""

from __future__ import annotations

import mmap
import subprocess
import sys
from pathlib import Path

import pytest

from deskwatch.vision.memory import read_only_mappings, release_file_pages, trim_heap

MAPS = """\
7f0000000000-7f0000400000 r--p 00000000 08:01 1234   /usr/share/deskwatch/models/nanodet.tflite
7f0000400000-7f0000500000 rw-p 00000000 08:01 1234   /usr/share/deskwatch/models/nanodet.tflite
7f0000500000-7f0000600000 r--p 00000000 00:2a 1234   /var/lib/deskwatch/models/pose.tflite
7f0000600000-7f0000700000 r--p 00000000 00:2b 99     /usr/share/deskwatch/models/nanodet.tflite
7f0000700000-7f0000800000 r--p 00000000 00:00 0
7f0000800000-7f0000900000 r--p 00000000 00:2a 1234   /tmp/other models/nanodet.tflite (deleted)
garbage line
"""


def test_only_read_only_mappings_of_that_inode_and_name_are_picked() -> None:
    assert read_only_mappings(1234, "nanodet.tflite", MAPS) == [(0x7F0000000000, 0x7F0000400000)]
    assert read_only_mappings(1234, "pose.tflite", MAPS) == [(0x7F0000500000, 0x7F0000600000)]
    assert read_only_mappings(99, "pose.tflite", MAPS) == []
    assert read_only_mappings(5, "x", "") == []


def _rss_kb(path: Path) -> int:
    total, current = 0, ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            current = head[5] if len(head) >= 6 else ""
        elif head and head[0] == "Rss:" and current == str(path):
            total += int(head[1])
    return total


def test_released_pages_leave_the_resident_set_and_read_back_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    data = bytes(range(256)) * (8 * 4096)  # 8 MB
    path.write_bytes(data)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
        assert view[:] == data  # every page touched: resident
        assert _rss_kb(path) >= 8 * 1024 - 64
        released = release_file_pages(path.stat().st_ino, path.name)
        assert released >= len(data)
        assert _rss_kb(path) < 64
        assert view[:] == data  # read back from the page cache, the same bytes


def test_a_writable_mapping_is_never_released(tmp_path: Path) -> None:
    path = tmp_path / "scratch.bin"
    path.write_bytes(b"\0" * (1 << 20))
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) as view:
        view[:5] = b"hello"  # a private change that exists only in this process's pages
        assert release_file_pages(path.stat().st_ino, path.name) == 0
        assert view[:5] == b"hello"


def test_trim_heap_runs_on_glibc() -> None:
    assert trim_heap() is True


# A burst taken in its thread while the scan waits, then let go and the heap trimmed, three
# times: the anonymous memory the frames leave behind (in a fresh interpreter, whose heaps
# nothing else has touched; argv[1] "one" calls one_heap first).
BURSTS_LET_GO = """
import sys, threading
import numpy as np
from deskwatch.camera import BurstInFlight
from deskwatch.schedule import SystemClock
from deskwatch.vision.memory import one_heap, trim_heap

def anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

class Camera:
    name = "test"
    def open(self): pass
    def close(self): pass
    def capture(self):
        return np.ones((720, 1280, 3), np.uint8)  # allocated and written in the burst's thread

if sys.argv[1] == "one":
    one_heap()
np.ones((720, 1280, 3), np.uint8)  # freed at once: glibc now serves frames from its heaps
base = anon_mb()
for _ in range(3):
    with BurstInFlight(Camera(), 3, 0.0, SystemClock()) as burst:
        while burst.captured < 3:  # the camera ahead of the analysis: three frames held at once
            threading.Event().wait(0.01)
        frames = list(burst)
    del frames
    trim_heap()
print(anon_mb() - base)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc heaps and /proc: Linux")
def test_one_heap_gives_back_the_frames_a_burst_thread_allocated() -> None:
    def left_mb(mode: str) -> float:
        argv = [sys.executable, "-c", BURSTS_LET_GO, mode]
        return float(subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout)

    # without: 2.5-5 MB of let-go frames stay resident in the burst thread's own heap (glibc 2.36)
    assert left_mb("one") < 1.0  # a 1280x720 frame is 2.6 MB


THP_STATUS = """
import ctypes
from deskwatch.vision.memory import no_huge_pages

# as a process starts by default: a bench run in the test process opted it (and so its
# children) out already
ctypes.CDLL(None).prctl(41, 0, 0, 0, 0)

def thp_enabled():
    for line in open("/proc/self/status"):
        if line.startswith("THP_enabled:"):
            return int(line.split()[1])
    return None

before = thp_enabled()
print(before, no_huge_pages(), thp_enabled())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc: Linux")
def test_no_huge_pages_opts_the_process_out_of_transparent_huge_pages() -> None:
    """Whatever the kernel's policy (``always`` on Debian's arm64 kernel), the daemon's anonymous
    memory is faulted in 4 KB at a time: the kernel says so in the process's status."""
    argv = [sys.executable, "-c", THP_STATUS]
    before, called, after = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout.split()
    if before == "None":
        pytest.skip("this kernel does not report THP_enabled (Linux < 5.0)")
    assert (before, called, after) == ("1", "True", "0")
