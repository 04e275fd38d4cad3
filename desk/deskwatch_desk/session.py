"""The window's model, free of Tk: the broker link, the pause state, the transparency list.

Everything that arrives from the broker (paho's thread) or from a request being
sent (a worker thread) is put on :attr:`DeskSession.inbox` as a :class:`Note`; the
window drains it on Tk's thread. So nothing here touches a widget.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deskwatch_desk.findings import FindingsList
from deskwatch_desk.link import DeskLink
from deskwatch_desk.messages import Finding, Scan, parse_or_log
from deskwatch_desk.requests import (
    Outcome,
    RequestQueue,
    ResultWaiter,
    build_request,
    describe,
    flush_queue,
    send_request,
)

if TYPE_CHECKING:
    from deskwatch_desk.config import DeskConfig

logger = logging.getLogger(__name__)

# Exactly what the fleet's broker rules let a companion read (deskwatch_contract.access):
# evidence images are for the collector only (sealed to it under contract 1.1; the worker
# sees their own under "Your findings", from the collector), and status is not the
# companion's. A subscription the ACL denies stays silent, and the window would then say
# something false about what never arrives.
SUBSCRIPTIONS = ("cmd/result", "scan", "event")
RECENT = 50


@dataclass(frozen=True)
class Note:
    kind: str  # "outcome", "scan", "finding", and the findings list's (see findings.py)
    value: Any


@dataclass
class PauseState:
    """The pause as the appliance accepted it, timed on the companion's monotonic clock."""

    reason: str
    minutes: int
    started_mono: float
    ended: str | None = None  # why it ended: "expired" or "resumed"

    def remaining(self, mono: float) -> float:
        return max(0.0, self.started_mono + self.minutes * 60.0 - mono)


def format_remaining(seconds: float) -> str:
    s = max(0, int(seconds + 0.999))
    return f"{s // 60}:{s % 60:02d}"


def local_time(rfc3339_text: str) -> str:
    try:
        return datetime.fromisoformat(rfc3339_text.replace("Z", "+00:00")).astimezone().strftime("%a %d %b %H:%M:%S")
    except ValueError:
        return rfc3339_text[:19]


def describe_scan(scan: Scan) -> tuple[str, str, str]:
    """(time, what, detail) for the transparency list."""
    ran = [rule for rule, outcome in scan.checks if outcome not in ("skipped",)]
    findings = ", ".join(scan.findings) if scan.findings else "no findings"
    return local_time(scan.started_at), f"scan ({scan.trigger})", f"{scan.outcome}: {findings}; {len(ran)} checks ran"


def describe_finding(finding: Finding) -> tuple[str, str, str]:
    if finding.evidence:
        ev = finding.evidence
        image = f"image {ev.get('width', '?')}x{ev.get('height', '?')} sent to your supervisor"
    else:
        image = f"no image ({finding.evidence_reason or 'none'})"
    detail = f"{finding.detail} [{image}]" if finding.detail else image
    return local_time(finding.detected_at), f"FINDING {finding.type} ({finding.confidence:.2f})", detail


def queued_note(kind: str, outcome: Outcome) -> str:
    """For a queued pause sent with fewer minutes than asked: what was asked, and when."""
    q = outcome.queued
    if kind != "pause" or q is None or q.payload.get("minutes") == outcome.payload["minutes"]:
        return ""
    asked = q.payload.get("minutes")
    asked_at = q.queued_at.astimezone().strftime("%H:%M")
    return f" (what was left of the {asked} min you asked for at {asked_at}, while the broker was away)"


class DeskSession:
    def __init__(
        self,
        cfg: DeskConfig,
        state_dir: Path,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        request_timeout: float = 10.0,
    ) -> None:
        self.cfg = cfg
        self.monotonic = monotonic
        self.request_timeout = request_timeout
        self.inbox: queue.Queue[Note] = queue.Queue()
        self.waiter = ResultWaiter()
        self.queue = RequestQueue(state_dir)
        self.link = DeskLink(cfg, subscriptions=SUBSCRIPTIONS, on_message=self._on_message)
        self.findings = FindingsList(cfg.collector, self.inbox)
        self.recent: deque[tuple[str, str, str]] = deque(maxlen=RECENT)
        self.pause: PauseState | None = None
        self.appliance_state = "unknown"
        self._busy = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        self.link.start()
        threading.Thread(target=self._flush_when_connected, name="desk-queue", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.link.close()

    # -- requests (run off the Tk thread) -------------------------------------------------
    def request(self, kind: str, *, reason: str | None = None, minutes: int | None = None) -> str | None:
        """Start sending a pause/resume; returns a problem with the input (shown at once), or None."""
        try:
            payload = build_request(kind, reason=reason, minutes=minutes)
        except ValueError as exc:
            return str(exc)
        threading.Thread(target=self._send, args=(kind, payload), name=f"desk-{kind}", daemon=True).start()
        return None

    def _send(self, kind: str, payload: dict[str, Any]) -> None:
        with self._busy:
            outcome = send_request(
                kind, payload, self.link, self.waiter, self.queue, datetime.now(UTC), timeout=self.request_timeout
            )
        self.inbox.put(Note("outcome", (kind, outcome, self.monotonic())))

    def _flush_when_connected(self) -> None:
        """Send what is queued whenever connected. Runs as long as the window: a request queued
        later (by ``deskwatch-desk pause`` during a broker blip) must still be sent, so nothing
        unexpected may end this thread."""
        while not self._stop.is_set():
            if self.link.connected.is_set() and self.queue.path.exists():
                try:
                    with self._busy:
                        done = flush_queue(
                            self.queue, self.link, self.waiter, datetime.now(UTC), timeout=self.request_timeout
                        )
                except Exception:
                    logger.exception("sending the queued requests failed")
                    done = []
                for item, outcome in done:
                    self.inbox.put(Note("outcome", (item.kind, outcome, self.monotonic())))
            self._stop.wait(1.0)

    # -- what the window calls on its own thread ------------------------------------------
    def apply_outcome(self, kind: str, outcome: Outcome, at_mono: float) -> str:
        """Update the pause state from an outcome; returns the line to show the worker.

        The payload is what was sent, so a queued pause counts down the minutes the
        appliance accepted (what was left of them), not the minutes asked for back then.
        """
        p = outcome.payload
        what = describe(kind, p)
        if outcome.state == "dropped":
            return f"Your queued {what} was not sent: {outcome.problem}."
        if outcome.state == "accepted":
            if kind == "pause":
                self.pause = PauseState(p["reason"], int(p["minutes"]), at_mono)
            elif self.pause is not None and self.pause.ended is None:
                self.pause.ended = "resumed"
            return f"The appliance accepted your {what}{queued_note(kind, outcome)}."
        if outcome.state == "refused":
            assert outcome.result is not None
            return f"The appliance refused your {what}: {outcome.result.error}"
        if outcome.state == "queued":
            return (
                f"The broker cannot be reached ({self.link.problem or self.link.where}). "
                f"Your {what} is queued and will be sent when it is back."
            )
        if outcome.state == "failed":
            return (
                f"The broker cannot be reached ({self.link.problem or self.link.where}). "
                f"Your {what} was {outcome.problem}. Please ask again when the broker is back."
            )
        return f"No answer from the appliance to your {what} within {self.request_timeout:g} s; it may be offline."

    def pause_text(self, mono: float) -> str:
        p = self.pause
        if p is None:
            return "Not paused."
        if p.ended is None and p.remaining(mono) <= 0:
            p.ended = "expired"
        if p.ended == "expired":
            return f'Pause ended: "{p.reason}" ({p.minutes} min) is over; checks are back on.'
        if p.ended == "resumed":
            return "Pause ended: you resumed; checks are back on."
        return f'Paused: "{p.reason}", {format_remaining(p.remaining(mono))} left.'

    # -- broker messages (paho's thread) ----------------------------------------------------
    def _on_message(self, suffix: str, raw: bytes) -> None:
        if suffix == "cmd/result":
            self.waiter.feed(raw)
        elif suffix == "scan":
            scan = parse_or_log("scan", raw)
            if scan is not None:
                self.inbox.put(Note("scan", scan))
        elif suffix == "event":
            finding = parse_or_log("event", raw)
            worker = self.cfg.device.worker_id
            if finding is not None and worker is not None and finding.worker_id != worker:
                # queued by the appliance before the desk was handed over: the previous worker's
                logger.info("a finding about worker %s, not %s, not shown", finding.worker_id, worker)
            elif finding is not None:
                self.inbox.put(Note("finding", finding))
