"""One scan, start to finish: burst -> vision -> policy -> evidence -> outbox.

The scanner owns no thread; the daemon's scan loop (``app.py``) calls
:meth:`Scanner.scan` when the schedule or a command says so (the camera takes each
burst in a thread of its own, :class:`~deskwatch.camera.BurstInFlight`). Every stage is
passed in, so a test drives it with a fake camera, detector outputs and a fake clock.

Each frame is analysed as soon as it is captured and then let go: a frame that may still
become a finding's evidence frame (``Policy.evidence_frames``) is kept as its evidence
picture (anonymised and scaled down, ~0.2 MB), so a scan holds one full frame at a time,
not the whole burst (issue 13).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from deskwatch.camera import BurstInFlight, Camera, CameraError
from deskwatch.camera.config import CameraConfig
from deskwatch.domain import (
    CheckOutcome,
    Finding,
    Frame,
    FrameAnalysis,
    PeopleView,
    ScanRecord,
    SentFinding,
    new_id,
    rfc3339,
)
from deskwatch.schedule import Clock
from deskwatch.stages import Outbox, Policy, Vision
from deskwatch.system.logs import NOTICE
from deskwatch.vision.memory import trim_heap

if TYPE_CHECKING:
    from deskwatch.delivery.payloads import Source
    from deskwatch.evidence.thumbnail import Evidence, Picture
    from deskwatch.policy.engine import PolicyContext, PolicyOutcome

log = logging.getLogger(__name__)


# (thumbnail, None) or (None, why not: "disabled", "profile", "rule", "too_large", "no_frame")
# from what the scan kept of the frame: the frame, its evidence picture (anonymised and
# fitted: ``deskwatch.evidence.thumbnail``) or nothing; the people view is the policy's
# (None: blur everyone)
EvidenceMaker = Callable[
    ["Frame | Picture | None", Finding, FrameAnalysis, "PeopleView | None"], "tuple[Evidence | None, str | None]"
]
# the picture a finding of this frame would show (made with the policy's people view), or
# None when no thumbnail is ever made
EvidencePreparer = Callable[[Frame, FrameAnalysis, PeopleView], "Picture | None"]
ContextMaker = Callable[[str, bool], "PolicyContext"]
# why the camera must stay closed at this instant ("paused", "the shift ended"), or None
CameraGate = Callable[[datetime], "str | None"]


@dataclass
class AnalysedBurst:
    """A burst through the vision stage: every frame's analysis, and what is kept of each
    frame by position: None where it cannot be any finding's evidence frame, else the frame
    or its evidence picture."""

    analyses: list[FrameAnalysis] = field(default_factory=list)
    frames: list[Frame | Picture | None] = field(default_factory=list)
    vision_ms: float = 0.0  # the vision stage and the closer-look question, summed over the frames
    keep_ms: float = 0.0  # the policy's evidence_frames, summed over the frames
    evidence_ms: float = 0.0  # evidence pictures made of the frames that may be evidence
    unseen: int = 0  # frames of the burst not analysed: it was settled before them (Policy.burst_settled)


def analyze_frames(
    vision: Vision,
    policy: Policy,
    frames: Iterable[Frame],
    count: int,
    prepare: EvidencePreparer | None = None,
) -> AnalysedBurst:
    """Each frame of a burst of ``count`` through the vision stage as it comes, the phone
    stage (the costliest part) only while the policy says phone_use or eating can still
    persist through the burst: in a burst of 5 at persistence 0.6, three frames without a
    phone in use or food at the mouth settle both rules and the last two frames skip it.
    After each frame only what may still be a finding's evidence is kept: with ``prepare``,
    as the evidence picture (the full frame is let go), else the frame itself. The burst
    ends early once the frames still to come could change no check's outcome
    (``policy.burst_settled``: a worker at the desk, recognised, with nothing that could
    persist): ``unseen`` counts them, and leaving a :class:`~deskwatch.camera.BurstInFlight`
    then closes the camera before it takes them."""
    out = AnalysedBurst()
    for frame in frames:
        t0 = time.perf_counter()
        closer = policy.closer_look_needed(out.analyses, count - len(out.analyses))
        analysis = vision.analyze(frame, look_closer=closer)
        out.analyses.append(analysis)
        t1 = time.perf_counter()
        keep = policy.evidence_frames(out.analyses)
        out.frames = [k if out.analyses[i].frame_index in keep else None for i, k in enumerate(out.frames)]
        t2 = time.perf_counter()
        view = keep.get(analysis.frame_index)
        out.frames.append(None if view is None else _kept(frame, analysis, view, prepare))
        del frame  # from here on only out.frames holds it, if anything does
        out.vision_ms += (t1 - t0) * 1000
        out.keep_ms += (t2 - t1) * 1000
        t3 = time.perf_counter()
        out.evidence_ms += (t3 - t2) * 1000
        remaining = count - len(out.analyses)
        settled = remaining > 0 and policy.burst_settled(out.analyses, remaining, identity=vision.identity_enabled)
        out.keep_ms += (time.perf_counter() - t3) * 1000
        if settled:
            out.unseen = remaining
            break  # before the next frame is taken from the burst
    return out


def _kept(
    frame: Frame, analysis: FrameAnalysis, view: PeopleView, prepare: EvidencePreparer | None
) -> Frame | Picture | None:
    """What to keep of a frame that may become evidence: its picture, or the frame itself
    (no preparer, or it failed: evidence must never cost the scan; the thumbnail is tried
    again from the frame, and its failure costs only the thumbnail)."""
    if prepare is None:
        return frame
    try:
        return prepare(frame, analysis, view)
    except Exception:
        log.exception("evidence picture of frame %d failed; keeping the frame", analysis.frame_index)
        return frame


@dataclass
class CameraHealth:
    """Failures, backoff and a state word for status/health."""

    retry_base: float = 5.0
    retry_max: float = 300.0
    failures: int = 0
    last_error: str | None = None
    retry_at: float = 0.0  # monotonic

    @property
    def state(self) -> str:
        return "ok" if self.failures == 0 else "failed"

    def usable(self, now_mono: float) -> bool:
        return self.failures == 0 or now_mono >= self.retry_at

    def failed(self, error: str, now_mono: float) -> float:
        self.failures += 1
        self.last_error = error
        delay = min(self.retry_max, self.retry_base * 2 ** (self.failures - 1))
        self.retry_at = now_mono + delay
        return delay

    def recovered(self) -> bool:
        was_failed = self.failures > 0
        self.failures, self.last_error, self.retry_at = 0, None, 0.0
        return was_failed


@dataclass
class ScanStats:
    scans: int = 0
    findings: int = 0
    errors: int = 0
    skipped: int = 0
    last_scan_at: str | None = None
    inference_ms: deque[float] = field(default_factory=lambda: deque(maxlen=500))

    def percentile(self, q: float) -> float | None:
        if not self.inference_ms:
            return None
        data = sorted(self.inference_ms)
        return round(data[min(len(data) - 1, int(q * len(data)))], 1)


class Scanner:
    def __init__(
        self,
        burst: CameraConfig,
        source: Source,
        camera: Camera,
        vision: Vision,
        policy: Policy,
        outbox: Outbox,
        clock: Clock,
        make_context: ContextMaker,
        make_evidence: EvidenceMaker | None,
        payloads: Any,
        stop: threading.Event | None = None,
        on_record: Callable[[ScanRecord], None] | None = None,
        on_begin: Callable[[ScanRecord], None] | None = None,
        on_unrecorded: Callable[[str, BaseException], bool] | None = None,
        prepare_evidence: EvidencePreparer | None = None,
        camera_closed: CameraGate | None = None,
    ):
        self.burst = burst
        self.source = source
        self.camera = camera
        self.vision = vision
        self.policy = policy
        self.outbox = outbox
        self.clock = clock
        self.make_context = make_context
        self.make_evidence = make_evidence
        # what is kept of a frame that may become evidence (None: the frame itself)
        self.prepare_evidence = prepare_evidence
        self.payloads = payloads  # deskwatch.delivery.payloads (module) or a test double
        self.stop = stop or threading.Event()
        self.on_record = on_record
        self.on_begin = on_begin  # the scan's row in the audit trail, before the camera opens
        # says a record the trail's disk refused in one line (False: not the disk's doing)
        self.on_unrecorded = on_unrecorded
        self.unrecordable: str | None = None  # why the last scan's row could not be written (no scan then)
        # asked before each burst, the confirming one too: a scan may start minutes before
        # the worker pauses or the shift ends (None: the pause alone, as the policy sees it)
        self.camera_closed: CameraGate = camera_closed or policy.pre_scan
        self.camera_health = CameraHealth(retry_max=burst.retry_max_seconds)
        self.stats = ScanStats()
        self._lock = threading.Lock()  # one scan at a time (schedule, command, CLI)

    # -- the scan ----------------------------------------------------------------------
    def scan(self, trigger: str) -> ScanRecord | None:
        """Run one scan now. None when it was skipped before the camera opened."""
        with self._lock:
            try:
                return self._scan(trigger)
            finally:
                # the burst's frames, crops and tensors are garbage now: their pages go back
                # to the kernel, and the idle daemon holds only its models (issue 13)
                trim_heap()

    def _scan(self, trigger: str) -> ScanRecord | None:
        now = self.clock.now()
        skip = self.camera_closed(now)
        if skip:
            self.stats.skipped += 1
            log.info("scan skipped: %s", skip, extra={"journal": {"DESKWATCH_EVENT": "scan_skipped"}})
            return None
        record = ScanRecord(scan_id=new_id(now), trigger=trigger, started_at=now)
        if not self._begin(record):
            return None  # a scan the worker could not see in the audit trail does not happen
        t0 = time.perf_counter()
        outcome, analyses, frames = self._burst_and_evaluate(record, confirming=False)
        people: dict[int, PeopleView] = {}
        if outcome is not None and outcome.confirm_after_seconds is not None and not self.stop.is_set():
            # away_from_desk is reported only when a second burst agrees.
            log.info("scan %s: nobody at the desk; confirming in %.0f s", record.scan_id, outcome.confirm_after_seconds)
            # every path below either replaces the first burst or reports no finding (record.error):
            # what it kept of its frames goes now, not after the second burst is taken too
            frames = []
            trim_heap()
            if self.clock.wait(self.stop, outcome.confirm_after_seconds):
                record.error = "stopped before the empty desk could be confirmed; nothing reported"
            elif (skip := self.camera_closed(self.clock.now())) is not None:
                # paused or the shift ended meanwhile: the camera stays closed, the first
                # burst proves nothing
                record.error = f"{skip} before the empty desk could be confirmed; nothing reported"
            else:
                second, analyses2, frames2 = self._burst_and_evaluate(record, confirming=True)
                if second is not None:
                    outcome, analyses, frames = second, analyses2, frames2
        if outcome is not None and not record.error:
            record.findings = list(outcome.findings)
            record.checks = list(outcome.checks)
            record.persons, record.bystanders = outcome.persons, outcome.bystanders
            people = outcome.people
        record.finished_at = self.clock.now()
        record.durations_ms["total"] = round((time.perf_counter() - t0) * 1000, 1)
        self.publish(record, frames, analyses, people)
        return record

    def _burst_and_evaluate(
        self, record: ScanRecord, *, confirming: bool
    ) -> tuple[PolicyOutcome | None, list[FrameAnalysis], list[Frame | Picture | None]]:
        cam_cfg = self.burst
        mono = self.clock.monotonic()
        if not self.camera_health.usable(mono):
            wait = self.camera_health.retry_at - mono
            record.error = f"camera unavailable ({self.camera_health.last_error}); next attempt in {wait:.0f} s"
            return None, [], []
        # Each frame is analysed while the burst goes on; what the camera did is judged first
        # once it is over, as when the analysis came after it.
        scanned, failure = AnalysedBurst(), None
        with BurstInFlight(self.camera, cam_cfg.burst_frames, cam_cfg.burst_seconds, self.clock, self.stop) as burst:
            try:
                scanned = analyze_frames(self.vision, self.policy, burst, cam_cfg.burst_frames, self.prepare_evidence)
            except Exception as exc:  # a bug or a bad frame costs this scan, which still gets its record
                failure = exc
        # what the camera took counts whatever comes of it: a camera that failed after two frames
        # still took (and the scan analysed) them
        record.frames += burst.captured
        if burst.error is not None:
            if not isinstance(burst.error, Exception):
                raise burst.error  # KeyboardInterrupt, SystemExit: not the camera's
            error = burst.error
            if not isinstance(error, (CameraError, OSError, RuntimeError)):
                # a backend's unexpected exception is still this scan's camera failure: the scan
                # keeps its audit record and the camera its backoff; the traceback goes to the log
                log.error("camera backend raised %s", type(error).__name__, exc_info=error)
                error = CameraError(f"{type(error).__name__}: {error}")
            delay = self.camera_health.failed(str(error), self.clock.monotonic())
            record.error = f"camera failed: {error}"
            log.error(
                "camera failed: %s; tried again at the next scan, not sooner than in %.0f s",
                error,
                delay,
                extra={"journal": {"DESKWATCH_EVENT": "camera_failed", "SCAN_ID": record.scan_id}},
            )
            return None, [], []
        if self.camera_health.recovered():
            log.info("camera recovered", extra={"journal": {"DESKWATCH_EVENT": "camera_recovered"}})
        record.durations_ms["capture"] = record.durations_ms.get("capture", 0.0) + round(burst.seconds * 1000, 1)
        if failure is None and not scanned.unseen and burst.captured < cam_cfg.burst_frames:
            # Cut short by a stop (shutdown: a restart, an update, a reboot). The frames taken
            # are no burst: judged as one, a phone glimpsed in 1 frame was phone_use "in 1/1
            # frames". Nor can they be judged as the whole burst with the missing frames counted
            # in ``need``, as a settled burst is: nothing proved that those frames could change
            # nothing, and some verdicts turn on them either way (the light gate blocks a burst
            # with too few checkable frames; an unknown face must outnumber the recognised ones;
            # away_from_desk asks for a whole second burst). A finding that already held goes
            # unreported - the first scan after the restart sees it again - rather than one that
            # would not have held being reported against the worker.
            what = "the confirming burst" if confirming else "the burst"
            record.error = (
                f"{what} was interrupted by shutdown after {burst.captured} of {cam_cfg.burst_frames} frames; "
                "nothing reported"
            )
            return None, [], []
        if scanned.unseen:
            # settled: the frames the camera never took, and those it took while the analysis was
            # behind it (a frame's analysis slower than the camera's gap) and that were let go
            # unanalysed - counted apart, so that taken + never taken is the burst
            record.unseen_frames += max(0, cam_cfg.burst_frames - burst.captured)
            record.dropped_frames += burst.captured - len(scanned.analyses)
        t = time.perf_counter()
        try:
            if failure is not None:
                raise failure
            ctx = replace(self.make_context(record.trigger, confirming), unseen_frames=scanned.unseen)
            outcome = self.policy.evaluate(scanned.analyses, ctx)
        except Exception as exc:  # a bug or a bad frame costs this scan, which still gets its record
            log.exception("scan %s: analysis failed", record.scan_id)
            record.error = f"analysis failed: {type(exc).__name__}: {exc}"
            return None, [], scanned.frames
        policy_ms = (time.perf_counter() - t) * 1000 + scanned.keep_ms
        record.durations_ms["evidence"] = record.durations_ms.get("evidence", 0.0) + scanned.evidence_ms
        record.durations_ms["vision"] = record.durations_ms.get("vision", 0.0) + round(scanned.vision_ms, 1)
        self.stats.inference_ms.append(scanned.vision_ms / max(1, len(scanned.analyses)))  # per frame analysed
        record.durations_ms["policy"] = record.durations_ms.get("policy", 0.0) + round(policy_ms, 2)
        return outcome, scanned.analyses, scanned.frames

    # -- delivery ----------------------------------------------------------------------
    def publish(
        self,
        record: ScanRecord,
        frames: list[Frame | Picture | None],
        analyses: list[FrameAnalysis],
        people: dict[int, PeopleView] | None = None,
    ) -> None:
        self.stats.scans += 1
        self.stats.last_scan_at = rfc3339(record.started_at)
        if record.error:
            self.stats.errors += 1
            record.checks = record.checks or [CheckOutcome("all", "skipped", record.error)]
        t = time.perf_counter()
        events: list[tuple[dict[str, Any], bytes | None]] = []
        notes: list[str] = []
        for finding in record.findings:
            self.stats.findings += 1
            evidence, reason = self._evidence_for(finding, frames, analyses, people or {})
            payload = self.payloads.event_payload(self.source, finding, record, evidence, reason)
            events.append((payload, evidence.jpeg if evidence else None))
            notes.append(f", evidence {len(evidence.jpeg)} B" if evidence else f", no evidence ({reason})")
        record.durations_ms["evidence"] = round(
            record.durations_ms.get("evidence", 0.0) + (time.perf_counter() - t) * 1000, 1
        )
        # The findings, their images and the scan record go to the outbox in one transaction.
        try:
            event_ids = self.outbox.send_scan(self.payloads.scan_payload(self.source, record), events)
        except Exception as exc:
            # the camera opened and the scan was judged: the worker's audit trail says so, and
            # that nothing of it left the device, whatever the outbox did (the scan loop counts
            # and logs the failure as before)
            failure = f"not queued for delivery: {type(exc).__name__}: {exc}"
            record.error = f"{record.error}; {failure}" if record.error else failure
            self._audit(record)
            raise
        for finding, (payload, jpeg), event_id, note in zip(record.findings, events, event_ids, notes, strict=True):
            no_picture = None if jpeg is not None else str(payload.get("evidence_reason") or "none")
            record.sent.append(SentFinding(event_id, len(jpeg) if jpeg is not None else None, no_picture))
            log.log(
                NOTICE,
                "finding %s in scan %s: %s (confidence %.2f)%s",
                finding.type,
                record.scan_id,
                finding.journal_detail or finding.detail or finding.type,
                finding.confidence,
                note,
                extra={
                    "journal": {
                        "DESKWATCH_EVENT": "finding",
                        "EVENT_ID": event_id,
                        "EVENT_TYPE": finding.type,
                        "SCAN_ID": record.scan_id,
                    }
                },
            )
        summary = ", ".join(f.type for f in record.findings) or ("error: " + record.error if record.error else "clear")
        settled = ""
        if record.unseen_frames or record.dropped_frames:
            parts = [f"{record.unseen_frames} more not needed"] if record.unseen_frames else []
            if record.dropped_frames:
                parts.append(f"{record.dropped_frames} taken before it settled, not analysed")
            settled = f" (settled: {'; '.join(parts)})"
        log.info(
            "scan %s (%s) done in %.0f ms: %d frames%s, %d persons, %d bystanders: %s",
            record.scan_id,
            record.trigger,
            record.durations_ms.get("total", 0.0),
            record.frames,
            settled,
            record.persons,
            record.bystanders,
            summary,
            extra={"journal": {"DESKWATCH_EVENT": "scan", "SCAN_ID": record.scan_id, "SCAN_OUTCOME": record.outcome}},
        )
        self._audit(record)

    def _begin(self, record: ScanRecord) -> bool:
        """The scan's row in the worker's audit trail, before the camera opens: a daemon that
        dies during the scan leaves it (the whole record replaces it at the end). False when
        it cannot be written (a full disk, a damaged or read-only file): the scan is not
        taken, the camera stays closed, and :attr:`unrecordable` says why until a row can be
        written again."""
        if self.on_begin is None:
            return True
        try:
            self.on_begin(record)
        except Exception as exc:
            self.stats.skipped += 1
            self.unrecordable = f"{type(exc).__name__}: {exc}"
            what = "scan not taken, the camera stays closed: it cannot be recorded in the audit trail"
            # a card that refuses writes is said as the trail says it: what is wrong with the disk
            # and what to do in full once, then this line with the error at each scan
            if self.on_unrecorded is None or not self.on_unrecorded(what, exc):
                log.error(
                    "%s (%s)", what, self.unrecordable, extra={"journal": {"DESKWATCH_EVENT": "scan_unrecordable"}}
                )
            return False
        if self.unrecordable is not None:
            log.info("the audit trail can be written again: scans go on")
            self.unrecordable = None
        return True

    def _audit(self, record: ScanRecord) -> None:
        """The scan's record in the worker's audit trail on the device."""
        if self.on_record is not None:
            try:
                self.on_record(record)
            except Exception as exc:  # e.g. a full disk: the record went to the outbox, if it could
                what = (
                    f"could not write scan {record.scan_id} to the audit trail (held, and written once the disk "
                    "takes it)"
                )
                if self.on_unrecorded is None or not self.on_unrecorded(what, exc):
                    log.exception("could not write scan %s to the audit trail", record.scan_id)

    def _evidence_for(
        self,
        finding: Finding,
        frames: list[Frame | Picture | None],
        analyses: list[FrameAnalysis],
        people: dict[int, PeopleView],
    ) -> tuple[Evidence | None, str | None]:
        """The thumbnail, or None and the reason the event carries instead."""
        if self.make_evidence is None or not frames:
            return None, "no_frame"
        i = min(max(finding.frame_index, 0), len(frames) - 1)
        try:
            return self.make_evidence(frames[i], finding, analyses[i], people.get(analyses[i].frame_index))
        except Exception:  # evidence must never cost the event itself
            log.exception("evidence for %s failed; sending the event without it", finding.type)
            return None, "failed"
