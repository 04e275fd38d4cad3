"""Giving memory back to the kernel: the two glibc/Linux calls the vision stage needs.

A Pi 4 with 1 GB or a Zero 2 W with 512 MB shares its RAM with the camera stack, so
what the daemon keeps resident matters (issue 13: peak RSS with every model loaded).

- :func:`release_file_pages`: a model file is memory-mapped by the interpreter. XNNPACK
  reads its weights once, when it packs them into its own buffers (``allocate_tensors``),
  and never again; yet every page it read stays resident and counts in the process's
  RSS (about the size of the model files, ~23 MB for the shipped set). Dropping those
  pages from a *read-only* mapping is always safe: the mapping stays, and a page the
  interpreter reads again (a constant of an operator XNNPACK did not take) is read back
  from the page cache or the file.
- :func:`trim_heap`: after a scan, glibc keeps the freed frames, crops and tensors in
  its heap; ``malloc_trim(0)`` returns the free pages to the kernel (about 20 MB between
  scans here), so the idle daemon between two random scans holds only what it needs.
- :func:`one_heap`: glibc gives each thread that allocates its own heap (arena). The camera
  takes a burst in a thread of its own, so the frames are allocated in that thread's heap,
  and when the scan lets them go they stay resident there: ``malloc_trim`` does not
  shrink the top of a thread's heap, and glibc keeps up to twice a frame's size there on
  its own. 2.7 MB (one 1280x720 frame) to 7.9 MB (three, when the camera got ahead of the
  analysis) were left after trimming, between scans and under the next scan's peak. With
  one heap for the whole process the trim returns them; the threads that share it
  allocate little (the burst's five frames a scan), so they do not wait on each other.
- :func:`no_huge_pages`: where the kernel's transparent huge pages are on for every
  process (``always``: Debian's arm64 kernel, which the emulated image boots), an
  anonymous region that reaches 2 MB is faulted in as a whole 2 MB page, used or not:
  XNNPACK's packed weights and workspaces, the frames. The daemon opts out
  (``prctl(PR_SET_THP_DISABLE)``) so its resident memory is what it uses whatever the
  distribution chose: here, with the host switched to ``always`` for the measurement,
  ``deskwatch bench``'s per-frame peak read 192.8 MB and 190.3 with the opt-out (190.2
  under ``madvise``), at the same speed.

All are best effort: off Linux or glibc they do nothing and say so once at debug level.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

MADV_DONTNEED = 4  # linux/mman-common.h (the same on every Linux architecture)
M_ARENA_MAX = -8  # glibc malloc.h
PR_SET_THP_DISABLE = 41  # linux/prctl.h (the same on every Linux architecture)
PROC_MAPS = "/proc/self/maps"

_libc: ctypes.CDLL | None = None
_libc_tried = False


def _c_library() -> ctypes.CDLL | None:
    global _libc, _libc_tried
    if not _libc_tried:
        _libc_tried = True
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                libc.madvise.restype = ctypes.c_int
                _libc = libc
            except (OSError, AttributeError) as exc:
                log.debug("no libc madvise here (%s): mapped model pages stay resident", exc)
    return _libc


def read_only_mappings(inode: int, name: str, maps_text: str) -> list[tuple[int, int]]:
    """Address ranges [start, end) of the read-only mappings of the file with ``inode``
    whose path ends in ``name``, from the text of ``/proc/self/maps``. The inode and the
    name together pick the file (the device column is left out: an overlay file system
    shows the lower layer's device there); a writable mapping is never listed, as
    dropping its pages would lose what was written."""
    ranges = []
    for line in maps_text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[4] != str(inode) or "w" in parts[1]:
            continue
        if os.path.basename(parts[5].strip()) != name:
            continue
        start, _, end = parts[0].partition("-")
        try:
            ranges.append((int(start, 16), int(end, 16)))
        except ValueError:
            continue
    return ranges


def release_file_pages(inode: int, name: str) -> int:
    """Drop this process's resident pages of the read-only mappings of one file (see the
    module doc); the bytes released from the mappings' address ranges, 0 where not possible."""
    libc = _c_library()
    if libc is None:
        return 0
    try:
        with open(PROC_MAPS, encoding="utf-8", errors="replace") as fh:
            maps_text = fh.read()
    except OSError as exc:
        log.debug("cannot read %s (%s): mapped pages of %s stay resident", PROC_MAPS, exc, name)
        return 0
    released = 0
    for start, end in read_only_mappings(inode, name, maps_text):
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            released += end - start
        else:
            log.debug("madvise(%s) failed: %s", name, os.strerror(ctypes.get_errno()))
    return released


def trim_heap() -> bool:
    """Return the heap's free pages to the kernel (glibc ``malloc_trim``); False where
    there is no such call (musl, macOS)."""
    libc = _c_library()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim(0)
    return True


def one_heap() -> bool:
    """One glibc heap for every thread of the process (``mallopt(M_ARENA_MAX, 1)``; see the
    module doc), before any thread allocates: call it first thing in the process. False where
    there is no such call (musl, macOS)."""
    libc = _c_library()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    return bool(mallopt(M_ARENA_MAX, 1))


def no_huge_pages() -> bool:
    """No transparent huge pages for this process and its children (see the module doc);
    False where the kernel or the C library has no such call."""
    libc = _c_library()
    prctl = getattr(libc, "prctl", None) if libc is not None else None
    if prctl is None:
        return False
    if prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
        log.debug("prctl(PR_SET_THP_DISABLE) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def lean_process() -> None:
    """What ``deskwatch run`` (and the bench, to measure the same process) sets first thing,
    before any thread starts: :func:`one_heap` and :func:`no_huge_pages`."""
    one_heap()
    no_huge_pages()
