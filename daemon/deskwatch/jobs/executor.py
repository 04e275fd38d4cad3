"""The root side of remote jobs: config changes and software updates queued by the daemon.

``deskwatch jobs run-queued`` (``deskwatch-jobs.service``, started by ``deskwatch-jobs.path``)
takes each ``<state_dir>/jobs/queue/<job_id>.json`` (the signed envelope as received),
verifies it again with the device's public keys (the signature is the authority, not
the daemon that queued it), checks it is addressed to the device its own config names and
that it has not run here before (root's record, :mod:`.ledger`: the daemon's user could
put an old envelope back in the queue), runs it and writes
``<state_dir>/jobs/done/<job_id>.json``:
``{"job_id", "kind", "status", "step", "detail", "rolled_back"}``. A config change whose
daemon does not come back READY is rolled back (old config, daemon restarted). A
software update ends in a reboot; its outcome comes from the A/B record after it.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from deskwatch.system.files import SafeDir, ensure_dir, write_atomically
from deskwatch_contract.jobs import (
    ENVELOPE_SCHEMA,
    MAX_ENVELOPE_BYTES,
    TARGET_ID,
    JobDocument,
    JobInvalid,
    parse_document,
)
from deskwatch_contract.jsonutil import JsonRejected, loads_object
from deskwatch_contract.signing import SignatureRejected, load_public_keys, open_envelope

from . import config_change
from .download import DownloadFailed, fetch_private
from .ledger import Ledger

log = logging.getLogger(__name__)

KEYS_DIR = Path("/usr/share/deskwatch/keys/jobs")
SERVICE = "deskwatch.service"
SERVICE_USER = "deskwatch"
RUNNING_SUFFIX = ".running"
Install = Callable[[BinaryIO, JobDocument], None]  # (the bundle, open at its first byte; its job)


@dataclass
class Outcome:
    job_id: str
    kind: str
    status: str  # succeeded, failed, rejected, or in_progress (a software update rebooting)
    step: str
    detail: str
    rolled_back: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def jobs_dirs(state_dir: Path) -> tuple[Path, Path]:
    return state_dir / "jobs" / "queue", state_dir / "jobs" / "done"


def write_outcome(done_dir: Path, outcome: Outcome) -> None:
    ensure_dir(done_dir)
    path = done_dir / f"{outcome.job_id}.json"
    owner = None
    if os.geteuid() == 0:  # the daemon (service user) reads and then removes it
        try:
            pw = pwd.getpwnam(SERVICE_USER)
            owner = (pw.pw_uid, pw.pw_gid)
        except KeyError:
            pass
    # done/ belongs to the service user: never write through a link planted at the tmp name
    write_atomically(path, json.dumps(outcome.to_json()).encode(), 0o644, owner, tmp=path.with_suffix(".tmp"))


@dataclass
class Services:
    """systemd, as the executor needs it; tests replace it."""

    def restart(self, unit: str) -> None:
        subprocess.run(["systemctl", "restart", "--no-block", unit], check=False, capture_output=True)

    def state(self, unit: str) -> dict[str, str]:
        proc = subprocess.run(
            ["systemctl", "show", unit, "-p", "ActiveState,SubState,Result,ExecMainStatus,NRestarts,MainPID"],
            capture_output=True,
            text=True,
            check=False,
        )
        return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()


def wait_ready(services: Services, timeout: float, settle: float) -> tuple[bool, str]:
    """The daemon restarted, reached READY and stayed up for ``settle`` seconds."""
    deadline = services.monotonic() + timeout
    state: dict[str, str] = {}
    services.sleep(1.0)  # let the restart begin
    while services.monotonic() < deadline:
        state = services.state(SERVICE)
        if state.get("ActiveState") == "active" and state.get("SubState") == "running":
            break
        if state.get("ActiveState") == "failed" or state.get("SubState") == "auto-restart":
            return False, f"the daemon exited with status {state.get('ExecMainStatus')} ({state.get('Result')})"
        services.sleep(1.0)
    else:
        return False, f"the daemon was not READY within {timeout:.0f} s ({state.get('ActiveState')})"
    pid = state.get("MainPID")
    end = services.monotonic() + settle
    while services.monotonic() < end:
        services.sleep(1.0)
        now = services.state(SERVICE)
        if now.get("ActiveState") != "active" or now.get("MainPID") != pid:
            return False, f"the daemon did not stay up ({now.get('ActiveState')}/{now.get('SubState')})"
    return True, f"the daemon is READY with the new config and stayed up {settle:.0f} s"


def run_config(
    job: JobDocument,
    config_path: Path,
    services: Services,
    *,
    ready_timeout: float,
    settle: float,
    mark_running: Callable[[], None] | None = None,
) -> Outcome:
    """``mark_running``: moves the job's queue file to its running marker (see below)."""
    try:
        staged = config_change.stage(config_path, job.config_set, job.job_id)
    except config_change.ChangeRejected as exc:
        return Outcome(job.job_id, job.kind, "rejected", "validate", "; ".join(exc.problems)[:500])
    except OSError as exc:
        return Outcome(job.job_id, job.kind, "failed", "stage", f"cannot write the new config: {exc}"[:500])
    try:
        if mark_running is not None:
            # a power cut from here to the verdict leaves <id>.running: the next run restores
            # .previous instead of running the job again (which would make the bad config .previous)
            mark_running()
        config_change.swap_in(config_path, staged)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        back = config_change.changed_by(config_path, job.job_id) and config_change.restore(config_path)
        detail = f"cannot swap the new config in: {exc}" + ("; the previous config is back" if back else "")
        return Outcome(job.job_id, job.kind, "failed", "swap", detail[:500], rolled_back=bool(back))
    log.info("job %s: config changed (%s); restarting the daemon", job.job_id, ", ".join(sorted(job.config_set)))
    services.restart(SERVICE)
    ok, why = wait_ready(services, ready_timeout, settle)
    if ok:
        return Outcome(job.job_id, job.kind, "succeeded", "applied", why)
    config_change.restore(config_path)
    services.restart(SERVICE)
    back, why_back = wait_ready(services, ready_timeout, settle)
    detail = f"{why}; the previous config is back" + ("" if back else f", but {why_back}")
    log.error("job %s: config change rolled back: %s", job.job_id, detail)
    return Outcome(job.job_id, job.kind, "failed", "health check", detail, rolled_back=True)


def _kind_run(config_path: Path, job_id: str) -> str:
    """What root's record says job ``job_id`` was (a marker from before the record: config)."""
    try:
        entry = Ledger(config_path).load().get(job_id)
    except OSError:
        return "config"
    return str(entry.get("kind", "config")) if isinstance(entry, dict) else "config"


def recover_interrupted(
    queue: SafeDir,
    marker: str,
    config_path: Path,
    done_dir: Path,
    services: Services,
    update_record: Callable[[], dict[str, Any]] = dict,
) -> Outcome | None:
    """A job cut off (power, a killed service, the service's time limit) after it was claimed:
    a config job between its swap and its verdict, a software job in its download or install.
    None when the A/B record already holds the software job's outcome (the install got that far)."""
    job_id = marker.removesuffix(RUNNING_SUFFIX)
    if _kind_run(config_path, job_id) == "software":
        record = update_record()
        queue.remove(marker)
        if record.get("job_id") == job_id and record.get("state") not in (None, "installing"):
            log.info("job %s: the update record has it (%s)", job_id, record.get("state"))
            return None
        detail = "interrupted during its download or install (power cut, restart or time limit); no slot was armed"
        log.error("job %s: %s", job_id, detail)
        outcome = Outcome(job_id, "software", "failed", "interrupted", detail)
        write_outcome(done_dir, outcome)
        return outcome
    back = config_change.changed_by(config_path, job_id) and config_change.restore(config_path)
    if back:
        services.restart(SERVICE)
    detail = "interrupted during its health check (power cut or restart)" + (
        "; the previous config is back" if back else "; the config had not been changed"
    )
    log.error("job %s: %s", job_id, detail)
    outcome = Outcome(job_id, "config", "failed", "interrupted", detail, rolled_back=bool(back))
    write_outcome(done_dir, outcome)
    queue.remove(marker)
    return outcome


def run_software(job: JobDocument, state_dir: Path, install: Install) -> Outcome:
    """Download the bundle into a file without a name (:func:`fetch_private`) and install
    from that open file: the daemon's user owns ``<state_dir>/jobs`` and could put another
    signed (older) bundle at any name root used there between the check and the install."""
    assert job.artifact is not None
    try:
        bundle = fetch_private(job.artifact, state_dir / "jobs", timeout=120)
    except DownloadFailed as exc:
        return Outcome(job.job_id, job.kind, "failed", "download", str(exc))
    with bundle:
        try:
            install(bundle, job)  # reboots into the trial slot on success
        except Exception as exc:
            return Outcome(job.job_id, job.kind, "failed", "install", str(exc)[:500])
    return Outcome(job.job_id, job.kind, "in_progress", "rebooting", f"trial boot of {job.artifact.version}")


def _default_install(bundle: BinaryIO, job: JobDocument) -> None:
    from deskwatch.update.install import System, install

    assert job.artifact is not None
    install(
        System(),
        bundle,
        job_id=job.job_id,
        expect_version=job.artifact.version,
        allow_downgrade=job.artifact.allow_downgrade,
    )


def device_identity(config_path: Path) -> tuple[str, str]:
    """(site, device id) as the config says: root reads it itself, never from the daemon
    (whose user could otherwise have root run a job addressed to another desk).
    ValueError says what is missing."""
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{config_path} cannot be read: {exc}") from None
    device = data.get("device") if isinstance(data, dict) else None
    if not isinstance(device, dict):
        raise ValueError(f"{config_path} has no device section")
    site, device_id = device.get("site"), device.get("id")
    for key, value in (("device.site", site), ("device.id", device_id)):
        if not isinstance(value, str) or not TARGET_ID.fullmatch(value):
            raise ValueError(f"{config_path}: {key} is missing or not an id")
    return str(site), str(device_id)


@dataclass
class _Run:
    """What every queued job of one run of the executor is checked and run with."""

    queue: SafeDir
    state_dir: Path
    config_path: Path
    done_dir: Path
    services: Services
    install: Install
    keys: Any
    timing: tuple[float, float]
    device: tuple[str, str] | str  # (site, device id), or why the config does not say
    ledger: Ledger


def _update_record() -> dict[str, Any]:
    from deskwatch.update.slots import read_state

    return read_state()


def run_queued(
    state_dir: Path,
    config_path: Path,
    *,
    keys_dir: Path = KEYS_DIR,
    services: Services | None = None,
    install: Install = _default_install,
    ready_timeout: float = 300.0,
    settle: float = 20.0,
    update_record: Callable[[], dict[str, Any]] = _update_record,
) -> list[Outcome]:
    """Run every queued job, oldest first; each gets an outcome file.

    The queue is the service user's directory: it is opened without following a link
    (UnsafePath if it is one), and its files are read, renamed and removed by name in it,
    never through a link (a planted link or FIFO is a rejected job, not a file elsewhere).
    Nothing in it is trusted but the signature: a job runs only if it is addressed to the
    device the config names and is not in root's record of jobs already run (:mod:`.ledger`)."""
    queue_dir, done_dir = jobs_dirs(state_dir)
    services = services or Services()
    try:
        queue = SafeDir(queue_dir)
    except FileNotFoundError:
        return []
    with queue:
        outcomes = []
        for marker in queue.names(RUNNING_SUFFIX):
            if not queue.owns(marker):
                # only root's own rename makes a marker (claim): one the service user planted
                # would roll a signed config back
                log.error("job queue: %s was not made by the job runner; ignored and removed", marker)
                queue.remove(marker)
                continue
            recovered = recover_interrupted(queue, marker, config_path, done_dir, services, update_record)
            if recovered is not None:
                outcomes.append(recovered)
        names = queue.names(".json")
        if not names:
            return outcomes
        try:
            device: tuple[str, str] | str = device_identity(config_path)
        except ValueError as exc:
            device = str(exc)
        run = _Run(
            queue,
            state_dir,
            config_path,
            done_dir,
            services,
            install,
            load_public_keys(keys_dir),
            (ready_timeout, settle),
            device,
            Ledger(config_path),
        )
        for name in names:
            outcomes.append(_run_one(run, name))
    return outcomes


def _check(run: _Run, name: str) -> JobDocument | Outcome:
    """The queued job, verified and fit to run here (and recorded as run), or why not."""
    job_id = name.removesuffix(".json")
    try:
        envelope = loads_object(run.queue.read_bytes(name, MAX_ENVELOPE_BYTES), max_bytes=MAX_ENVELOPE_BYTES)
        data, _kid = open_envelope(envelope, run.keys, ENVELOPE_SCHEMA)
        job = parse_document(data, now=datetime.now(UTC))
        if job.job_id != job_id:
            raise JobInvalid(f"queued as {job_id} but the document says {job.job_id}")
    except (OSError, ValueError, JsonRejected, SignatureRejected, JobInvalid) as exc:
        return Outcome(job_id, "unknown", "rejected", "verify", f"refused by the root side: {exc}"[:500])
    if isinstance(run.device, str):
        return Outcome(job_id, job.kind, "rejected", "verify", f"cannot tell which device this is: {run.device}"[:500])
    site, device_id = run.device
    if not job.targets_device(site, device_id):
        return Outcome(job_id, job.kind, "rejected", "verify", f"not addressed to this device ({site}/{device_id})")
    if job.kind not in ("config", "software"):
        return Outcome(job_id, job.kind, "rejected", "verify", f"{job.kind} jobs are run by the daemon")
    try:
        ran = run.ledger.load().get(job_id)
        if ran is not None:
            at = ran.get("at", "?") if isinstance(ran, dict) else "?"
            return Outcome(job_id, job.kind, "rejected", "verify", f"already ran on this device ({at}): not run again")
        run.ledger.add(job_id, job.kind)
    except OSError as exc:
        detail = f"cannot keep the record of jobs run, so none runs: {exc}"
        return Outcome(job_id, job.kind, "failed", "record", detail[:500])
    return job


def _run_one(run: _Run, name: str) -> Outcome:
    job_id = name.removesuffix(".json")
    marker = job_id + RUNNING_SUFFIX
    job = _check(run, name)
    if isinstance(job, Outcome):
        outcome = job
    elif job.kind == "config":
        ready_timeout, settle = run.timing
        outcome = run_config(
            job,
            run.config_path,
            run.services,
            ready_timeout=ready_timeout,
            settle=settle,
            mark_running=lambda: run.queue.claim(name, marker),
        )
    else:
        try:
            # cut off from here (a power cut, the service's time limit), the next run reports it
            # failed (recover_interrupted) instead of starting it again and again
            run.queue.claim(name, marker)
        except OSError as exc:
            outcome = Outcome(job_id, job.kind, "failed", "queue", f"cannot take the job from the queue: {exc}")
        else:
            outcome = run_software(job, run.state_dir, run.install)
    write_outcome(run.done_dir, outcome)
    run.queue.remove(name)
    run.queue.remove(marker)
    log.info(
        "job %s (%s): %s at %s: %s",
        outcome.job_id,
        outcome.kind,
        outcome.status,
        outcome.step,
        outcome.detail,
        extra={"journal": {"DESKWATCH_EVENT": "job_" + outcome.status, "JOB_ID": outcome.job_id}},
    )
    return outcome
