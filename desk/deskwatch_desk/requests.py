"""Pause and resume requests: send, wait for the appliance's answer, or queue on disk.

A request goes out on ``cmd/pause`` / ``cmd/resume`` with a fresh ``request_id``;
the answer is the ``cmd/result`` carrying that id (results for other ids, and
malformed results, are ignored, the latter with a log line).

While the broker is away a request is kept in a small JSON queue in the user's
state dir (``queue.json``, mode 0600) and sent by whichever companion process
connects next (``run``, ``window``, or the next ``pause``/``resume``). The latest
intent wins: a new request replaces whatever was queued. A queued pause is dropped
once its declared minutes have passed (pausing afterwards would be pointless) and
is sent with the minutes that remain, never more than were asked for; a queued
resume is dropped after an hour. An entry stamped later than now (the clock was set
back since) is dropped too, and every drop is logged and shown with its reason.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deskwatch_contract import exitcodes
from deskwatch_contract.formats import rfc3339
from deskwatch_desk.messages import TOPIC, Result, parse_or_log, pause_request, resume_request

logger = logging.getLogger(__name__)

RESUME_QUEUE_HOURS = 1.0
# A queued request stamped up to this far in the future is sent (a small clock correction);
# beyond it the clock was set back and the entry is dropped (see Queued.why_not_sent).
CLOCK_TOLERANCE = timedelta(minutes=1)


class ResultWaiter:
    """Collects ``cmd/result`` messages and hands each one to whoever waits for its request id."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._results: dict[str, Result] = {}
        self.ignored = 0

    def feed(self, raw: bytes) -> Result | None:
        result = parse_or_log("cmd/result", raw)
        if result is None:
            self.ignored += 1
            return None
        if result.request_id:
            with self._cond:
                self._results[result.request_id] = result
                if len(self._results) > 256:
                    self._results.pop(next(iter(self._results)))
                self._cond.notify_all()
        return result

    def wait(self, request_id: str, timeout: float) -> Result | None:
        with self._cond:
            self._cond.wait_for(lambda: request_id in self._results, timeout)
            return self._results.pop(request_id, None)


@dataclass(frozen=True)
class Queued:
    kind: str  # "pause" or "resume"
    payload: dict[str, Any]
    queued_at: datetime

    def expires_at(self) -> datetime:
        if self.kind == "pause":
            return self.queued_at + timedelta(minutes=int(self.payload["minutes"]))
        return self.queued_at + timedelta(hours=RESUME_QUEUE_HOURS)

    def why_not_sent(self, now: datetime) -> str | None:
        """Why this request must not go out at ``now``, in words for the worker; None if it may.

        ``queued_at`` is wall-clock time. If it lies ahead of ``now`` by more than
        :data:`CLOCK_TOLERANCE`, the clock was set back since (NTP correcting a clock that ran
        ahead): how long ago the worker asked cannot be told, so neither can the minutes that
        are left, and a guess would be a pause the worker did not ask for.
        """
        if self.queued_at > now + CLOCK_TOLERANCE:
            at, then = (t.astimezone().strftime("%Y-%m-%d %H:%M") for t in (self.queued_at, now))
            return (
                f"it was queued at {at} by this computer's clock, later than the clock says it is now ({then}); "
                "the clock was set back since, so how much of it is left cannot be told. Ask again if you still "
                "need it"
            )
        if now >= self.expires_at():
            if self.kind == "pause":
                return f"its {int(self.payload['minutes'])} min ran out while the broker was away"
            return f"it waited more than {RESUME_QUEUE_HOURS:g} h for the broker"
        return None

    def payload_at(self, now: datetime) -> dict[str, Any] | None:
        """What to send now (a pause with the minutes that remain, never more than were asked
        for), or None when it must not be sent (:meth:`why_not_sent`); ValueError, KeyError or
        TypeError when the entry is unusable."""
        if self.why_not_sent(now) is not None:
            return None
        if self.kind == "pause":
            asked = int(self.payload["minutes"])
            left = math.ceil((self.expires_at() - now).total_seconds() / 60.0)
            return pause_request(self.payload["reason"], max(1, min(asked, left)), self.payload["request_id"])
        return dict(self.payload)


class RequestQueue:
    """``queue.json`` in the companion's state dir: at most one request, the latest intent."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "queue.json"

    def put(self, kind: str, payload: dict[str, Any], now: datetime) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = {"kind": kind, "payload": payload, "queued_at": rfc3339(now)}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".queue-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump([entry], fh)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def take(self) -> list[Queued]:
        """Everything queued (removing it); an unreadable file is logged and dropped."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        self.path.unlink(missing_ok=True)
        try:
            out = []
            for entry in json.loads(raw):
                when = datetime.fromisoformat(entry["queued_at"].replace("Z", "+00:00")).astimezone(UTC)
                if entry["kind"] not in ("pause", "resume") or not isinstance(entry["payload"], dict):
                    raise ValueError(f"unknown kind {entry['kind']!r}")
                out.append(Queued(entry["kind"], entry["payload"], when))
            return out
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("dropped an unreadable request queue %s: %s", self.path, exc)
            return []

    def clear(self) -> None:
        """Forget what is queued (a newer request reached the broker). A state dir that cannot
        be used must not stop that request, so a failure here is only logged."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not remove the request queue %s: %s", self.path, exc)

    def put_or_say(self, kind: str, payload: dict[str, Any], now: datetime, *, again: bool = False) -> str | None:
        """:meth:`put`; on a failure (full disk, state dir not writable) the request is lost,
        so say so: returns the problem in words for the worker, else None."""
        try:
            self.put(kind, payload, now)
        except OSError as exc:
            logger.error("could not queue the %s request in %s: %s", kind, self.path, exc)
            queued = "queued again" if again else "queued"
            return f"not sent, and could not be {queued}: cannot write {self.path} ({exc.strerror or exc})"
        return None


def build_request(kind: str, *, reason: str | None = None, minutes: int | None = None) -> dict[str, Any]:
    if kind == "pause":
        return pause_request(reason or "", minutes if minutes is not None else 0)
    return resume_request()


@dataclass(frozen=True)
class Outcome:
    """What became of a request. ``payload`` is what was sent (for a queued pause: with the
    minutes that were left, which is what the appliance accepted), ``queued`` the queue entry
    it was sent from, if any."""

    # "accepted", "refused", "queued", "no_answer"; "dropped" (a queued request not sent),
    # "failed" (neither sent nor queued: lost)
    state: str
    payload: dict[str, Any]
    result: Result | None = None
    queued: Queued | None = None
    problem: str | None = None  # why it was not sent ("dropped", "failed")

    @property
    def exit_code(self) -> int:
        return {"accepted": exitcodes.OK, "refused": exitcodes.FAIL}.get(self.state, exitcodes.UNAVAILABLE)


def describe(kind: str, payload: dict[str, Any]) -> str:
    """The request in the worker's words: 'pause "fetch water" for 5 min' or 'resume'."""
    if kind == "pause":
        return f'pause "{payload.get("reason", "?")}" for {payload.get("minutes", "?")} min'
    return "resume"


def flush_queue(
    queue: RequestQueue, link: Any, waiter: ResultWaiter | None, now: datetime, *, timeout: float = 10.0
) -> list[tuple[Queued, Outcome]]:
    """Send what is queued over a connected ``link``; returns each request with its outcome.

    The outcome carries the payload actually sent (a pause with the minutes that remain), so
    whoever shows it shows what the appliance accepted, not what was asked for earlier. A
    request that must not or cannot be sent (expired, queued before the clock was set back,
    unusable) is logged and comes back as "dropped" with the reason, and the others are still
    sent: one bad entry never loses the rest. When one cannot be published, the latest of
    those not sent goes back into the queue (the latest intent wins) and the rest wait.
    """
    done: list[tuple[Queued, Outcome]] = []
    items = queue.take()
    for item in items:
        try:
            problem = item.why_not_sent(now)
            payload = item.payload_at(now) if problem is None else None
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"it cannot be used ({exc})"
            payload = None
        if payload is None:
            logger.warning(
                "dropped a queued %s request from %s: %s",
                item.kind,
                rfc3339(item.queued_at),
                problem,
            )
            done.append((item, Outcome("dropped", item.payload, problem=problem, queued=item)))
            continue
        if not link.publish(TOPIC[item.kind], payload, wait=timeout):
            latest = items[-1]
            problem = queue.put_or_say(latest.kind, latest.payload, latest.queued_at, again=True)
            if problem is not None:
                done.append((latest, Outcome("failed", latest.payload, problem=problem, queued=latest)))
            break
        result = waiter.wait(payload["request_id"], timeout) if waiter is not None else None
        logger.info(
            "sent the queued %s request (queued %s): %s",
            item.kind,
            rfc3339(item.queued_at),
            "no answer yet" if result is None else ("accepted" if result.ok else f"refused: {result.error}"),
        )
        state = "no_answer" if result is None else ("accepted" if result.ok else "refused")
        done.append((item, Outcome(state, payload, result, queued=item)))
    return done


def send_request(
    kind: str,
    payload: dict[str, Any],
    link: Any,
    waiter: ResultWaiter,
    queue: RequestQueue,
    now: datetime,
    *,
    timeout: float,
) -> Outcome:
    """Publish a pause/resume and wait for its result; queue it if the broker cannot be reached.

    The link must already be started (and subscribed to ``cmd/result``); a request that
    reaches the broker replaces anything still queued (the latest intent wins). If it can
    be neither sent nor queued, the outcome is "failed" with the reason: never an exception
    that would leave the worker waiting for an answer that cannot come.
    """
    if not link.wait_ready(timeout):
        return _queue(kind, payload, queue, now)
    queue.clear()
    if not link.publish(TOPIC[kind], payload, wait=timeout):
        return _queue(kind, payload, queue, now)
    result = waiter.wait(payload["request_id"], timeout)
    if result is None:
        return Outcome("no_answer", payload)
    return Outcome("accepted" if result.ok else "refused", payload, result)


def _queue(kind: str, payload: dict[str, Any], queue: RequestQueue, now: datetime) -> Outcome:
    problem = queue.put_or_say(kind, payload, now)
    return Outcome("queued" if problem is None else "failed", payload, problem=problem)
