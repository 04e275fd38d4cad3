"""Giving memory back: the read-only file mappings dropped after packing, the heap trimmed (issue 13)."""

from __future__ import annotations

import mmap
from pathlib import Path

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
