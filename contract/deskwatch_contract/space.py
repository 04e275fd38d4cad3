"""Room kept on a file system for when it fills up: the device's outbox keeps some for the events it
must still queue, its audit trail for the retention purge it owes the worker (a delete is written to
SQLite's log first, and a full card has no room for that)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from deskwatch_contract.sqlite import free_bytes

logger = logging.getLogger(__name__)


class SpaceReserve:
    """Room kept on a file system for when it fills up: a file of allocated blocks, given
    back at the first "disk full" so that what must still be written fits."""

    def __init__(self, path: Path, size: int) -> None:
        if size <= 0:
            raise ValueError(f"the room kept for a full disk must be at least one byte, not {size}")
        self.path = path
        self.size = size
        self.present = False

    def ensure(self, free_needed: int | None = None) -> bool:
        """Make the file if the file system has room for it twice over (or ``free_needed``: an owner
        that just gave back room it had borrowed may take it again); True if it is there."""
        if self.present:
            return True
        try:
            if self.path.stat().st_size >= self.size:
                self.present = True
                return True
        except FileNotFoundError:
            pass
        except OSError:
            return False
        free = free_bytes(self.path.parent)
        if free is None or free < (2 * self.size if free_needed is None else free_needed):
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # blocks of its own, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            logger.warning("could not keep %d KiB of room in %s: %s", self.size // 1024, self.path, exc)
            return False
        self.present = True
        return True

    def release(self) -> bool:
        """Give the room back to the file system; False if there was none to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            self.present = False
            return False
        except OSError:
            return False
        self.present = False
        return True
