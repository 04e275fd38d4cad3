"""The daemon's side of remote jobs: intake of ``jobs/notify``, model jobs, progress.

Every notify message gets progress on ``jobs/progress``: ``rejected`` with the reason
(bad signature, expired, not for this device, already done), else ``received`` and then
the steps. Config and software jobs are queued for the root side
(:mod:`deskwatch.jobs.executor`); their outcome files are published by :meth:`tick`.
A software job's final word comes after the reboot, from the A/B record (its ``job_id``).

Model jobs run here: download (sha256 from the signed document), a new models directory
under ``<state_dir>/models/`` (the others linked, the manifest entry replaced), a
selftest of the new model (:func:`model_selftest`), then ``swap(directory)`` hands it to
the scan loop, which swaps between scans and keeps it across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from deskwatch.system.files import fsync_dir, write_atomically
from deskwatch.vision.runtime import ModelError, read_manifest
from deskwatch_contract.jobs import (
    ENVELOPE_SCHEMA,
    FINAL,
    MAX_ENVELOPE_BYTES,
    JobDocument,
    JobInvalid,
    parse_document,
    progress_payload,
)
from deskwatch_contract.jsonutil import JsonRejected, loads_object
from deskwatch_contract.signing import SignatureRejected, load_public_keys, open_envelope
from deskwatch_contract.sqlite import disk_trouble

from .download import DownloadFailed, fetch, shown
from .executor import KEYS_DIR, jobs_dirs

log = logging.getLogger(__name__)

Publish = Callable[[dict[str, Any]], None]
ModelCheck = Callable[[Path, str], str]  # (models dir, file) -> detail; raises on failure
Swap = Callable[[Path], None]
CURRENT_MODELS = "current"


class JobAgent:
    def __init__(
        self,
        *,
        site: str,
        device_id: str,
        version: str,
        state_dir: Path,
        publish: Publish,
        models_dir: Path,
        model_check: ModelCheck | None = None,
        swap: Swap | None = None,
        keys_dir: Path = KEYS_DIR,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        update_record: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.site, self.device_id, self.version = site, device_id, version
        self.state_dir = state_dir
        self.publish = publish
        self.models_dir = models_dir
        self.model_check = model_check
        self.swap = swap
        self.keys_dir = keys_dir
        self.now = now
        self.update_record = update_record
        self.queue_dir, self.done_dir = jobs_dirs(state_dir)
        self.seen_file = state_dir / "jobs" / "seen.json"
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running: set[str] = set()  # model jobs in flight (guarded by _lock)
        self._unsaved: dict[str, str] = {}  # final statuses the disk did not take yet (guarded by _lock)
        self._disk_trouble = False  # said once per spell
        self._reported: set[Path] = set()  # outcome files reported that the disk would not let go of
        # an outcome the outbox refused is tried at every turn of the loop (5 s): its line and the
        # refusal are said once (the refusal again if it changes), not at every turn
        self._said: set[tuple[str, str, str]] = set()
        self._queue_trouble: str | None = None

    # -- bookkeeping ------------------------------------------------------------------------
    def _seen(self) -> dict[str, str]:
        try:
            data = json.loads(self.seen_file.read_text())
        except (OSError, ValueError):
            data = {}
        return {**(data if isinstance(data, dict) else {}), **self._unsaved}

    def _remember(self, job_id: str, status: str) -> None:
        """Write down a job's final status. A disk that cannot take it (full, or turned read-only
        under a failing SD card) keeps it in memory, so it is reported once all the same, and it
        is written at a later tick."""
        with self._lock:
            self._unsaved[job_id] = status
            self._write_seen()

    def _write_seen(self) -> None:
        """Under the lock: the final statuses known, on disk (or kept in memory, said once)."""
        seen = self._seen()
        if len(seen) > 500:  # oldest first (insertion order)
            seen = dict(list(seen.items())[-500:])
        try:
            self.seen_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.seen_file, json.dumps(seen).encode(), 0o644, tmp=self.seen_file.with_suffix(".tmp"))
        except OSError as exc:
            if not self._disk_trouble:
                self._disk_trouble = True
                log.error(
                    "could not write down the outcome of job %s: %s; kept in memory (reported once) and written "
                    "when the disk takes it",
                    ", ".join(self._unsaved),
                    disk_trouble(self.state_dir, exc),
                )
            return
        self._unsaved.clear()
        if self._disk_trouble:
            self._disk_trouble = False
            log.info("job outcomes are written down again")

    def _say(
        self,
        job_id: str,
        status: str,
        *,
        kind: str | None,
        step: str = "",
        detail: str = "",
        again: bool = False,
        **kw: Any,
    ) -> None:
        """Log and publish a job's progress. ``again``: an outcome tick() reports until the outbox
        takes it (at every turn of the loop while the card refuses): said once, then at DEBUG.
        Nothing else is quietened: a rejection before the job's id can be read is job 'unknown',
        and each one is a different job the operator must see refused."""
        payload = progress_payload(
            self.site, self.device_id, job_id, status, kind=kind, step=step, detail=detail, version=self.version, **kw
        )
        level = logging.WARNING if status in ("failed", "rejected") else logging.INFO
        if again:
            if (job_id, status, step) in self._said:  # tried again after the outbox refused it
                level = logging.DEBUG
            self._said.add((job_id, status, step))
        log.log(
            level,
            "job %s (%s): %s%s%s",
            job_id,
            kind or "?",
            status,
            f" at {step}" if step else "",
            f": {detail}" if detail else "",
            extra={"journal": {"DESKWATCH_EVENT": f"job_{status}", "JOB_ID": job_id}},
        )
        self.publish(payload)  # first: a report that could not be queued is not taken for made
        if status in FINAL and kind is not None:  # a document too broken to name its job is not remembered
            self._remember(job_id, status)

    # -- intake -------------------------------------------------------------------------------
    def handle_notify(self, raw: bytes) -> None:
        """One message from ``jobs/notify``; never raises."""
        if not raw:
            return  # the collector cleared the retained job
        job_id = "unknown"
        try:
            envelope = loads_object(raw, max_bytes=MAX_ENVELOPE_BYTES)
            data, kid = open_envelope(envelope, load_public_keys(self.keys_dir), ENVELOPE_SCHEMA)
            job_id = str(data.get("job_id", "unknown"))[:64]
            job = parse_document(data, now=self.now())
        except (JsonRejected, SignatureRejected, JobInvalid) as exc:
            self._say(job_id, "rejected", kind=None, step="verify", detail=str(exc))
            return
        if not job.targets_device(self.site, self.device_id):
            self._say(job.job_id, "rejected", kind=job.kind, step="verify", detail="not addressed to this device")
            return
        if job.job_id in self._seen():
            log.info("job %s: already %s here; ignoring the retained copy", job.job_id, self._seen()[job.job_id])
            return
        if any(
            p.exists()
            for p in (
                self.queue_dir / f"{job.job_id}.json",
                self.queue_dir / f"{job.job_id}.running",  # a config change awaiting its verdict
                self.done_dir / f"{job.job_id}.json",
            )
        ):
            return  # queued or done, not yet reported: tick() reports it
        record = self.update_record() if self.update_record else {}
        if record.get("job_id") == job.job_id:
            # installed and rebooted (the trial boot, or after it): the A/B record has its outcome
            log.info("job %s: the update record has it (%s); tick() reports it", job.job_id, record.get("state"))
            return
        with self._lock:
            if job.job_id in self._running:
                log.info("job %s: delivered again while it runs; ignoring the copy", job.job_id)
                return
            if job.kind == "model":
                self._running.add(job.job_id)
        self._say(job.job_id, "received", kind=job.kind, step="verify", detail=f"signed by key {kid}")
        if job.kind == "model":
            thread = threading.Thread(target=self._run_model, args=(job,), name=f"job-{job.job_id}", daemon=True)
            self._threads.append(thread)
            thread.start()
            return
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        # deskwatch-jobs.path starts the root side
        write_atomically(self.queue_dir / f"{job.job_id}.json", raw, 0o644, tmp=self.queue_dir / f".{job.job_id}.tmp")
        self._say(job.job_id, "queued", kind=job.kind, step="queued", detail="handed to deskwatch-jobs.service (root)")

    # -- outcomes from the root side ----------------------------------------------------------
    def tick(self) -> None:
        """Publish outcome files and a finished software update; cheap when there is nothing."""
        if self._unsaved:
            with self._lock:
                self._write_seen()
        if self.done_dir.is_dir():
            for path in sorted(self.done_dir.glob("*.json")):
                if path in self._reported:
                    continue
                try:
                    out = json.loads(path.read_text())
                    done_id, status = str(out["job_id"]), str(out["status"])
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("unreadable job outcome %s: %s", path, exc)
                else:
                    try:
                        self._say(
                            done_id,
                            status,
                            kind=out.get("kind") if out.get("kind") in ("config", "model", "software") else None,
                            step=str(out.get("step", "")),
                            detail=str(out.get("detail", "")),
                            rolled_back=bool(out.get("rolled_back")),
                            again=True,
                        )
                    except (OSError, sqlite3.Error) as exc:  # the report could not be queued: kept for later
                        self._not_queued(done_id, exc)
                        return
                    self._queued_again()
                try:
                    path.unlink(missing_ok=True)
                except OSError:  # a read-only card: reported, and not again while the daemon runs
                    self._reported.add(path)
        record = self.update_record() if self.update_record else {}
        job_id = record.get("job_id")
        if job_id and record.get("state") in ("committed", "rolled_back", "failed") and job_id not in self._seen():
            committed = record["state"] == "committed"
            try:
                self._say(
                    str(job_id),
                    "succeeded" if committed else "failed",
                    kind="software",
                    step="health check" if record["state"] != "failed" else "install",
                    detail=str(record.get("reason", ""))[:500],
                    rolled_back=record["state"] == "rolled_back",
                    again=True,
                )
            except (OSError, sqlite3.Error) as exc:
                self._not_queued(str(job_id), exc)
            else:
                self._queued_again()

    def _not_queued(self, job_id: str, exc: BaseException) -> None:
        if self._queue_trouble == str(exc):
            log.debug("job %s: its outcome could not be queued yet (%s)", job_id, exc)
            return
        self._queue_trouble = str(exc)
        log.error(
            "job %s: its outcome could not be queued for the collector: %s; tried again at every turn of the "
            "daemon's loop, said again when it is queued or the error changes",
            job_id,
            disk_trouble(self.state_dir, exc),
        )

    def _queued_again(self) -> None:
        if self._queue_trouble is not None:
            log.info("job outcomes are queued for the collector again (they could not be: %s)", self._queue_trouble)
            self._queue_trouble = None

    # -- model jobs ---------------------------------------------------------------------------
    def _run_model(self, job: JobDocument) -> None:
        try:
            self._build_model(job)
        except Exception as exc:  # reporting the failure failed too (a full disk): said in the journal
            log.error("job %s (model): cannot report its outcome: %s", job.job_id, exc)
        finally:
            with self._lock:
                self._running.discard(job.job_id)

    def _build_model(self, job: JobDocument) -> None:
        assert job.artifact is not None
        art = job.artifact
        base = self.state_dir / "models"
        staging = base / f"job-{job.job_id}"
        try:
            self._say(job.job_id, "in_progress", kind=job.kind, step="download", detail=shown(art.url))
            manifest = yaml.safe_load((self.models_dir / "manifest.yaml").read_text()) or {}
            entries: dict[str, Any] = manifest.get("models") or {} if isinstance(manifest, dict) else {}
            names = [k for k, v in entries.items() if isinstance(v, dict) and v.get("file") == art.file]
            if not names:
                raise JobInvalid(f"{art.file} is not in the models manifest of this device")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for item in self.models_dir.iterdir():
                if item.is_file() and item.name not in (art.file, "manifest.yaml"):
                    os.symlink(item.resolve(), staging / item.name)
            fetch(art, staging / art.file)
            for name in names:
                entries[name]["sha256"] = art.sha256
            # durable before current points here: the file, the links and the manifest (a power cut
            # after the swap must not leave current naming an empty manifest)
            write_atomically(staging / "manifest.yaml", yaml.safe_dump(manifest, sort_keys=False).encode(), 0o644)
            self._say(job.job_id, "in_progress", kind=job.kind, step="selftest", detail=f"loading {art.file}")
            detail = self.model_check(staging, art.file) if self.model_check else "no selftest configured"
            current = base / CURRENT_MODELS
            tmp = base / f".{CURRENT_MODELS}.tmp"
            tmp.unlink(missing_ok=True)
            os.symlink(staging.name, tmp)
            os.replace(tmp, current)  # what the daemon loads from now on, across restarts
        except (DownloadFailed, JobInvalid, OSError, ValueError, yaml.YAMLError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            self._say(job.job_id, "failed", kind=job.kind, step="model", detail=str(exc), rolled_back=True)
            return
        except Exception as exc:  # the model's selftest: any failure keeps the old model
            shutil.rmtree(staging, ignore_errors=True)
            self._say(
                job.job_id,
                "failed",
                kind=job.kind,
                step="selftest",
                detail=f"{exc}; kept the old model",
                rolled_back=True,
            )
            return
        self._commit_model(job, current, detail)

    def _commit_model(self, job: JobDocument, current: Path, detail: str) -> None:
        """After ``current`` names the new directory the job is done, whatever fails next: undoing
        it here would delete the directory current names (and an earlier model job's model with it)."""
        self.models_dir = current  # the next model job starts from these, not the installed ones
        try:
            fsync_dir(current.parent)
        except OSError as exc:
            log.warning("job %s: the models swap may not survive a power cut: %s", job.job_id, exc)
        if self.swap:
            try:
                self.swap(current)
            except Exception as exc:
                detail += f"; the scan loop takes it at its next start ({exc})"
        self._say(job.job_id, "succeeded", kind=job.kind, step="swapped", detail=detail)

    def join(self, timeout: float = 30.0) -> None:
        for thread in self._threads:
            thread.join(timeout)


def _model_hashes(models_dir: Path) -> dict[str, str]:
    """file -> sha256 from a models directory's manifest ({} when unreadable)."""
    try:
        return {entry.file: entry.sha256 for entry in read_manifest(models_dir).values()}
    except ModelError:
        return {}


def active_models_dir(state_dir: Path, default: Path) -> Path:
    """The models a model job installed (``<state_dir>/models/current``), else ``default``.

    ``current`` links the files the job did not replace to the installed ones. A software
    update may have replaced those since: then ``current``'s manifest names hashes the
    linked files no longer have, the daemon would refuse them and every such update
    would roll back, so the installed models are used instead. A link to an earlier model
    job's file (one job built on another) is the jobs' own: no update replaces it."""
    current = state_dir / "models" / CURRENT_MODELS
    if not (current / "manifest.yaml").is_file():
        return default
    ours, installed = _model_hashes(current), _model_hashes(default)
    jobs_dir = current.parent.resolve()
    for file, sha256 in ours.items():
        path = current / file
        if not path.is_symlink():
            continue
        if not path.exists() or (path.resolve().parent.parent != jobs_dir and installed.get(file) != sha256):
            log.warning(
                "a software update replaced the models a model job had built on; using the installed ones (%s)",
                file,
            )
            return default
    return current
