"""The window's "Your findings" list, free of Tk: the worker's findings from the collector
(history, review, picture, days until deletion), merged with findings that arrive live.

Work that waits on the network runs on worker threads; they never touch :attr:`rows`
(the window's thread owns it): their results come back as
:class:`~deskwatch_desk.session.Note` values on the session's inbox, and the window
hands them to :meth:`FindingsList.take` and :meth:`FindingsList.take_one`:

- ``("findings", (findings, retention_days))``: the collector's list;
- ``("findings_state", text)``: where the list comes from, or what is wrong;
- ``("picture", (event_id, jpeg or None, problem or None))``;
- ``("contest", (event_id, finding or None, problem or None))``.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from deskwatch_desk.collector_client import CollectorClient, CollectorError, Finding, SignInNeeded
from deskwatch_desk.config import DeskCollector
from deskwatch_desk.messages import Finding as LiveFinding

logger = logging.getLogger(__name__)

# Labels for the live findings (the collector's list sends its own label); a test holds this
# table to the contract's event types.
RULE_LABELS = {
    "away_from_desk": "Away from desk", "phone_use": "Phone use", "extra_person": "Extra person",
    "unrecognized_person": "Unrecognised person",
    "presentation_attack": "Face on a photo or screen", "eating": "Eating", "idle_input": "No keyboard/mouse input",
    "low_light": "Too dark to check", "camera_obstructed": "Camera obstructed", "pause_overrun": "Pause overran",
}  # fmt: skip
SHOW = 100


@dataclass(frozen=True)
class Row:
    """One finding as the list shows it (from the collector, or live and not yet confirmed)."""

    event_id: str
    detected_ts: float
    label: str
    confidence: float
    picture: str  # "sent, deleted in 12 days", "none", "sent"
    review: str  # "Not reviewed yet", "Upheld", "Dismissed: Object misread (e.g. ...)"
    contested: bool
    contest_note: str | None
    has_picture: bool
    live: bool = False  # seen on the broker, not (yet) confirmed by the collector
    why: str = ""  # the whole story for the details: why no picture, the dismiss reason in full

    def values(self) -> tuple[str, str, str, str, str]:
        when = datetime.fromtimestamp(self.detected_ts).astimezone().strftime("%a %d %b %H:%M")
        return (when, f"{self.label} ({self.confidence:.0%})", self.picture, self.review,
                "you contested" if self.contested else "")  # fmt: skip


def row_from_collector(f: Finding) -> Row:
    why = []
    if f.has_picture:
        if f.deleted_ts is not None:  # the time itself: "in 1 day" was two hours, "today" tomorrow morning
            days = datetime.fromtimestamp(f.deleted_ts).astimezone().strftime("%a %d %b %H:%M")
        elif f.days_left is not None:  # an older collector: whole days left
            days = "within a day" if f.days_left == 0 else f"in {f.days_left} days"
        else:
            days = "later"
        picture = f"sent, deleted {days}"
    else:
        picture = "none"
        why.append(f"No picture was sent: {f.no_picture_why or 'none'}.")
    if f.review_state == "acknowledged":
        review = "Upheld"
    elif f.review_state == "dismissed":
        # the collector's own words for the reason (it sends reason_label): no copy of its list here
        review = f"Dismissed: {f.reason_label}" if f.reason_label else "Dismissed"
        if f.reason_label:
            why.append(f"Dismissed because: {f.reason_label}.")
    else:
        review = "Not reviewed yet"
    return Row(f.event_id, f.detected_ts, f.label, f.confidence, picture, review, f.contested, f.contest_note,
               f.has_picture, why=" ".join(why))  # fmt: skip


def row_from_live(f: LiveFinding) -> Row:
    try:
        ts = datetime.fromisoformat(f.detected_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        ts = 0.0
    picture = "sent" if f.evidence else "none"
    why = "" if f.evidence else f"No picture was sent ({f.evidence_reason or 'none'})."
    return Row(f.event_id, ts, RULE_LABELS.get(f.type, f.type), f.confidence, picture, "Not reviewed yet", False, None,
               bool(f.evidence), live=True, why=why)  # fmt: skip


class FindingsList:
    def __init__(self, settings: DeskCollector, inbox: queue.Queue[Any], client: CollectorClient | None = None) -> None:
        self.inbox = inbox
        self.rows: dict[str, Row] = {}
        self.state = "none"  # none (no collector configured), signin, loading, ready, error
        self.client = client
        if client is None and settings.url and settings.username:
            client = self.client = CollectorClient(settings.url, settings.username, settings.ca_file)
        self.password_file = Path(settings.password_file) if settings.password_file else None
        self._busy = threading.Lock()

    def _note(self, kind: str, value: Any) -> None:
        from deskwatch_desk.session import Note

        self.inbox.put(Note(kind, value))

    def _say(self, state: str, text: str) -> None:
        self.state = state
        self._note("findings_state", text)

    def _background(self, name: str, work: Any, *args: Any) -> None:
        threading.Thread(target=work, args=args, name=f"desk-{name}", daemon=True).start()

    # -- what the window calls -----------------------------------------------------------
    def start(self) -> None:
        """Load the history at once (signing in with the password file), or ask for the password."""
        if self.client is None:
            self._say("none", "Only findings from now on: no collector is set up (collector.url in desk.yaml).")
        elif self.password_file is not None:
            self._background("signin", self._sign_in_and_load, None)
        else:
            self._say("signin", f"Sign in as {self.client.username} to see your findings and how they were reviewed.")

    def sign_in(self, password: str) -> None:
        if self.client is not None:
            self._say("loading", "Signing in ...")
            self._background("signin", self._sign_in_and_load, password)

    def refresh(self) -> None:
        if self.client is not None and self.client.signed_in:
            self._background("refresh", self._load)

    def add_live(self, finding: LiveFinding) -> bool:
        """A finding seen on the broker just now; the collector's copy replaces it when loaded."""
        if finding.event_id in self.rows:
            return False
        self.rows[finding.event_id] = row_from_live(finding)
        return True

    def take(self, found: list[Finding]) -> None:
        """The collector's list replaces ours; live findings it does not know yet stay."""
        fresh = {f.event_id: row_from_collector(f) for f in found}
        self.rows = {**fresh, **{k: v for k, v in self.rows.items() if v.live and k not in fresh}}

    def take_one(self, finding: Finding) -> None:
        self.rows[finding.event_id] = row_from_collector(finding)

    def fetch_picture(self, event_id: str) -> None:
        if self.client is not None and self.client.signed_in:
            self._background("picture", self._picture, event_id)

    def contest(self, event_id: str, note: str) -> str | None:
        """Send the worker's contest; returns a problem with the input at once, else None."""
        text = note.strip()
        if not text:
            return "Say why the finding is wrong."
        if len(text) > 500:
            return "Keep it to 500 characters."
        if self.client is None or not self.client.signed_in:
            return "Sign in to the collector first."
        self._background("contest", self._contest, event_id, text)
        return None

    def ordered(self) -> list[Row]:
        return sorted(self.rows.values(), key=lambda r: r.detected_ts, reverse=True)[:SHOW]

    # -- worker threads --------------------------------------------------------------------
    def _sign_in_and_load(self, password: str | None) -> None:
        assert self.client is not None
        try:
            if password is None and self.password_file is not None:
                # only the line end: the collector keeps spaces in passwords (as the broker's
                # password file is read, deskwatch_contract.credentials.read_password)
                password = self.password_file.read_text(encoding="utf-8").strip("\r\n")
            self.client.sign_in(password or "")
        except OSError as exc:
            self._say("error", f"Cannot read collector.password_file: {exc.strerror or exc}")
            return
        except UnicodeDecodeError:
            self._say("error", f"collector.password_file {self.password_file} is not UTF-8 text: save it as UTF-8.")
            return
        except SignInNeeded as exc:
            self._say("signin", f"Sign-in failed: {exc}.")
            return
        except CollectorError as exc:
            self._say("error", f"{str(exc)[:1].upper()}{str(exc)[1:]}.")
            return
        self._load()

    def _load(self) -> None:
        assert self.client is not None
        with self._busy:
            try:
                found, retention = self.client.findings(limit=SHOW)
            except SignInNeeded as exc:
                self._say("signin", f"{exc}.")
                return
            except CollectorError as exc:
                self._say("error", f"{str(exc)[:1].upper()}{str(exc)[1:]}.")
                return
        self._note("findings", (found, retention))
        self._say(
            "ready",
            f"Your findings at the collector: {len(found)} shown, newest first. Pictures are deleted"
            f" {retention:g} days after they were taken.",
        )

    def _picture(self, event_id: str) -> None:
        assert self.client is not None
        try:
            self._note("picture", (event_id, self.client.picture(event_id), None))
        except CollectorError as exc:
            self._note("picture", (event_id, None, str(exc)))

    def _contest(self, event_id: str, note: str) -> None:
        assert self.client is not None
        try:
            updated = self.client.contest(event_id, note)
        except CollectorError as exc:
            self._note("contest", (event_id, None, f"Not sent: {exc}."))
            return
        self._note("contest", (event_id, updated, None))
