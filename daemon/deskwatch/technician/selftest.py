"""The checks behind ``deskwatch selftest``: is this desk covered properly, and if not, why.

Each check returns :class:`CheckResult` rows (PASS / WARN / FAIL, what was seen, and
for anything but PASS what the technician should do). The checks share a
:class:`SelftestRun` so that the frames the camera check captured feed the light,
model-timing and framing checks and the ``--snapshot`` picture.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deskwatch.app import identity_target
from deskwatch.config import Config
from deskwatch.domain import Box, Frame, FrameAnalysis
from deskwatch.policy.rules import people_view
from deskwatch.system.clock import clock_sync
from deskwatch.technician.broker_probe import probe_broker
from deskwatch.technician.checks import FAIL, PASS, WARN, CheckResult
from deskwatch.technician.service_user import (
    SERVICE_USER,
    access_problem,
    current_account,
    daemon_reads,
    fix_for,
    service_account,
    user_name,
)

if TYPE_CHECKING:
    import numpy as np

    from deskwatch.camera import Camera

log = logging.getLogger(__name__)

SELFTEST_FRAMES = 3
MIN_FREE_BYTES = 100 * 1024 * 1024
SLOW_FRAME_MS = 2500.0


@dataclass
class SelftestRun:
    """What the checks learned so far; later checks build on earlier ones."""

    cfg: Config
    config_path: str = ""
    service_user: str = ""  # the daemon's user (empty: SERVICE_USER): whose rights the permission check judges
    frames: list[Frame] = field(default_factory=list)
    analysis: FrameAnalysis | None = None  # the snapshot frame's (for --snapshot)
    analyses: list[FrameAnalysis] = field(default_factory=list)  # every frame of the burst
    model_ms: dict[str, float] = field(default_factory=dict)
    results: list[CheckResult] = field(default_factory=list)
    face_turns: dict[int, float] = field(default_factory=dict)  # the surest face with the picture turned (degrees)

    @property
    def daemon_user(self) -> str:
        return self.service_user or SERVICE_USER

    @property
    def failed(self) -> bool:
        return any(r.status == FAIL for r in self.results)

    @property
    def snapshot_frame(self) -> Frame | None:
        return self.frames[len(self.frames) // 2] if self.frames else None


Check = Callable[[SelftestRun], list[CheckResult]]


# -- clock --------------------------------------------------------------------------------
def check_clock(run: SelftestRun) -> list[CheckResult]:
    remedy = (
        "the clock is not synchronised: the daemon takes no scan until it is (schedule.require_synced_clock), "
        "and events would carry wrong times. Check the network, "
        "then `timedatectl timesync-status` (NTP server reachable on UDP 123?)"
    )
    sync = clock_sync(ask_systemd=True)
    if sync.synced is None:
        return [CheckResult("clock", WARN, f"cannot tell ({sync.detail})", remedy)]
    if sync.synced:
        return [CheckResult("clock", PASS, f"synchronised ({sync.source}; {sync.detail})")]
    return [CheckResult("clock", FAIL, f"not synchronised ({sync.source}; {sync.detail})", remedy)]


# -- disk ---------------------------------------------------------------------------------
def check_disk(run: SelftestRun) -> list[CheckResult]:
    path = Path(run.cfg.state_dir)
    probe = path if path.exists() else path.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError as exc:
        return [CheckResult("disk", FAIL, f"cannot read free space of {probe}: {exc}", "check the SD card")]
    free_mb = usage.free / 1024**2
    need = max(MIN_FREE_BYTES, 2 * run.cfg.outbox.max_bytes)
    detail = f"{free_mb:.0f} MB free on {probe} (outbox cap {run.cfg.outbox.max_bytes / 1024**2:.0f} MB)"
    state = check_state_formats(path)
    if usage.free < MIN_FREE_BYTES:
        return [
            CheckResult("disk", FAIL, detail, "free space: the outbox cannot hold an outage; use a larger card"),
            *state,
        ]
    if usage.free < need:
        return [
            CheckResult("disk", WARN, detail, "less than twice the outbox cap is free: lower outbox.max_bytes"),
            *state,
        ]
    return [CheckResult("disk", PASS, detail), *state]


def check_state_formats(state_dir: Path) -> list[CheckResult]:
    """A row per store on the data partition that a newer deskwatch left in a format this one must
    not use (an update rolled back): the daemon refuses to start on it, and says so only in the
    journal. Read without changing anything; none when every store is fine."""
    from deskwatch.audit import FORMAT as AUDIT_FORMAT
    from deskwatch.audit import audit_path
    from deskwatch.delivery import counters, outbox
    from deskwatch_contract.sqlite import connect_read_only
    from deskwatch_contract.storeformat import StoreTooNew, check_readable

    out: list[CheckResult] = []
    for path, form in (
        (state_dir / outbox.FILENAME, outbox.FORMAT),
        (audit_path(str(state_dir)), AUDIT_FORMAT),
        (state_dir / counters.FILENAME, counters.FORMAT),
    ):
        if not path.is_file():
            continue
        try:
            db = connect_read_only(path)
        except (OSError, sqlite3.Error):
            continue  # unreadable for another reason: the daemon's start says which
        try:
            check_readable(db, path, form)
        except StoreTooNew as exc:
            words = str(exc)
            cut = words.find(" To go on: ")
            out.append(
                CheckResult(
                    "state",
                    FAIL,
                    words[:cut] if cut > 0 else words,
                    words[cut + len(" To go on: ") :] if cut > 0 else "install the newer version again",
                )
            )
        finally:
            db.close()
    return out


# -- permissions ---------------------------------------------------------------------------
def _service_uid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _secret_problem(path: Path, uid: int | None, user: str) -> str | None:
    try:
        st = path.stat()
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return f"{path} is mode {mode:04o}; run: chmod 600 {path}"
    if uid is not None and st.st_uid != uid:
        return f"{path} is owned by uid {st.st_uid}, the daemon runs as {user}; run: chown {user} {path}"
    return None


def _unreadable_for_daemon(run: SelftestRun) -> tuple[list[str], int]:
    """(problems, paths judged): can the daemon's user (its uid and groups, as the unit
    starts it) open the config, the TLS and password files and the directories above them?
    Judged from owners and modes, so a selftest run as root still answers for the daemon."""
    account = service_account(run.daemon_user)
    if account is None:
        return [], 0
    opened = daemon_reads(run.cfg, run.config_path if run.config_path and os.path.exists(run.config_path) else None)
    problems = []
    for item in opened:
        denied = access_problem(item.path, account, item.want)
        if denied is not None:
            problems.append(f"{denied} ({item.key}): the daemon could not open it; {fix_for(item, denied, account)}")
    return problems, len(opened)


def _not_the_daemons(state: Path, uid: int) -> tuple[dict[Path, str], int]:
    """({path: its owner} for what in ``state`` ``uid`` does not own, paths looked at). Links
    are judged as links (a model job links the installed, root-owned model files: fine)."""
    foreign: dict[Path, str] = {}
    seen = 0

    def judge(path: Path) -> None:
        try:
            owner = path.lstat().st_uid
        except OSError:
            return  # gone meanwhile (the daemon rotates its files)
        if owner != uid:
            foreign[path] = user_name(owner)

    judge(state)
    for top, dirs, files in os.walk(state):  # a directory this user cannot list was judged above
        for name in [*dirs, *files]:
            seen += 1
            judge(Path(top) / name)
    return foreign, seen


def check_permissions(run: SelftestRun) -> list[CheckResult]:
    cfg = run.cfg
    user = run.daemon_user
    uid = _service_uid(user)
    secrets = [Path(p) for p in (cfg.mqtt.tls.key_file, cfg.mqtt.password_file) if p]
    problems, checked = _unreadable_for_daemon(run)
    problems += [p for p in (_secret_problem(s, uid, user) for s in secrets) if p]
    checked += len(secrets)
    state = Path(cfg.state_dir)
    if state.is_dir():
        checked += 1
        mode = stat.S_IMODE(state.stat().st_mode)
        if mode & 0o077:
            problems.append(f"{state} is mode {mode:04o} (face templates inside); run: chmod 700 {state}")
        if uid is not None:
            foreign, seen = _not_the_daemons(state, uid)
            checked += seen
            if foreign:
                path, owner = next(iter(foreign.items()))
                more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
                problems.append(
                    f"{path} is owned by {owner}, not by the daemon's user {user}{more}: the daemon cannot use "
                    f"what another user left there (its queue, its audit trail); run: chown -R {user}: {state}"
                )
        templates = state / "templates"
        if templates.is_dir():
            for item in [templates, *templates.iterdir()]:
                checked += 1
                m = stat.S_IMODE(item.stat().st_mode)
                if m & 0o077:
                    want = "700" if item.is_dir() else "600"
                    problems.append(f"{item} is mode {m:04o}; run: chmod {want} {item}")
    if run.config_path and os.path.exists(run.config_path):
        checked += 1
        m = stat.S_IMODE(os.stat(run.config_path).st_mode)
        if m & 0o022:
            problems.append(f"{run.config_path} is writable by others (mode {m:04o}); run: chmod 640 it")
    if problems:
        return [CheckResult("permissions", FAIL, problems[0], "; ".join(problems[1:]) or problems[0])]
    if uid is None:
        return [
            CheckResult(
                "permissions",
                PASS,
                f"{checked} secret/template paths private (there is no user {user} here: "
                "what the daemon may open was not judged)",
            )
        ]
    return [
        CheckResult(
            "permissions", PASS, f"{checked} paths private, and the daemon's user {user} can open what it needs"
        )
    ]


# -- camera and light -----------------------------------------------------------------------
def _run_with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    """Run ``fn`` in a thread; TimeoutError if it hangs (a stuck camera read)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="selftest-camera", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no frame within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_camera(run: SelftestRun) -> list[CheckResult]:
    cam = run.cfg.camera
    where = f"{cam.backend} {cam.source or ''}".strip()
    try:
        from deskwatch.camera import open_camera, take_burst
        from deskwatch.schedule import SystemClock
    except ImportError as exc:
        return [CheckResult("camera", WARN, f"camera stage not installed ({exc})", "reinstall deskwatch")]
    remedy = {
        "picamera2": "check the ribbon cable (contacts facing the board), camera_auto_detect=1 in "
        "/boot/firmware/config.txt, and `rpicam-hello --list-cameras`; if the daemon is scanning right now, "
        "run the selftest again in a minute",
        "v4l2": "check the USB cable and `v4l2-ctl --list-devices`; the service user needs the video group",
        "replay": "check camera.source points at an image, a directory of images or a video",
    }.get(cam.backend, "check the camera")
    t0 = time.perf_counter()
    stop = threading.Event()
    camera: _CountedCamera | None = None
    try:
        camera = _CountedCamera(open_camera(cam))
        frames = _run_with_timeout(
            lambda: take_burst(camera, SELFTEST_FRAMES, 0.5, SystemClock(), stop),
            cam.open_timeout_seconds + 5.0,
        )
    except Exception as exc:
        stop.set()  # a read that returns after the timeout takes no further frame
        if camera is not None and camera.opened:  # switched on, then failed or hung: still the worker's to see
            _audit_capture(run, camera.frames, failed=str(exc))
        return [CheckResult("camera", FAIL, f"{where}: {exc}", remedy)]
    ms = (time.perf_counter() - t0) * 1000
    run.frames = list(frames)
    _audit_capture(run, len(run.frames))
    if not run.frames:
        return [CheckResult("camera", FAIL, f"{where}: no frames delivered", remedy)]
    f = run.frames[0]
    detail = f"{where}: {len(run.frames)} frames {f.width}x{f.height} in {ms:.0f} ms"
    if (f.width, f.height) != (cam.width, cam.height) and cam.backend != "replay":
        return [
            CheckResult(
                "camera", WARN, detail + f" (asked for {cam.width}x{cam.height})", "the camera chose another mode"
            )
        ]
    return [CheckResult("camera", PASS, detail)]


class _CountedCamera:
    """The camera under test, saying whether it was switched on and how many frames it gave:
    a camera that fails or hangs after opening was still used."""

    def __init__(self, camera: Camera) -> None:
        self.camera, self.name = camera, camera.name
        self.opened, self.frames = False, 0

    def open(self) -> None:
        self.camera.open()
        self.opened = True

    def capture(self) -> np.ndarray:
        image = self.camera.capture()
        self.frames += 1
        return image

    def close(self) -> None:
        self.camera.close()


def _audit_capture(run: SelftestRun, frames: int, failed: str | None = None) -> None:
    details: dict[str, Any] = {"frames": frames, "kept": "none (snapshot only if asked)"}
    if failed is not None:
        details["failed"] = failed
    record_camera_use(run.cfg, "selftest", details)


def record_camera_use(cfg: Config, tool: str, details: dict[str, Any], kind: str | None = None) -> int | None:
    """The worker sees in `deskwatch history` that the camera was used outside a scan
    (the audit event ``<tool>_capture``, or ``kind``). Returns the event's row, for
    :func:`finish_camera_use`, or None when it could not be written."""
    from deskwatch.audit import AuditLog
    from deskwatch.domain import utcnow

    try:
        audit = AuditLog.for_state_dir(cfg.state_dir)
        try:
            return audit.start_event(kind or f"{tool}_capture", utcnow(), details)
        finally:
            audit.close()
    except Exception as exc:  # a technician without write access still gets the tool
        log.warning("could not record the %s capture in the audit trail: %s", tool, exc)
        return None


def finish_camera_use(cfg: Config, row: int, details: dict[str, Any]) -> None:
    """The camera use :func:`record_camera_use` recorded as it began, as it turned out (the
    frames the camera really gave)."""
    from deskwatch.audit import AuditLog

    try:
        audit = AuditLog.for_state_dir(cfg.state_dir)
        try:
            audit.update_event(row, details)
        finally:
            audit.close()
    except Exception as exc:
        log.warning("could not complete the record of a camera use in the audit trail: %s", exc)


def check_light(run: SelftestRun) -> list[CheckResult]:
    frame = run.snapshot_frame
    if frame is None:
        return [CheckResult("light", WARN, "no frame (camera failed)", "fix the camera first")]
    from deskwatch.vision.light import edge_sharpness, measure_light

    reading = measure_light(frame.image, run.cfg.vision.light)
    detail = (
        f"mean brightness {reading.mean_luma:.0f}/255, contrast {reading.contrast:.0f}, "
        f"{reading.dark_fraction:.0%} dark, detail {reading.detail:.1f}"
    )
    if reading.obstructed:
        return [
            CheckResult("light", FAIL, detail + ": view obstructed", "uncover the lens / aim the camera at the desk")
        ]
    if reading.low_light:
        limit = run.cfg.vision.light.low_light_luma
        return [
            CheckResult(
                "light", FAIL, detail + f": too dark (needs > {limit:.0f})", "add light at the desk (a desk lamp)"
            )
        ]
    if reading.dark_fraction >= run.cfg.vision.light.nobody_dark_fraction:
        return [
            CheckResult(
                "light",
                WARN,
                detail + ": most of the picture is dark (a lamp or a window keeps the average up)",
                "light the room: with nobody in view, a picture this dark counts as too dark to check",
            )
        ]
    sharp = edge_sharpness(frame.image)
    if sharp < run.cfg.vision.light.nobody_blur_sharpness:
        return [
            CheckResult(
                "light",
                WARN,
                detail + f": the picture is blurred (sharpness {sharp:.3f})",
                "clean the lens, remove any film or tape over it, check the focus: with nobody in view, "
                "a picture this blurred counts as a covered camera",
            )
        ]
    if reading.mean_luma > 230:
        return [CheckResult("light", WARN, detail + ": overexposed", "turn the camera away from the window")]
    return [CheckResult("light", PASS, detail)]


# -- models -----------------------------------------------------------------------------------
def check_models(run: SelftestRun) -> list[CheckResult]:
    """Every file of the manifest is intact; the vision stage is built exactly as the daemon
    builds it (``app.build_vision``: the configured face model, the object precision, the pose
    model when phones use it, a model job's directory), and what *it* loaded is "in use"."""
    try:
        from deskwatch.app import build_vision, models_remedy
        from deskwatch.vision.runtime import ModelError, ModelStore
    except ImportError as exc:
        return [CheckResult("models", WARN, f"vision stage not importable ({exc})", "reinstall deskwatch")]
    t0 = time.perf_counter()
    try:
        vision = build_vision(run.cfg)
    except Exception as exc:  # ModelError, a missing runtime: the daemon would exit 69 the same way
        what, remedy = getattr(exc, "what", str(exc)), models_remedy(run.cfg, getattr(exc, "path", None))
        return [CheckResult("models", FAIL, f"the daemon's vision stage does not start: {what}", remedy)]
    load_ms = (time.perf_counter() - t0) * 1000
    try:
        in_use = vision.model_hashes()
        store = ModelStore(vision.cfg)
        rows: list[CheckResult] = []
        for file in sorted({e.file for e in store.manifest.values()}):
            if file in in_use:
                run.model_ms[file] = load_ms
                rows.append(CheckResult(f"model {file}", PASS, f"sha256 {in_use[file][:12]}… ok, in use"))
                continue
            try:
                entry, _content = store.verify(file)
            except ModelError as exc:
                rows.append(
                    CheckResult(f"model {file}", WARN, f"{exc.what} (not in use)", models_remedy(run.cfg, exc.path))
                )
                continue
            rows.append(CheckResult(f"model {file}", PASS, f"sha256 {entry.sha256[:12]}… ok (not in use)"))
        rows.append(
            CheckResult("models loaded", PASS, f"{len(in_use)} models in {load_ms:.0f} ms from {store.directory}")
        )
        rows.append(_inference_row(run, vision))
    finally:
        vision.close()
    target = identity_target(run.cfg)
    if target is not None:
        worker = target.worker_id
        problem = _template_problem(run.cfg.vision, store, target) if target.enrolled else None
        if problem:
            rows.append(CheckResult("identity", WARN, problem, "with the worker at the desk: deskwatch enroll"))
        elif target.enrolled:
            rows.append(CheckResult("identity", PASS, f"worker {worker} enrolled"))
        else:
            rows.append(
                CheckResult(
                    "identity",
                    WARN,
                    f"worker {worker} is not enrolled: the identity check cannot run",
                    f"with the worker at the desk: deskwatch enroll (profile {run.cfg.policy.profile} checks identity)",
                )
            )
    return rows


def _template_problem(vision_cfg: Any, store: Any, target: Any) -> str | None:
    """Templates this device cannot use (made by another identity backend or model)."""
    from deskwatch.vision import identity
    from deskwatch.vision.pipeline import FACE_EMBEDDER_MODEL

    templates, problem = identity.read_templates(target.state_dir, target.worker_id)
    if templates is None:
        return problem or f"the face templates of worker {target.worker_id} cannot be read: enrol the worker again"
    try:
        if vision_cfg.identity_backend == "tflite":
            sha = store.entry(FACE_EMBEDDER_MODEL).sha256
        else:
            sha = identity.dlib_model_sha256()
    except Exception as exc:  # a missing model shows in the model rows; say why here too
        return f"cannot tell which model the identity check would use: {exc}"
    return identity.mismatch(templates, vision_cfg.identity_backend, sha, target.worker_id)


def _inference_row(run: SelftestRun, vision: Any) -> CheckResult:
    """Analyse every frame of the burst (after one warm-up) as a scan would."""
    if not run.frames:
        return CheckResult("inference", WARN, "no frame to time (camera failed)", "fix the camera first")
    try:
        vision.analyze(run.frames[0])  # warm-up: the first invoke allocates
        times, analyses = [], []
        for frame in run.frames:
            t0 = time.perf_counter()
            analyses.append(vision.analyze(frame))
            times.append((time.perf_counter() - t0) * 1000)
    except Exception as exc:
        return CheckResult("inference", FAIL, f"the vision stage failed on a frame: {exc}", "report this with the log")
    run.analyses = analyses
    run.analysis = analyses[len(analyses) // 2]
    run.face_turns = face_turns(vision, run.frames)
    slowest = max(times)
    parts = [f"{k} {v:.0f} ms" for k, v in run.analysis.timings_ms.items() if k != "total"]
    identity = "identity check on" if vision.identity_enabled else "identity check off"
    detail = f"{len(times)} frames, {sorted(times)[len(times) // 2]:.0f} ms median ({', '.join(parts)}); {identity}"
    if all(a.light.low_light or a.light.obstructed for a in analyses):
        return CheckResult("inference", WARN, detail + " (detectors skipped: too dark)", "fix the light")
    if slowest > SLOW_FRAME_MS:
        return CheckResult(
            "inference", WARN, detail, "slow: lower vision.threads contention or use object_precision int8"
        )
    return CheckResult("inference", PASS, detail)


ORIENTATION_FRAMES = 3  # frames of the burst looked at turned: enough for a worker who sits down mid-burst
TURNED_FACE = 0.75  # a face this sure, found only with the picture turned, says the camera is turned
TURNED_MARGIN = 0.25  # ... and this much surer than any face in the picture as it is
UPRIGHT_FACE = 0.5


def face_turns(vision: Any, frames: list[Frame]) -> dict[int, float]:
    """The surest face the face detector finds in a few of the burst's frames as they are and
    turned 90, 180 and 270 degrees clockwise. It finds faces upright: in the repo's photos
    turned over it found one in 10 of 42 where it found 30 upright (on 97 photos as taken no
    turn found a face as sure as TURNED_FACE above the picture as it is)."""
    from deskwatch.camera import turned

    picks = frames[:: max(1, len(frames) // ORIENTATION_FRAMES)][:ORIENTATION_FRAMES]
    return {
        degrees: max(
            (f.score for frame in picks for f in vision.faces.detect(turned(frame.image, degrees))), default=0.0
        )
        for degrees in (0, 90, 180, 270)
    }


def check_orientation(run: SelftestRun) -> list[CheckResult]:
    """Is the picture upright? A camera module mounted upside down (or on its side) makes the
    detectors misjudge the worker (an empty desk, food at a mouth, a call): the face detector
    finds faces upright only, so a face found only with the picture turned names the turn."""
    turns = run.face_turns
    if not turns:
        return [CheckResult("orientation", WARN, "not checked (no analysed frame)", "fix the camera/models first")]
    scores = ", ".join(f"{d}°: {s:.2f}" for d, s in turns.items())
    best = max(turns, key=lambda d: (turns[d], d == 0))
    if best and turns[best] >= TURNED_FACE and turns[best] - turns[0] >= TURNED_MARGIN:
        want = (run.cfg.camera.rotation + best) % 360
        return [
            CheckResult(
                "orientation",
                WARN,
                f"the picture looks turned: the surest face is found with it turned {best}° clockwise "
                f"(surest face per turn: {scores})",
                f"set camera.rotation: {want} in the config (or turn the camera round), then run the selftest again",
            )
        ]
    if turns[0] >= UPRIGHT_FACE:
        return [CheckResult("orientation", PASS, f"upright (surest face per turn: {scores})")]
    return [
        CheckResult(
            "orientation",
            WARN,
            f"not checked: no face in view in any orientation ({scores})",
            "sit facing the camera during the selftest",
        )
    ]


def frame_people(analysis: FrameAnalysis, cfg: Config) -> tuple[int, int, int, int]:
    """(people seen, people in the desk zone, faces, second people) in one frame, judged as the
    policy does: the last counts those besides the worker that extra_person would report."""
    policy = cfg.policy
    view = people_view(analysis, policy)
    zone, overlap = Box(*policy.desk_zone), policy.rules.away_from_desk.min_overlap
    persons = ([view.worker] if view.worker else []) + view.extras + view.bystanders
    second = len(view.extras) if view.worker is not None or len(view.extras) > 1 else 0
    return len(persons), sum(p.in_zone(zone, overlap) for p in persons), len(analysis.faces), second


def check_framing(run: SelftestRun) -> list[CheckResult]:
    """Every frame of the burst: a burst that starts on an empty desk is judged by the frames
    where the worker sits down, not by whichever frame happened to be in the middle."""
    if not run.analyses:
        return [CheckResult("framing", WARN, "not checked (no analysed frame)", "fix the camera/models first")]
    counts = [frame_people(a, run.cfg) for a in run.analyses]
    per_frame = "; ".join(
        f"frame {i}: " + ("nobody" if seen == 0 else f"{inside} of {seen} in the desk zone, {faces} faces")
        for i, (seen, inside, faces, _x) in enumerate(counts, 1)
    )
    framed = [i for i, (_s, inside, faces, _x) in enumerate(counts, 1) if inside == 1 and faces >= 1]
    crowded = [i for i, (_s, inside, _f, _x) in enumerate(counts, 1) if inside > 1]
    second = [i for i, (_s, _i, _f, extras) in enumerate(counts, 1) if extras]
    n = len(counts)
    if crowded:
        return [
            CheckResult(
                "framing",
                WARN,
                f"more than one person in the desk zone in frame {', '.join(map(str, crowded))} ({per_frame})",
                "only the worker should sit there during the selftest (extra_person would fire), or narrow "
                "policy.desk_zone to the worker's seat",
            )
        ]
    if second:
        # outside the desk zone, a face looking at the camera is a second person facing the
        # screen: a poster, a photo or a TV showing a face is one unless a frame runs close
        # round it on all four sides
        return [
            CheckResult(
                "framing",
                WARN,
                f"somebody besides the worker close to the camera or facing it in frame "
                f"{', '.join(map(str, second))} ({per_frame}); every scan would report extra_person",
                "only the worker should be in view during the selftest; a poster, a photo or a TV showing a face "
                "counts as a second person: take it out of view or aim the camera away from it",
            )
        ]
    if framed:
        return [
            CheckResult(
                "framing", PASS, f"worker in the desk zone with a face in {len(framed)} of {n} frames ({per_frame})"
            )
        ]
    if any(inside for _s, inside, _f, _x in counts):
        return [
            CheckResult(
                "framing",
                WARN,
                f"in the desk zone but no face in any frame ({per_frame})",
                "raise the camera to face height",
            )
        ]
    return [
        CheckResult(
            "framing",
            WARN,
            f"nobody in the desk zone in any of {n} frames ({per_frame})",
            "sit at the desk during the selftest; aim the camera (deskwatch aim) or adjust policy.desk_zone",
        )
    ]


def check_liveness(run: SelftestRun) -> list[CheckResult]:
    """Is the face at the desk judged live? A worker's face taken for a picture of a face
    (straight edges of a door, window or picture frame around the head, and sensor noise
    lifting its moire score) would count them away and report a presentation_attack: the
    technician can re-aim the camera or add light now, before it accuses anyone."""
    if not run.cfg.vision.liveness.enabled:
        return [CheckResult("liveness", PASS, "off in the configuration (vision.liveness.enabled: false)")]
    if not run.analyses:
        return [CheckResult("liveness", WARN, "not checked (no analysed frame)", "fix the camera/models first")]
    judged = [(i, f) for i, a in enumerate(run.analyses, 1) for f in a.faces if f.live is not None]
    if not judged:
        size = run.cfg.vision.liveness.min_face_px
        return [
            CheckResult(
                "liveness",
                WARN,
                f"no face of at least {size} px in any of {len(run.analyses)} frames: nothing to judge",
                "sit at the desk facing the camera during the selftest; raise the camera or move it closer",
            )
        ]
    pictures = [(i, f) for i, f in judged if f.live is False]
    frames = sorted({i for i, _f in judged})
    if pictures:
        where = ", ".join(str(i) for i in sorted({i for i, _f in pictures}))
        return [
            CheckResult(
                "liveness",
                WARN,
                f"a face in frame {where} was taken for a picture of a face ({pictures[0][1].spoof_cues}); "
                "if it is the worker's, scans would count them away and report a presentation_attack",
                "aim the camera so that no door, window or picture frame surrounds the worker's head, add light "
                "(sensor noise raises the moire score), and keep photos and screens showing faces out of view",
            )
        ]
    return [
        CheckResult(
            "liveness", PASS, f"{len(judged)} face(s) in {len(frames)} of {len(run.analyses)} frames judged live"
        )
    ]


# -- broker -----------------------------------------------------------------------------------
def check_broker(run: SelftestRun, timeout: float = 10.0) -> list[CheckResult]:

    return [probe_broker(run.cfg, timeout=timeout)]


CHECKS: dict[str, Check] = {
    "clock": check_clock,
    "disk": check_disk,
    "permissions": check_permissions,
    "camera": check_camera,
    "light": check_light,
    "models": check_models,
    "framing": check_framing,
    "orientation": check_orientation,
    "liveness": check_liveness,
    "broker": check_broker,
}


def run_selftest(
    cfg: Config,
    *,
    config_path: str = "",
    skip: Iterable[str] = (),
    progress: Callable[[int, int, str], None] | None = None,
    checks: dict[str, Check] | None = None,
    service_user: str = "",
) -> SelftestRun:
    """Run every check (minus ``skip``) in order; ``progress(i, n, name)`` before each."""
    run = SelftestRun(cfg, config_path, service_user)
    todo = [(name, fn) for name, fn in (checks or CHECKS).items() if name not in set(skip)]
    for i, (name, fn) in enumerate(todo, 1):
        if progress:
            progress(i, len(todo), name)
        try:
            rows = fn(run)
        except Exception as exc:
            log.exception("selftest check %s crashed", name)
            rows = [CheckResult(name, FAIL, f"check crashed: {exc}", "report this with the log")]
        run.results.extend(rows)
        for row in rows:
            log.info(
                "selftest %s %s: %s",
                row.name,
                row.status,
                row.detail,
                extra={"journal": {"DESKWATCH_EVENT": "selftest", "CHECK": row.name, "RESULT": row.status}},
            )
    return run


def checked_as(service_user: str = "") -> str:
    """Whose rights the checks ran with: the daemon's user, or somebody else (then file access
    may differ for the daemon; the permissions row judges it for the daemon's user)."""
    me = current_account()
    daemon = service_user or SERVICE_USER
    if me.name == daemon:
        return f"{me.describe()}, the daemon's user"
    return f"{me.describe()}, not the daemon's user {daemon}"


def header(cfg: Config, now: datetime | None = None, service_user: str = "") -> dict[str, str]:
    """What an install ticket needs to name this desk: device, site, serial, version, host, IP,
    time, and whose rights the checks ran with."""
    import socket

    from deskwatch import __version__
    from deskwatch.system.device_info import route_address, serial_number

    when = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "device": cfg.device.id,
        "site": cfg.device.site,
        "worker": cfg.device.worker_id,
        "serial": serial_number() or "unknown",
        "version": f"deskwatch {__version__}",
        "host": socket.gethostname(),
        "ip": route_address() or "no route",
        "time": when.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "checked_as": checked_as(service_user),
    }


def render_header(fields: dict[str, str]) -> str:
    return (
        f"deskwatch selftest  {fields['time']}\n"
        f"device {fields['site']}/{fields['device']} (worker {fields['worker']})  serial {fields['serial']}\n"
        f"{fields['version']}  host {fields['host']}  ip {fields['ip']}\n"
        f"checked as {fields['checked_as']}"
    )


def render_table(results: list[CheckResult], width: int = 100) -> str:
    """The PASS/WARN/FAIL table; a remedy line under each row that is not PASS."""
    name_w = max([len(r.name) for r in results] + [5])
    lines = [f"{'check':<{name_w}}  result  detail", "-" * min(width, name_w + 60)]
    for r in results:
        lines.append(f"{r.name:<{name_w}}  {r.status:<6}  {r.detail}")
        if r.status != PASS and r.remedy:
            lines.append(f"{'':<{name_w}}  {'':<6}  -> {r.remedy}")
    counts = {s: sum(r.status == s for r in results) for s in (PASS, WARN, FAIL)}
    lines.append("-" * min(width, name_w + 60))
    verdict = "FAIL" if counts[FAIL] else ("PASS with warnings" if counts[WARN] else "PASS")
    lines.append(f"{verdict}: {counts[PASS]} passed, {counts[WARN]} warnings, {counts[FAIL]} failed")
    return "\n".join(lines)
