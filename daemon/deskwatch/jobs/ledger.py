"""Root's own record of the remote jobs it has run: a signed job runs once on a device.

The queue is the daemon's user's directory, and a signed envelope stays valid until it
expires: that user could put back a config change a later job reverted, or an old
software job. The daemon's own ``seen.json`` cannot stop that (its user writes it). So
the root side keeps ``jobs-run.json`` beside the config (``/etc/deskwatch``: root's,
which the daemon's user cannot write, and carried into the new slot by an A/B update),
records a job *before* it runs it and refuses a job id it holds. The newest
:data:`LIMIT` ids are kept, far more than a device sees while a job stays unexpired.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deskwatch.system.files import open_dir, write_atomically

NAME = "jobs-run.json"
LIMIT = 1000


class LedgerUnusable(OSError):
    """The record cannot be trusted or read: no job may run until it can."""


class Ledger:
    def __init__(self, config_path: Path) -> None:
        self.path = config_path.with_name(NAME)

    def _check_directory(self) -> None:
        """Only root (or this process's user) may write where the record lives."""
        fd = open_dir(self.path.parent)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise LedgerUnusable(
                errno.EPERM,
                f"{self.path.parent} may be written by others: the record of jobs already run cannot be kept there",
            )

    def load(self) -> dict[str, Any]:
        """job id -> {"kind", "at"}, oldest first; LedgerUnusable if it cannot be trusted."""
        self._check_directory()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise LedgerUnusable(exc.errno, f"{self.path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()):
                raise LedgerUnusable(errno.EPERM, f"{self.path} is not a regular file of root's")
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = json.loads(fh.read(1 << 20))
        except ValueError:
            raise LedgerUnusable(
                errno.EINVAL, f"{self.path} is not the JSON it should be: remove it to start the record afresh"
            ) from None
        finally:
            os.close(fd)
        if not isinstance(data, dict):
            raise LedgerUnusable(errno.EINVAL, f"{self.path} is not a JSON object: remove it to start afresh")
        return data

    def add(self, job_id: str, kind: str, *, now: datetime | None = None) -> None:
        """Record ``job_id`` durably (before it runs: a run cut short is not run again)."""
        runs = self.load()
        runs.pop(job_id, None)
        runs[job_id] = {"kind": kind, "at": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if len(runs) > LIMIT:
            runs = dict(list(runs.items())[-LIMIT:])
        write_atomically(self.path, json.dumps(runs).encode(), 0o600, tmp=self.path.with_name(f".{NAME}.tmp"))
