"""The policy engine: turns a burst's ``FrameAnalysis`` list into findings.

The scan loop calls :meth:`Policy.pre_scan` before opening the camera (a reason to
skip, e.g. ``"paused"``), then :meth:`Policy.evaluate` with the analyses of the
burst. When ``away_from_desk`` needs confirmation the outcome carries
``confirm_after_seconds``: the loop takes a second burst that much later and calls
``evaluate`` again with ``ctx.confirming=True``; only then is it reported.

Light gates everything: a burst that is mostly too dark (or covered) yields
``low_light`` (or ``camera_obstructed``) and every other rule is ``skipped``.

State kept here (and nowhere else): the pause, the last activity report, and the
streak of scans that saw an unknown face at the desk.

A pause is timed on the monotonic clock, given by the daemon: its wall-clock times (what
is saved, audited and shown) move with the wall clock whenever that clock is stepped
against the monotonic one (timesyncd correcting a Pi's stale boot time, a manual change),
so a clock correction neither ends a pause early nor stretches it, and never counts
towards a ``pause_overrun``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from deskwatch.domain import CheckOutcome, Finding, FrameAnalysis, PeopleView, rfc3339
from deskwatch.policy import rules
from deskwatch.policy.config import PolicyConfig
from deskwatch.policy.pause import PauseInfo, check_pause_request, checked_restore
from deskwatch.policy.profiles import RULES, evidence_refusal, profile_of, rule_enabled


class AuditTrail(Protocol):
    """The part of the audit trail the policy writes to."""

    def record_event(self, kind: str, at: datetime, detail: dict[str, object]) -> None: ...

    def save_pause(self, pause: PauseInfo | None) -> None: ...

    def load_pause(self) -> PauseInfo | None: ...

    def unwritten(self, what: str, exc: BaseException) -> bool: ...


log = logging.getLogger(__name__)

# how far the wall clock may move against the monotonic clock before the pause's wall
# times follow it: well above the milliseconds between a caller's ``now`` and our own
# monotonic reading, well below anything a worker would notice
CLOCK_STEP_SECONDS = 2.0

__all__ = ["PauseInfo", "Policy", "PolicyContext", "PolicyOutcome"]


@dataclass
class PolicyContext:
    now: datetime
    trigger: str  # "schedule", "command", "confirmation", "cli"
    confirming: bool = False
    paused: PauseInfo | None = None
    idle_seconds: float | None = None
    idle_reported_at: datetime | None = None
    # frames of the burst not taken because it was settled before them (burst_settled):
    # persistence is counted over the whole burst all the same
    unseen_frames: int = 0


@dataclass
class PolicyOutcome:
    findings: list[Finding] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)
    persons: int = 0
    bystanders: int = 0
    confirm_after_seconds: float | None = None
    # frame index -> who is worker, extra or bystander in it (frames the light gate let
    # through); evidence blurs from this, never re-deciding who is who
    people: dict[int, PeopleView] = field(default_factory=dict)


class Policy:
    """Rules, profile and the worker's pause/activity state. Thread-safe: the scan loop
    evaluates while MQTT commands and the control socket pause and resume."""

    def __init__(
        self,
        policy: PolicyConfig,
        *,
        audit: AuditTrail | None = None,
        monotonic: Callable[[], float] | None = None,
    ):
        """``monotonic``: the clock a pause is timed by (the daemon's); None times it by
        the ``now`` the callers pass alone (tests and tools that never see a clock step)."""
        self.cfg = policy
        self.profile = profile_of(policy)
        self.audit = audit
        self._lock = threading.RLock()
        self._pause: PauseInfo | None = None
        self._expired: PauseInfo | None = None  # ended by expiry, overrun not yet decided
        self._monotonic = monotonic
        # (wall, monotonic) of one instant at which the pause's wall times were right
        self._anchor: tuple[datetime, float] | None = None
        self._idle: tuple[float, datetime] | None = None
        self._unknown_streak = 0
        if audit is not None:
            restored = audit.load_pause()
            if restored is not None:
                # its wall times are all a restart has: from the first call on, the rest
                # of it is timed on the monotonic clock (a boot clock that is behind and
                # corrected later lengthens it, never shortens it)
                restored = checked_restore(restored)
                self._pause = restored
                log.info(
                    "pause restored from the audit trail: %d min (%s), until %s",
                    restored.minutes,
                    restored.source,
                    rfc3339(restored.ends_at),
                )

    # -- pause -----------------------------------------------------------------------
    @property
    def paused(self) -> PauseInfo | None:
        with self._lock:
            return self._pause

    def pause(self, reason: str, minutes: int, now: datetime, *, source: str = "local") -> PauseInfo:
        """Start (or replace) a pause. Raises :class:`PauseError` on a bad request."""
        text, m = check_pause_request(reason, minutes, self.cfg.max_pause_minutes)
        info = PauseInfo(reason=text, minutes=m, started_at=now, source=source)
        with self._lock:
            self._pause = info
            self._expired = None
            self._anchor = None if self._monotonic is None else (now, self._monotonic())
            self._audit_event("pause", now, info.to_json())
            self._save_pause(info)
        # never the reason: it is the worker's words, for their audit trail and the employer's
        # record, not for everyone who reads the device's journal (test_journal_lines)
        log.info(
            "paused by the worker (%s) for %d min, until %s",
            source,
            m,
            rfc3339(info.ends_at),
            extra={"journal": {"PAUSE_MINUTES": m, "PAUSE_SOURCE": source}},
        )
        return info

    def resume(self, now: datetime, *, source: str = "local") -> PauseInfo | None:
        """End the pause; returns it, or None if none was active."""
        with self._lock:
            self._expire(now)
            info = self._pause
            if info is None:
                if self._expired is not None:  # came back after the declared end but in the grace
                    late = self._expired
                    self._expired = None
                    self._audit_event("resume", now, {**late.to_json(), "late": True, "resume_source": source})
                    return late
                return None
            self._pause = None
            self._audit_event(
                "resume",
                now,
                {
                    **info.to_json(),
                    "resume_source": source,
                    "paused_seconds": round((now - info.started_at).total_seconds()),
                },
            )
            self._save_pause(None)
        log.info("resumed (%s) after %.0f s", source, (now - info.started_at).total_seconds())
        return info

    def pre_scan(self, now: datetime) -> str | None:
        """A reason not to scan now (``"paused"``), or None."""
        with self._lock:
            self._expire(now)
            return "paused" if self._pause is not None else None

    def check_overrun(self, now: datetime) -> Finding | None:
        """Call regularly (each loop tick): a ``pause_overrun`` finding once, when a pause
        ended by expiry and the worker showed no sign of being back within the grace."""
        with self._lock:
            self._expire(now)
            exp = self._expired
            if exp is None:
                return None
            grace = timedelta(seconds=self.cfg.rules.pause_overrun.grace_seconds)
            if now < exp.ends_at + grace:
                return None
            self._expired = None
            if not rule_enabled(self.cfg, "pause_overrun"):
                return None
            over = (now - exp.ends_at).total_seconds()
            self._audit_event("pause_overrun", now, {**exp.to_json(), "over_seconds": round(over)})
            return Finding(
                type="pause_overrun",
                confidence=0.9,
                frame_index=-1,
                evidence_refusal="rule",
                detail=f'pause "{exp.reason}" declared {exp.minutes} min, ended {rfc3339(exp.ends_at)}; '
                f"no sign of the worker {over / 60:.0f} min later",
                journal_detail=f"pause declared {exp.minutes} min, ended {rfc3339(exp.ends_at)}; "
                f"no sign of the worker {over / 60:.0f} min later",
            )

    def _follow_clock(self, now: datetime) -> None:
        """Move the pause's wall times (the active or the expired one) by the step the
        wall clock made against the monotonic clock since they were last right: the
        comparisons with ``now`` then measure real time. Saved again, so a restart after
        the correction keeps the real end."""
        if self._monotonic is None:
            return
        if self._pause is None and self._expired is None:
            self._anchor = None
            return
        mono = self._monotonic()
        if self._anchor is None:
            self._anchor = (now, mono)
            return
        wall0, mono0 = self._anchor
        step = (now - wall0).total_seconds() - (mono - mono0)
        if abs(step) <= CLOCK_STEP_SECONDS:
            return
        self._anchor = (now, mono)
        shift = timedelta(seconds=step)
        if self._expired is not None:
            self._expired = replace(self._expired, started_at=self._expired.started_at + shift)
        info = self._pause
        if info is None:
            return
        self._pause = info = replace(info, started_at=info.started_at + shift)
        self._audit_event("pause_clock_moved", now, {**info.to_json(), "seconds": round(step)})
        self._save_pause(info)
        log.warning(
            "wall clock moved %+.0f s during the pause; it still ends after its %d min, at %s",
            step,
            info.minutes,
            rfc3339(info.ends_at),
        )

    def _expire(self, now: datetime) -> None:
        self._follow_clock(now)
        if self._pause is not None and now >= self._pause.ends_at:
            info = self._pause
            self._pause = None
            self._expired = info
            self._audit_event("pause_expired", now, info.to_json())
            self._save_pause(None)
            log.info("pause expired after its declared %d min", info.minutes)

    # -- activity --------------------------------------------------------------------
    def record_activity(self, idle_seconds: float, since: datetime, now: datetime) -> None:
        """An input-activity report from the desk companion: ``idle_seconds`` without
        keyboard/mouse input, idle ``since`` (the last input, on the companion's clock),
        arriving at ``now``. The device's own clock is trusted: the last input was at
        ``now - idle_seconds``; ``since`` is kept only for the log."""
        if idle_seconds < 0 or not math.isfinite(idle_seconds):
            raise ValueError("idle_seconds must be a finite number >= 0")
        with self._lock:
            self._follow_clock(now)  # the expired pause's start, in the clock 'now' is read on
            self._idle = (float(idle_seconds), now)
            last_input = now - timedelta(seconds=idle_seconds)
            if self._expired is not None and last_input >= self._expired.started_at:
                self._expired = None  # typed since the pause began: back at the desk
        skew = abs(((since + timedelta(seconds=idle_seconds)) - now).total_seconds())
        if skew > 120:
            log.debug("activity report: companion clock differs by %.0f s from ours", skew)

    # -- evaluation ------------------------------------------------------------------
    def closer_look_needed(self, analyses: list[FrameAnalysis], remaining: int) -> bool:
        """Should the next frame of the burst get the vision stage's phone stage? Only while
        phone_use or eating can still persist through the burst (``analyses``: the frames so
        far, ``remaining``: the frames still to come, the next one included)."""
        return rules.closer_look_can_count(analyses, remaining, self.cfg)

    def burst_settled(self, analyses: list[FrameAnalysis], remaining: int, *, identity: bool = True) -> bool:
        """Can the burst end before its ``remaining`` frames (``policy.end_settled_bursts``)?
        Only when they could change no check's outcome (:func:`rules.burst_settled`;
        ``identity``: whether the vision stage checks faces at all), and not while a pause has
        run over and the worker has not been seen back yet (the frames to come may be the
        ones that show them)."""
        if not self.cfg.end_settled_bursts:
            return False
        with self._lock:
            if self._expired is not None and not any(
                rules.present_frames([rules.people_view(a, self.cfg) for a in analyses])
            ):
                return False
        return rules.burst_settled(analyses, remaining, self.cfg, identity=identity)

    def evidence_frames(self, analyses: list[FrameAnalysis]) -> dict[int, PeopleView]:
        """The frames of the burst so far (``analyses``) that may still be a finding's
        evidence frame whatever frames follow, each with who is who in it (what the
        outcome's ``people`` will say of it, that evidence blurs by); the scan lets the
        other frames go as it goes."""
        return rules.evidence_frames(analyses, self.cfg)

    def evaluate(self, analyses: list[FrameAnalysis], ctx: PolicyContext) -> PolicyOutcome:
        with self._lock:
            self._expire(ctx.now)
            return self._evaluate(analyses, ctx)

    def _evaluate(self, analyses: list[FrameAnalysis], ctx: PolicyContext) -> PolicyOutcome:
        cfg = self.cfg
        out = PolicyOutcome()
        enabled = {r: rule_enabled(cfg, r) for r in RULES}
        results: dict[str, rules.RuleResult] = {}

        paused = ctx.paused or self._pause
        if paused is not None and ctx.now < paused.ends_at:
            for r in RULES:
                out.checks.append(CheckOutcome(r, "skipped", "paused by the worker"))
            return out
        if not analyses:
            for r in RULES:
                out.checks.append(CheckOutcome(r, "skipped", "no frames"))
            return out

        need = rules.frames_needed(len(analyses) + ctx.unseen_frames, cfg.persistence)
        gate = rules.light_gate(analyses, need)
        results["low_light"] = gate.low_light
        results["camera_obstructed"] = gate.obstructed
        usable = gate.usable
        if gate.blocked:
            reason = gate.reason
            for r in RULES:
                results.setdefault(r, rules.RuleResult("skipped", reason))
        else:
            views = [rules.people_view(a, cfg) for a in usable]
            out.people = {v.frame.frame_index: v for v in views}
            need_u = rules.frames_needed(len(usable) + ctx.unseen_frames, cfg.persistence)
            # the audit's counts describe the frames analysed, at their own persistence: with the
            # whole burst's need, a burst settled after 3 of 5 frames reported the lowest count
            # of the 3 (one frame with fewer people in view), where the whole burst reported more
            seen = rules.frames_needed(len(usable), cfg.persistence)
            out.persons = rules.persistent_count([v.persons for v in views], seen)
            out.bystanders = rules.persistent_count([len(v.bystanders) for v in views], seen)
            idle = self._idle_now(ctx)
            results.update(rules.run_people_rules(usable, views, need_u, cfg, ctx.confirming, idle, ctx.now))
            if enabled["unrecognized_person"]:
                results["unrecognized_person"] = self._unrecognized(results.get("unrecognized_person"))
            if self._expired is not None and any(v.worker is not None for v in views):
                self._expired = None  # the worker is back: no overrun
        if "pause_overrun" not in results:
            results["pause_overrun"] = rules.RuleResult(
                "pending" if self._expired is not None else "pass",
                "a pause ended; waiting for the worker" if self._expired is not None else "checked between scans",
            )

        for r in RULES:
            res = results.get(r) or rules.RuleResult("skipped", "not evaluated")
            if not enabled[r]:
                why = (
                    "off in the configuration"
                    if getattr(cfg.rules, r).enabled is False
                    else f"not part of the {self.profile.name} profile"
                )
                out.checks.append(CheckOutcome(r, "skipped", why))
                continue
            if r == "away_from_desk" and res.finding is not None and not ctx.confirming:
                out.checks.append(CheckOutcome(r, "pending", "nobody at the desk; confirming with a second burst"))
                out.confirm_after_seconds = cfg.rules.away_from_desk.confirm_after_seconds
                continue
            out.checks.append(CheckOutcome(r, res.outcome, res.reason))
            if res.finding is not None:
                res.finding.evidence_refusal = res.finding.evidence_refusal or evidence_refusal(cfg, r)
                out.findings.append(res.finding)
        return out

    def _idle_now(self, ctx: PolicyContext) -> rules.IdleReport | None:
        if ctx.idle_seconds is not None:
            return rules.IdleReport(ctx.idle_seconds, ctx.idle_reported_at or ctx.now)
        if self._idle is not None:
            return rules.IdleReport(self._idle[0], self._idle[1])
        return None

    def _unrecognized(self, res: rules.RuleResult | None) -> rules.RuleResult:
        """Turn this scan's identity verdict into the N-in-a-row rule."""
        n = self.cfg.rules.unrecognized_person.consecutive_checks
        if res is None or res.outcome == "skipped":
            return res or rules.RuleResult("skipped", "no identity result")
        if res.finding is None:
            self._unknown_streak = 0
            return res
        self._unknown_streak += 1
        if self._unknown_streak < n:
            return rules.RuleResult(
                "pending", f"unknown face at the desk ({self._unknown_streak} of {n} checks in a row)"
            )
        res.finding.detail = f"unknown face at the desk in {self._unknown_streak} checks in a row"
        return res

    def _save_pause(self, info: PauseInfo | None) -> None:
        """Keep the pause (or its end) for the next start. A disk that cannot take it (full, or
        turned read-only under a failing SD card) must not undo what the worker asked for, nor
        take the daemon down: the change holds while the daemon runs."""
        if self.audit is None:
            return
        try:
            self.audit.save_pause(info)
        except Exception as exc:
            what = (
                f"could not save the {f'pause until {rfc3339(info.ends_at)}' if info is not None else 'end of the pause'} in the "
                "audit trail (it holds while the daemon runs, but a restart would not see it)"
            )
            if not self.audit.unwritten(what, exc):
                log.exception(what)

    def _audit_event(self, kind: str, now: datetime, detail: dict[str, object]) -> None:
        if self.audit is not None:
            try:
                self.audit.record_event(kind, now, detail)
            except Exception as exc:  # the audit trail must never take the daemon down
                if not self.audit.unwritten(f"could not write {kind} to the audit trail", exc):
                    log.exception("could not write %s to the audit trail", kind)
