"""The composition root: builds every stage from the validated config and runs them.

Threads: the scan loop runs in the caller's thread (``Daemon.run``); delivery runs
its own publisher thread; the control socket serves from its own thread. Commands
(MQTT or control socket) only change state or queue work and wake the loop, so a
scan never runs on a network thread.

Shutdown order (SIGTERM, SIGINT or ``request_stop``): stop taking scans, finish or
abort the current burst, stop the control socket, let delivery flush and publish a
clean ``offline``, then tell systemd we are stopping.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from deskwatch import __version__
from deskwatch.camera import Camera, open_camera
from deskwatch.domain import CheckOutcome, ScanRecord, new_id, rfc3339
from deskwatch.scanner import EvidenceMaker, EvidencePreparer, Scanner
from deskwatch.schedule import Clock, ScanPlanner, Schedule, SystemClock
from deskwatch.stages import Audit, Control, Delivery, Notifier, Policy, Vision
from deskwatch.system import health

if TYPE_CHECKING:
    from deskwatch.config import Config
    from deskwatch.delivery.client import Delivery as MqttDelivery
    from deskwatch.delivery.payloads import Source
    from deskwatch.handover import Handover
    from deskwatch.jobs.agent import JobAgent
    from deskwatch.policy.engine import Policy as PolicyEngine
    from deskwatch.vision.config import VisionConfig
    from deskwatch.vision.identity import IdentityTarget
    from deskwatch.vision.pipeline import Vision as VisionPipeline

log = logging.getLogger(__name__)


# -- building the stages from the validated config ------------------------------------------
# Each stage gets its own section plus the few facts the composition root decides for it
# (who the device is, whether identity runs, where state lives); none sees the root Config.


def payload_source(cfg: Config) -> Source:
    from deskwatch.delivery.payloads import Source

    return Source(cfg.device.site, cfg.device.id, cfg.device.worker_id, cfg.policy.profile)


def identity_target(cfg: Config) -> IdentityTarget | None:
    """Whose face the identity check compares with, or None when no rule may use it."""
    from deskwatch.policy.profiles import identity_allowed
    from deskwatch.vision.identity import IdentityTarget

    return IdentityTarget(cfg.state_dir, cfg.device.worker_id) if identity_allowed(cfg.policy) else None


def identity_state(cfg: Config) -> str:
    """For health: ``off`` (no rule checks identity), ``enrolled`` or ``not_enrolled``."""
    target = identity_target(cfg)
    if target is None:
        return "off"
    try:
        return "enrolled" if target.enrolled else "not_enrolled"
    except (OSError, ValueError):  # unreadable directory or a worker id the store refuses
        return "not_enrolled"


def vision_section(cfg: Config) -> VisionConfig:
    """``cfg.vision``, with the phone stage off when no rule of the profile uses it (minimal,
    or phone_use and eating switched off): its pose and CenterNet models are then never loaded."""
    from deskwatch.policy.profiles import rule_enabled

    if not cfg.vision.phones.enabled or any(rule_enabled(cfg.policy, r) for r in ("phone_use", "eating")):
        return cfg.vision
    return dataclasses.replace(cfg.vision, phones=dataclasses.replace(cfg.vision.phones, enabled=False))


def daemon_models_dir(cfg: Config) -> tuple[Path, str]:
    """The directory the daemon loads its models from, and why that one: ``vision.models_dir``
    when set, else the last model job's (``<state_dir>/models/current``, unless a software
    update replaced what it links to), else the installed package's. One choice for the
    daemon and for every tool that says which models it runs (``deskwatch models``)."""
    from deskwatch.jobs.agent import active_models_dir
    from deskwatch.vision.runtime import models_dir as installed_models_dir

    if cfg.vision.models_dir:
        return Path(cfg.vision.models_dir), "vision.models_dir"
    installed = installed_models_dir(cfg.vision)
    chosen = active_models_dir(Path(cfg.state_dir), installed)
    if chosen != installed:
        return chosen, "the last model job's, which the daemon loads"
    return installed, "installed, which the daemon loads"


def tool_models_dir(cfg: Config, command: str) -> tuple[Path, str, str | None]:
    """The models a technician's tool (``scan``, ``aim``, ``bench``) loads, why that one, and a
    line for the console when it is not the daemon's: as the daemon, except that root loads no
    directory another user could have written (a model job's, which the daemon's user writes
    with the manifest that vouches for it: a bug in TFLite's model parser would give that user
    root's rights); root then loads the installed models and the line says so and how to run
    ``command`` with the daemon's."""
    from deskwatch.technician.service_user import SERVICE_USER, not_roots
    from deskwatch.vision.runtime import models_dir as installed_models_dir

    chosen, source = daemon_models_dir(cfg)
    foreign = not_roots(chosen) if os.geteuid() == 0 else None
    if foreign is None:
        return chosen, source, None
    installed = installed_models_dir(dataclasses.replace(cfg.vision, models_dir=""))
    note = (
        f"as root, {command} loads the installed models ({installed}), not the ones the daemon loads ({chosen}, "
        f"{source.split(',')[0]}): {foreign}, and root parses no model another user could have written; to {command} "
        f"with the daemon's models run it as the daemon's user: sudo -u {SERVICE_USER} deskwatch {command} ..."
    )
    return installed, "installed; as root, not the daemon's: another user could have written those", note


# Pauses and resumes each go to the audit trail, and cmd/pause is the companion's to publish from
# the worker's PC: without a bound, a loop there wrote 10,000 audit rows in 30 s (16 MB a minute,
# kept for evidence.retention_days) until the SD card was full. A person needs a few a minute.
PAUSE_CHANGES_PER_MINUTE = 10


INSTALLED_MODELS_REMEDY = (
    "the installed models come with the deskwatch software: reinstall it (the appliance image: a signed update "
    "bundle, `sudo deskwatch update install BUNDLE`, or a software job from the collector; a source checkout: "
    "python models/build_models.py)"
)


def models_remedy(cfg: Config, path: Path | None) -> str:
    """What to do about a model file (or manifest) the daemon cannot use, by where it comes from:
    the last model job's directory, ``vision.models_dir``, or the installed software. A file the
    job linked to the installed one is the installed one."""
    from deskwatch.jobs.agent import CURRENT_MODELS

    if path is None:  # no TFLite runtime, say: the software is incomplete
        return INSTALLED_MODELS_REMEDY
    current = Path(cfg.state_dir) / "models" / CURRENT_MODELS
    if _within(path, current) and not path.is_symlink():
        return (
            f"it is the last model job's copy: remove {current} (sudo rm -r {current}; then sudo systemctl "
            "restart deskwatch loads the installed models) or send the model job again from the collector"
        )
    if cfg.vision.models_dir and _within(path, Path(cfg.vision.models_dir)):
        return (
            f"it is in vision.models_dir ({cfg.vision.models_dir}): put the manifest's files back there, or remove "
            "the setting to use the installed models"
        )
    return INSTALLED_MODELS_REMEDY


def _within(path: Path, directory: Path) -> bool:
    return os.path.abspath(path).startswith(os.path.abspath(directory) + os.sep)


def build_vision(cfg: Config, *, runtime: str | None = None, models_dir: Path | None = None) -> VisionPipeline:
    """The vision stage; raises ModelError on a missing or corrupt model.

    Models come from ``vision.models_dir`` when set, else from the last model job's
    directory (``<state_dir>/models/current``), else from the installed package. Only the
    models the profile's rules need are loaded (:func:`vision_section`; uk: phones, no food)."""
    from deskwatch.policy.profiles import rule_enabled
    from deskwatch.vision.pipeline import Vision as VisionPipeline

    vision = vision_section(cfg)
    if models_dir is not None:
        vision = dataclasses.replace(vision, models_dir=str(models_dir))
    elif not vision.models_dir:
        vision = dataclasses.replace(vision, models_dir=str(daemon_models_dir(cfg)[0]))
    food = rule_enabled(cfg.policy, "eating")
    presence = rule_enabled(cfg.policy, "away_from_desk")
    away = cfg.policy.rules.away_from_desk
    return VisionPipeline(
        vision,
        identity=identity_target(cfg),
        runtime=runtime,
        food=food,
        presence=presence,
        counts_from=(away.min_person_score, away.min_face_score),
    )


def build_policy(
    cfg: Config, audit: Audit | None = None, *, monotonic: Callable[[], float] = time.monotonic
) -> PolicyEngine:
    """The policy engine; ``monotonic`` times the worker's pause (a wall-clock step must not end it)."""
    from deskwatch.policy.engine import Policy as PolicyEngine

    return PolicyEngine(cfg.policy, audit=audit, monotonic=monotonic)


def build_evidence(cfg: Config) -> EvidenceMaker:
    """``(frame, finding, analysis, people) -> (thumbnail, None) | (None, reason)``."""
    from deskwatch.evidence.thumbnail import build_evidence as make

    return functools.partial(make, cfg=cfg.evidence)


def build_evidence_preparer(cfg: Config) -> EvidencePreparer:
    """``(frame, analysis, people) -> picture | None``: what a scan keeps of a frame that
    may become evidence, so that it need not keep the frame."""
    from deskwatch.evidence.thumbnail import prepare_evidence

    return functools.partial(prepare_evidence, cfg=cfg.evidence)


def build_delivery(cfg: Config, *, models: dict[str, str], version: str = __version__) -> MqttDelivery:
    """The outbox (caps, and evidence no older than retention) and the MQTT client draining it."""
    from deskwatch.delivery.client import Delivery as MqttDelivery
    from deskwatch.delivery.outbox import Outbox

    outbox = Outbox(
        cfg.state_dir,
        max_bytes=cfg.outbox.max_bytes,
        max_messages=cfg.outbox.max_messages,
        max_age_days=cfg.outbox.max_age_days,
        evidence_max_age_days=min(cfg.outbox.max_age_days, cfg.evidence.retention_days),
    )
    sealer = None
    if cfg.evidence.seal_to is not None:
        from deskwatch.delivery.seal import Sealer

        sealer = Sealer.from_text(cfg.evidence.seal_to)
    from deskwatch.system.device_info import serial_number

    return MqttDelivery(
        cfg.mqtt,
        outbox,
        payload_source(cfg),
        version=version,
        models=models,
        sealer=sealer,
        serial=serial_number(),
    )


def build_audit(cfg: Config) -> Audit:
    from deskwatch.audit import RESERVE_BYTES, AuditLog

    return AuditLog.for_state_dir(
        cfg.state_dir, keep_days=cfg.evidence.retention_days, disk_reserve_bytes=RESERVE_BYTES
    )


PURGE_RETRY_SECONDS = 3600  # a retention purge the disk refused (full) is tried again this soon


@dataclass
class Parts:
    """Stages the daemon is built from; tests pass fakes for any of them."""

    camera: Camera | None = None
    vision: Vision | None = None
    policy: Policy | None = None
    delivery: Delivery | None = None
    notifier: Notifier | None = None
    control: Control | None = None
    audit: Audit | None = None


class Daemon:
    TICK_SECONDS = 5.0  # the loop wakes at least this often (watchdog, status, pause expiry)

    def __init__(self, cfg: Config, *, clock: Clock | None = None, parts: Parts | None = None):
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.requests: queue.Queue[str] = queue.Queue()
        parts = parts or Parts()
        self._prepare_state_dir()
        self.audit: Audit = parts.audit or build_audit(cfg)
        unfinished: list[ScanRecord] = []
        try:  # scans the last run began and never finished (it died): recorded as cut off
            unfinished = self.audit.close_unfinished()
        except Exception:  # the first scan's row will say whether the trail can be written
            log.exception("could not record the scans the last run left unfinished in the audit trail")
        self.handover = self._take_over()
        self.camera: Camera = parts.camera or open_camera(cfg.camera)
        self.vision: Vision = parts.vision or build_vision(cfg)
        self.policy: Policy = parts.policy or build_policy(cfg, self.audit, monotonic=self.clock.monotonic)
        self.delivery: Delivery = parts.delivery or build_delivery(cfg, models=self.vision.model_hashes())
        self.notifier: Notifier = parts.notifier or self._build_notifier()
        self.control: Control | None = parts.control or self._build_control()
        self.started_mono = self.clock.monotonic()
        self._next_purge = self.started_mono
        self._health_trouble: str | None = None  # why the last health message could not be queued
        self._said_reasons: list[str] = []  # the status reasons the journal was last told
        from deskwatch.delivery import payloads
        from deskwatch.policy.engine import PolicyContext

        self._context_type = PolicyContext
        self.payloads = payloads
        self.source = payload_source(cfg)
        if self.handover is not None and self.handover.previous.site != cfg.device.site:
            self._leave_old_site()
            unfinished = []  # the old site's scans: in the trail, not the new site's to hear of
        self._report_unfinished(unfinished)
        self.scanner = Scanner(
            cfg.camera,
            self.source,
            self.camera,
            self.vision,
            self.policy,
            self.delivery,
            self.clock,
            make_context=self._context,
            make_evidence=build_evidence(cfg),
            payloads=payloads,
            stop=self.stop_event,
            on_record=self.audit.record_scan,
            on_begin=self.audit.begin_scan,
            on_unrecorded=self.audit.unwritten,
            prepare_evidence=build_evidence_preparer(cfg),
            camera_closed=self._camera_closed,
        )
        self.planner = ScanPlanner(Schedule(cfg.schedule), self.clock)
        from deskwatch.system.notify import watchdog_interval
        from deskwatch.system.watchdog import ProgressWatchdog, WatchdogThread, tick_interval

        # A scan (two bursts and the away confirmation in between) must fit in the
        # allowance; a camera read that hangs longer stops the pings.
        confirm = cfg.policy.rules.away_from_desk.confirm_after_seconds
        self.watchdog = ProgressWatchdog(
            self.notifier,
            self.clock.monotonic,
            60.0 + 2 * (cfg.camera.open_timeout_seconds + cfg.camera.burst_seconds) + confirm,
        )
        self._watchdog_thread = lambda: WatchdogThread(self.watchdog, tick_interval(watchdog_interval()))
        self._remote_lock = threading.Lock()
        self._remote_scans: collections.deque[float] = collections.deque()  # monotonic times, last hour
        self._pause_changes: collections.deque[float] = collections.deque()  # monotonic times, last minute
        self.delivery.on_command(self.handle_command)
        self._pending_models: Path | None = None
        self.jobs = self._build_jobs()
        self.delivery.on_reviews(self.take_reviews)

    def _take_over(self) -> Handover | None:
        """A desk handed to another worker: the previous worker's pause ends here, before the
        policy restores it (its overrun would be reported as the new worker's)."""
        from deskwatch.handover import take_over

        device = self.cfg.device
        try:
            return take_over(self.cfg.state_dir, device.worker_id, device.site, self.audit, self.clock.now())
        except Exception:
            log.exception("could not compare this desk's worker with the one recorded in %s", self.cfg.state_dir)
            return None

    def _leave_old_site(self) -> None:
        """A device moved to another site: what it queued at the old one names that site, and its
        certificate and topics are the new site's, whose collector refuses such a payload (it
        was sent under the new site's topic and lost there, the previous worker's findings with
        it, into the new site's store of refused messages). Dropped before anything is sent,
        counted in health (outbox.lost) and recorded in the audit trail."""
        assert self.handover is not None
        previous, site = self.handover.previous.site, self.cfg.device.site
        outbox = getattr(self.delivery, "outbox", None)
        if outbox is None:
            return
        try:
            gone = outbox.discard_all(f"moved from site {previous} to site {site}", "site_changed")
        except Exception:
            log.exception("could not take the messages queued at site %s out of the queue", previous)
            return
        if not gone:
            return
        log.warning(
            "moved from site %s to site %s: dropped %s queued at %s, which the new site's collector refuses "
            "(counted in health outbox.lost)",
            previous,
            site,
            ", ".join(f"{n} {kind}" for kind, n in sorted(gone.items())),
            previous,
            extra={"journal": {"DESKWATCH_EVENT": "outbox_lost", "OUTBOX_LOST_EVENTS": gone.get("event", 0)}},
        )
        self._audit_event("queue_dropped", self.clock.now(), {"from_site": previous, "to_site": site, **gone})

    def _report_unfinished(self, records: list[ScanRecord]) -> None:
        """The collector hears of the scans a daemon that died cut off, as the worker's trail
        records them: the camera opened, the outcome unknown (finished_at is started_at)."""
        for record in records:
            record.checks = [CheckOutcome("all", "skipped", record.error or "")]
            try:
                self.delivery.send_scan(self.payloads.scan_payload(self.source, record))
            except Exception:  # the trail has it; the next start does not send it again
                log.exception("could not queue the record of scan %s, cut off by the last run's end", record.scan_id)

    def take_reviews(self, raw: bytes) -> None:
        """The collector's retained word on this desk's recent findings, kept for 'deskwatch history'."""
        from deskwatch_contract.reviews import ReviewsRejected, parse

        try:
            reviews = parse(raw, self.cfg.device.site, self.cfg.device.id)
        except ReviewsRejected as exc:
            log.warning("ignored a reviews message from the broker (%d bytes): %s", len(raw), exc)
            return
        try:
            self.audit.save_collector_view(reviews)
        except Exception as exc:
            what = (
                f"could not save the collector's view of {len(reviews.findings)} recent findings in the audit trail "
                "(held, and saved once the disk takes it; 'deskwatch history' shows the one before until then)"
            )
            if not self.audit.unwritten(what, exc):
                raise
            return
        reviewed = sum(1 for f in reviews.findings if f.state != "open")
        log.info(
            "collector's view of %d recent findings received (%d reviewed, %d contested)",
            len(reviews.findings),
            reviewed,
            sum(1 for f in reviews.findings if f.contested),
        )

    # -- construction ------------------------------------------------------------------
    def _prepare_state_dir(self) -> None:
        os.makedirs(self.cfg.state_dir, mode=0o700, exist_ok=True)
        mode = os.stat(self.cfg.state_dir).st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "state_dir %s is mode %o; tightening to 0700 (it holds face templates)", self.cfg.state_dir, mode
            )
            os.chmod(self.cfg.state_dir, 0o700)

    def _build_control(self) -> Control:
        from deskwatch.system.control import ControlServer, control_socket_path, pause_status

        return ControlServer(
            control_socket_path(self.cfg.state_dir),
            lambda kind, body: self.handle_command(kind, body, source="local"),
            status=lambda: pause_status(self.policy, self.clock.now()),
        )

    def _build_jobs(self) -> JobAgent | None:
        """Remote jobs over MQTT, when the delivery speaks them (the real client does)."""
        on_job = getattr(self.delivery, "on_job", None)
        send = getattr(self.delivery, "send_job_progress", None)
        if on_job is None or send is None:
            return None
        from deskwatch.jobs.agent import JobAgent, active_models_dir
        from deskwatch.jobs.model_check import model_selftest
        from deskwatch.update.slots import read_state
        from deskwatch.vision.runtime import models_dir as installed_models_dir

        current = active_models_dir(Path(self.cfg.state_dir), installed_models_dir(self.cfg.vision))
        agent = JobAgent(
            site=self.cfg.device.site,
            device_id=self.cfg.device.id,
            version=__version__,
            state_dir=Path(self.cfg.state_dir),
            publish=send,
            models_dir=current,
            # against the models running now: after a swap, the job's directory (see _run_model)
            model_check=lambda new_dir, file: model_selftest(self.cfg.vision, agent.models_dir, new_dir, file),
            swap=self._swap_models,
            update_record=read_state,
        )
        on_job(agent.handle_notify)
        return agent

    def _swap_models(self, directory: Path) -> None:
        """Called by a model job (its thread): the scan loop swaps between scans."""
        self._pending_models = directory
        self.wake.set()

    def _apply_pending_models(self) -> None:
        directory, self._pending_models = self._pending_models, None
        if directory is None:
            return
        try:
            vision = build_vision(self.cfg, models_dir=directory)
        except Exception as exc:  # the selftest passed, so this is rare: keep scanning with the old models
            log.error("could not switch to the models in %s: %s; keeping the current ones", directory, exc)
            return
        old, self.vision = self.vision, vision
        self.scanner.vision = vision
        close = getattr(old, "close", None)
        if callable(close):
            close()
        set_models = getattr(self.delivery, "set_models", None)
        if callable(set_models):
            set_models(vision.model_hashes())  # the status names the models that run now
        log.info("switched to the models in %s: %s", directory, ", ".join(sorted(vision.model_hashes())))

    def _build_notifier(self) -> Notifier:
        from deskwatch.system.notify import Notifier as SdNotifier

        return SdNotifier()

    def _context(self, trigger: str, confirming: bool) -> Any:
        return self._context_type(now=self.clock.now(), trigger=trigger, confirming=confirming)

    # -- commands (MQTT and control socket threads) --------------------------------------
    def handle_command(self, kind: str, body: dict[str, Any], source: str = "mqtt") -> None:
        """Apply a validated command (from MQTT or the local control socket).

        Raises CommandRejected with a reason, which becomes an ``ok: false`` answer for
        the sender; the policy logs the pause/resume itself (one line per event).
        """
        from deskwatch_contract.intake import CommandRejected

        now = self.clock.now()

        def field(name: str) -> Any:
            # The control socket passes the request as sent: say what is missing, not the
            # bare name a KeyError would leave as the error.
            if name not in body:
                raise CommandRejected(f"missing field '{name}'")
            return body[name]

        if kind in ("pause", "resume"):
            self._admit_pause_change()
        try:
            if kind == "pause":
                # raw values: the policy validates them (1..max minutes, whole numbers)
                self.policy.pause(field("reason"), field("minutes"), now, source=source)
            elif kind == "resume":
                self.policy.resume(now, source=source)
            elif kind == "scan":
                self._admit_remote_scan(body, now, source)
                self.requests.put("command")
            elif kind == "activity":
                self.policy.record_activity(float(field("idle_seconds")), body.get("since") or now, now)
                return
            else:
                raise CommandRejected(f"unknown command '{kind}'")
        except (ValueError, KeyError, TypeError) as exc:
            raise CommandRejected(str(exc)) from None
        self.wake.set()

    def _admit_pause_change(self) -> None:
        """At most :data:`PAUSE_CHANGES_PER_MINUTE` pauses and resumes a minute (each one is
        audited); one more is refused with the wait, and neither applied nor audited."""
        from deskwatch_contract.intake import CommandRejected

        with self._remote_lock:
            minute_ago = self.clock.monotonic() - 60.0
            while self._pause_changes and self._pause_changes[0] < minute_ago:
                self._pause_changes.popleft()
            if len(self._pause_changes) >= PAUSE_CHANGES_PER_MINUTE:
                wait = max(1, round(self._pause_changes[0] - minute_ago))
                raise CommandRejected(
                    f"too many pauses and resumes: at most {PAUSE_CHANGES_PER_MINUTE} a minute; try again in {wait} s"
                )
            self._pause_changes.append(self.clock.monotonic())

    def _admit_remote_scan(self, body: dict[str, Any], now: datetime, source: str) -> None:
        """A scan on demand opens the camera in someone's home: only inside a shift, not
        while the worker is paused (it would be skipped: the sender is told, not answered
        ok) or the clock is not synchronised (see :meth:`_clock_unknown`), and at most
        ``schedule.remote_scans_per_hour``. Each refusal raises
        CommandRejected (answered on cmd/result) and, like each acceptance, goes to the
        audit trail; only an accepted scan counts against the hour's allowance."""
        from deskwatch_contract.intake import CommandRejected

        why = None
        limit = self.cfg.schedule.remote_scans_per_hour
        with self._remote_lock:
            hour_ago = self.clock.monotonic() - 3600.0
            while self._remote_scans and self._remote_scans[0] < hour_ago:
                self._remote_scans.popleft()
            if not self.policy.profile.random_scans:
                why = f"the {self.cfg.policy.profile} profile allows scheduled checks only"
            elif not self.planner.schedule.calendar.in_shift(now):
                why = (
                    "outside the worker's shift: the camera stays closed (only a technician at the device can scan now)"
                )
            elif self.policy.pre_scan(now) is not None:  # applies an expiry that is due
                pause = self.policy.paused
                why = "the worker is paused" + (f" (until {rfc3339(pause.ends_at)})" if pause is not None else "")
            elif (unknown := self._clock_unknown()) is not None:
                why = unknown
            elif len(self._remote_scans) >= limit:
                wait_min = (self._remote_scans[0] - hour_ago) / 60 if self._remote_scans else 60.0
                why = (
                    f"rate limit: {limit} on-demand scans per hour (schedule.remote_scans_per_hour); "
                    f"the next is allowed in {max(1, round(wait_min))} min"
                    if limit
                    else "on-demand scans are disabled on this device (schedule.remote_scans_per_hour: 0)"
                )
            else:
                self._remote_scans.append(self.clock.monotonic())
        detail = {"request_id": body.get("request_id"), "reason": body.get("reason") or "", "source": source}
        if why is None and not self._audit_event("remote_scan_accepted", now, detail):
            # the scan would not be taken (Scanner._begin): told now, not answered ok and then dropped
            with self._remote_lock:
                self._remote_scans.pop()
            why = "the device's audit trail cannot be written, so no scan can be recorded: the camera stays closed"
        if why:
            self._audit_event("remote_scan_refused", now, {**detail, "why": why})
            log.warning(
                "on-demand scan refused (request %s): %s",
                body.get("request_id"),
                why,
                extra={"journal": {"DESKWATCH_EVENT": "remote_scan_refused"}},
            )
            raise CommandRejected(why)

    def _audit_event(self, kind: str, at: datetime, detail: dict[str, Any]) -> bool:
        """Whether the event reached the audit trail (a failure is logged, not raised)."""
        try:
            self.audit.record_event(kind, at, detail)
        except Exception as exc:  # logged: a pause or a refusal holds whatever the audit disk does
            # a card that refuses writes is said as the trail says it (once in full, then a line
            # each), not as a bug: a traceback only for what is not the disk's doing
            if not self.audit.unwritten(f"could not write {kind} to the audit trail", exc):
                log.exception("could not write %s to the audit trail", kind)
            return False
        return True

    def request_stop(self, *_: Any) -> None:
        self.stop_event.set()
        self.wake.set()

    # -- the loop ----------------------------------------------------------------------
    def run(self, *, max_scans: int | None = None, install_signals: bool = True) -> int:
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.delivery.start()
        if self.control is not None:
            try:
                self.control.start()
            except OSError as exc:  # MQTT pause still works; the worker's local button does not
                log.error("local control socket unavailable (deskwatch pause/resume will not work): %s", exc)
                self.control = None
        self.watchdog.register("scan_loop")
        self.watchdog.watch("publisher", self.delivery.progress)
        if self.control is not None:  # a dead or wedged control socket means no pause button: restart
            self.watchdog.watch("control_socket", self.control.progress)
        self.watchdog_thread = self._watchdog_thread()
        self.watchdog_thread.start()
        self._purge_evidence()
        due = self.planner.plan()
        # READY once the models are loaded (constructor) and the broker was tried once,
        # connected or not: a broker that is down must not keep the unit "activating".
        if not self.delivery.wait_first_attempt(timeout=15.0):
            log.warning("first broker connection attempt still pending after 15 s; reporting ready anyway")
        reasons = self.reasons()
        self.notifier.ready(self.status_text(reasons))
        self._said_reasons = list(reasons)
        # who the device is, what it runs, when it scans, and whether it is ready: a degraded
        # start is a WARNING with its reasons (`journalctl -p warning` shows it), a ready one INFO
        (log.warning if reasons else log.info)(
            "deskwatch %s started: device %s/%s, profile %s, schedule %s, next scan %s; broker %s; %s",
            __version__,
            self.cfg.device.site,
            self.cfg.device.id,
            self.cfg.policy.profile,
            self.cfg.schedule.mode,
            self._when(due) if due else "none (no shift ahead)",
            # the delivery's own line before this one says why it is not connected
            "connected" if self.delivery.state() == "online" else "not connected",
            "DEGRADED: " + "; ".join(reasons) if reasons else "ready",
            extra={"journal": {"DESKWATCH_EVENT": "started", "DEVICE_ID": self.cfg.device.id}},
        )
        next_health = self.clock.monotonic() + min(10.0, self.cfg.service.health_interval_seconds)
        try:
            while not self.stop_event.is_set():
                wait = min(
                    self.planner.seconds_until_due(), self.TICK_SECONDS, max(0.0, next_health - self.clock.monotonic())
                )
                if self.requests.empty():
                    self.clock.wait(self.wake, wait)
                self.wake.clear()
                if self.stop_event.is_set():
                    break
                self._heartbeat()
                self._check_pause()
                self._apply_pending_models()
                if self.jobs is not None:
                    self._tick_jobs()
                while not self.requests.empty() and not self.stop_event.is_set():
                    trigger = self.requests.get_nowait()
                    closed = self._camera_closed(self.clock.now()) if trigger == "command" else None
                    if closed is not None:
                        # accepted, then the shift ended or the worker paused: the camera stays closed
                        self._audit_event("remote_scan_refused", self.clock.now(), {"why": f"{closed} before it ran"})
                        log.warning(
                            "on-demand scan dropped: %s before it could run",
                            closed,
                            extra={"journal": {"DESKWATCH_EVENT": "remote_scan_refused"}},
                        )
                        continue
                    self._scan(trigger)
                if self.planner.seconds_until_due() <= 0 and not self.stop_event.is_set():
                    if self.planner.take_due():
                        self._scan("schedule")
                    nxt = self.planner.due_wall
                    log.debug("next scan %s", nxt.isoformat() if nxt else "none")
                if self.clock.monotonic() >= next_health:
                    self._send_health_or_say_why()
                    next_health = self.clock.monotonic() + self.cfg.service.health_interval_seconds
                if self.clock.monotonic() >= self._next_purge:
                    self._purge_evidence()
                self._write_held_records()
                if max_scans is not None and self.scanner.stats.scans >= max_scans:
                    break
        finally:
            self._shutdown()
        return 0

    def _write_held_records(self) -> None:
        """Scan records the disk refused go into the audit trail as soon as it takes them: until
        then the worker's history shows the scan as started, the camera on for it."""
        try:
            self.audit.write_held()
        except Exception:  # never the daemon's end: the next turn tries again
            log.exception("could not write the held scan records to the audit trail")

    def _tick_jobs(self) -> None:
        """The job agent's turn; whatever goes wrong in it costs that turn, never the daemon."""
        assert self.jobs is not None
        try:
            self.jobs.tick()
        except Exception:
            log.exception("job agent: reporting finished jobs failed; tried again at the next turn")

    def _scan(self, trigger: str) -> None:
        """One scan; whatever goes wrong inside it costs that scan, never the daemon."""
        try:
            self.scanner.scan(trigger)
        except _disk_errors() as exc:  # the outbox's card refused the scan: its trouble, not a traceback
            self.scanner.stats.errors += 1
            log.error(
                "scan (%s) not queued for delivery: %s; the outbox counts what it lost (health outbox.lost), the "
                "worker's audit trail has the scan, and the daemon carries on",
                trigger,
                _disk_trouble(Path(self.cfg.state_dir), exc),
                extra={"journal": {"DESKWATCH_EVENT": "scan_failed"}},
            )
        except Exception:
            self.scanner.stats.errors += 1
            log.exception(
                "scan (%s) failed; the daemon carries on",
                trigger,
                extra={"journal": {"DESKWATCH_EVENT": "scan_failed"}},
            )
        self._heartbeat()

    def _camera_closed(self, now: datetime) -> str | None:
        """Why the camera must stay closed at ``now``, or None: the scanner asks before each
        burst, so a scan that began inside the shift takes no confirming burst after it
        (the planner and the command queue only check when a scan starts)."""
        paused = self.policy.pre_scan(now)
        if paused is not None:
            return paused
        if not self.planner.schedule.calendar.in_shift(now):
            return "the shift ended"
        return self._clock_unknown()

    def _clock_unknown(self) -> str | None:
        """Why the wall clock cannot be trusted to say whether the shift is on, or None. A Pi
        has no clock of its own: booted without network it shows the time it was switched
        off (timesyncd's saved time), which may fall inside a shift hours after it ended."""
        if self.cfg.schedule.require_synced_clock and self.clock.synchronised() is False:
            return "the clock is not synchronised (until NTP has set it, the shift cannot be told)"
        return None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.request_stop()

    def _heartbeat(self) -> None:
        self.watchdog.beat("scan_loop")
        reasons = self.reasons()
        self.delivery.set_degraded(reasons or None)
        self.notifier.status(self.status_text(reasons))
        self._say_reasons(reasons)

    def _say_reasons(self, reasons: list[str]) -> None:
        """What keeps the desk from being covered, said in the journal when it changes (the
        status and `systemctl status` had it, the journal never did: a worker not enrolled, a
        clock not synchronised): a reason that appears is a WARNING, one that goes is INFO."""
        before = self._said_reasons
        if reasons == before:
            return
        self._said_reasons = list(reasons)
        for reason in reasons:
            if reason not in before:
                log.warning("degraded: %s", reason, extra={"journal": {"DESKWATCH_EVENT": "degraded"}})
        gone = [r for r in before if r not in reasons]
        if gone:
            log.info(
                "%s: %s",
                "no longer degraded" if not reasons else "resolved",
                "; ".join(gone),
                extra={"journal": {"DESKWATCH_EVENT": "degraded" if reasons else "ready"}},
            )

    def reasons(self) -> list[str]:
        """What keeps this desk from being covered properly (status ``reasons``)."""
        out = []
        if self.scanner.unrecordable is not None:
            out.append(f"audit trail: cannot be written ({self.scanner.unrecordable}), no scans until it can")
        if self.scanner.camera_health.state != "ok":
            out.append(f"camera: {self.scanner.camera_health.last_error}")
        if self.clock.synchronised() is False:
            out.append(
                "clock: not synchronised, no scans until it is (schedule.require_synced_clock)"
                if self.cfg.schedule.require_synced_clock
                else "clock: not synchronised (event times may be wrong)"
            )
        target = identity_target(self.cfg)
        if target is not None and not target.enrolled:
            out.append(f"identity: worker {target.worker_id} not enrolled (deskwatch enroll)")
        elif target is not None and (problem := getattr(self.vision, "identity_problem", None)):
            out.append(f"identity: off, {problem}")  # enrolled, but the templates cannot be used
        return out

    def _when(self, due: datetime) -> str:
        """A scan time in the schedule's time zone, with the day unless today's (after Friday's
        shift the next is Monday's): for the journal and the status."""
        tz = self.planner.schedule.calendar.tz
        local, today = due.astimezone(tz), self.clock.now().astimezone(tz).date()
        return local.strftime("%H:%M:%S %Z" if local.date() == today else "%a %Y-%m-%d %H:%M:%S %Z")

    def status_text(self, reasons: list[str] | None = None) -> str:
        """systemd's STATUS= in words: next scan, outbox, broker, and what is wrong (the
        status message's ``reasons``; asked for here when not given)."""
        from deskwatch.system.notify import status_line

        due = self.planner.due_wall
        reasons = self.reasons() if reasons is None else reasons
        pause = self.policy.paused
        next_scan = self._when(due) if due is not None else None
        text = status_line(
            next_scan=next_scan,
            outbox_depth=self.delivery.outbox_depth(),
            broker=self.delivery.state(),
            degraded="; ".join(reasons) or None,
        )
        if pause is None:
            return text
        # not the reason: `systemctl status deskwatch` shows this line to every user of the
        # device, and the worker's words are for their trail and the employer's record
        return f"paused until {self._when(pause.ends_at)} · {text}"

    def _check_pause(self) -> None:
        finding = self.policy.check_overrun(self.clock.now())
        if finding is None:
            return
        now = self.clock.now()
        record = ScanRecord(scan_id=new_id(now), trigger="pause", started_at=now, finished_at=now)
        record.findings = [finding]
        record.checks = [CheckOutcome("pause_overrun", "violation", finding.detail)]
        try:
            self.scanner.publish(record, [], [])  # no frames: a pause overrun has no picture
        except _disk_errors() as exc:  # like a failed scan: it costs this report, not the daemon
            log.error(
                "pause_overrun not queued for delivery: %s; the outbox counts it lost (health outbox.lost)",
                _disk_trouble(Path(self.cfg.state_dir), exc),
                extra={"journal": {"DESKWATCH_EVENT": "scan_failed"}},
            )
        except Exception:
            log.exception("pause_overrun not queued for delivery; the daemon carries on")

    def _send_health_or_say_why(self) -> None:
        """Health is queued like everything else: a disk that cannot take it (full, or turned
        read-only under a failing SD card) costs this health message, never the daemon (the
        next one tries again); what is wrong is said once, and again when it works."""
        try:
            self._send_health()
        except _disk_errors() as exc:
            if self._health_trouble is None:
                log.error(
                    "health not queued: %s; the next one is tried in %d s",
                    _disk_trouble(Path(self.cfg.state_dir), exc),
                    self.cfg.service.health_interval_seconds,
                    extra={"journal": {"DESKWATCH_EVENT": "health_not_queued"}},
                )
            self._health_trouble = str(exc)
            return
        except Exception:  # a bug: it costs this health message, not the daemon
            log.exception("health not queued; the next one is tried in %d s", self.cfg.service.health_interval_seconds)
            return
        if self._health_trouble is not None:
            log.info("health is queued again (it was not: %s)", self._health_trouble)
            self._health_trouble = None

    def _send_health(self) -> None:
        s = self.scanner.stats
        cam = self.scanner.camera_health
        stats: dict[str, Any] = {
            "uptime_s": self.clock.monotonic() - self.started_mono,
            "scans": s.scans,
            "scans_failed": s.errors,
            "last_scan_at": s.last_scan_at,
            "inference_ms": {"p50": s.percentile(0.5), "p95": s.percentile(0.95)},
            "camera": cam.state if cam.state == "ok" else f"failed: {cam.last_error}",
            "cpu_temp_c": health.cpu_temperature_c(),
            "disk_free_bytes": health.disk_free_bytes(self.cfg.state_dir),
            "clock_synced": health.clock_synchronised(),
            "paused": self.policy.paused is not None,
            "pause": self.policy.paused.to_json() if self.policy.paused is not None else None,
            "identity": identity_state(self.cfg),
        }
        stats.update(self.delivery.stats())
        self.delivery.send_health(self.payloads.health_payload(self.source, stats))

    def _purge_evidence(self) -> None:
        """Retention: at start and daily (hourly after a full disk refused it), undelivered evidence
        and audit rows past retention_days go."""
        from deskwatch.evidence.retention import purge_expired

        self._next_purge = self.clock.monotonic() + 24 * 3600
        try:
            purge_expired(
                self.cfg.evidence.retention_days, self.clock.now(), outbox=self.delivery.outbox, audit=self.audit
            )
        except _disk_errors() as exc:  # a full card: what is past retention goes as soon as it can
            self._next_purge = self.clock.monotonic() + PURGE_RETRY_SECONDS
            log.error(
                "retention purge failed: %s; tried again in %d min",
                _disk_trouble(Path(self.cfg.state_dir), exc),
                PURGE_RETRY_SECONDS // 60,
                extra={"journal": {"DESKWATCH_EVENT": "purge_failed"}},
            )
        except Exception:  # retry tomorrow; scanning goes on
            log.exception("retention purge failed")

    def _shutdown(self) -> None:
        self.stop_event.set()
        self.notifier.stopping()
        self.watchdog_thread.stop()
        if self.control is not None:
            self.control.stop()
        self.delivery.stop(timeout=5.0)
        close = getattr(self.vision, "close", None)
        if callable(close):
            close()
        self.audit.close()
        queued = self.delivery.outbox_depth()
        # what is left for the next start: the operator restarting a device during an outage
        # (or before an update) learns whether anything waits on the card
        log.info(
            "deskwatch stopped after %d scans: device %s/%s; %s",
            self.scanner.stats.scans,
            self.cfg.device.site,
            self.cfg.device.id,
            f"{queued} messages still queued on the device, sent after the next start"
            if queued
            else "nothing left to send",
            extra={"journal": {"DESKWATCH_EVENT": "stopped", "OUTBOX_DEPTH": queued}},
        )


def _disk_errors() -> tuple[type[BaseException], ...]:
    """What a full or failing disk raises from the outbox and the audit trail, for an
    ``except`` clause (evaluated only when something was raised: see :func:`_disk_trouble`)."""
    import sqlite3

    return (sqlite3.Error, OSError)


def _disk_trouble(state_dir: Path, exc: BaseException) -> str:
    """What is wrong with the state directory's disk (:func:`deskwatch_contract.sqlite.disk_trouble`),
    imported when a write failed: this module is also what the technician's tools (``bench``,
    ``scan``, ``selftest``) build the vision stage from, and importing the SQLite module with it
    loads libsqlite3 into processes that have no database (~1.2 MB more in ``deskwatch
    bench``'s memory peak; the daemon loads it anyway, for its outbox and audit trail)."""
    from deskwatch_contract.sqlite import disk_trouble

    return disk_trouble(state_dir, exc)
