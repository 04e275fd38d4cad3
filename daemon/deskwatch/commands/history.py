"""``deskwatch history``: the worker's view of the audit trail on this device:
the last scans (when, what was checked, what was found) and every pause. No images.

For each finding it also says what left the device (a picture, and its size, or why
none), whether it is still waiting for the broker, and what the collector last said
about it (its retained ``reviews`` list): how a supervisor reviewed it, whether the
worker contested it, and until when the collector keeps the picture."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from deskwatch.commands.common import load_config_or_exit
from deskwatch_contract import exitcodes
from deskwatch_contract.reviews import ReviewedFinding

NAME = "history"
HELP = "show the last scans, findings and pauses recorded on this device (no images)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", "-n", type=int, default=20, help="how many entries (default 20)")
    parser.add_argument("--checks", action="store_true", help="also list every rule's outcome per scan")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")


def _local(ts: str, tz: tzinfo | None = None) -> str:
    """``ts`` (RFC 3339) in ``tz`` with the zone's abbreviation, ``2026-11-30 09:00:00 EST``
    (None: the system's zone, which on the appliance is UTC, not the desk's)."""
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return ts


NO_PICTURE = {
    "rule": "this rule sends none",
    "not_allowed": "this rule sends none",
    "profile": "the profile sends none",
    "disabled": "pictures are switched off",
    "no_frame": "there was no frame",
    "failed": "it could not be made",
    "too_large": "it was too large",
    "evicted": "dropped while the network was down",
    "disk_full": "dropped: the device's disk was full",
    "damaged": "dropped: damaged on the device's storage",
    "seal_failed": "it could not be sealed",
}


# why a finding left the device's queue unsent (the outbox's ``dropped`` and ``damaged`` rows)
NOT_SENT = {
    "evicted": "the device's queue dropped it while the network was down",
    "damaged": "it was damaged on the device's storage",
    "site_changed": "the desk moved to another site before it could be sent",
}


@dataclass
class Fate:
    """What became of the findings: still queued on the device, and the collector's last word."""

    queued: dict[str, set[str]] = field(default_factory=dict)
    view: dict[str, ReviewedFinding] = field(default_factory=dict)
    view_at: str | None = None
    tz: tzinfo | None = None  # the worker's zone
    # what left the outbox unsent: event id -> {"event"/"evidence": why} (outbox.dropped_event_ids)
    dropped: dict[str, dict[str, str]] = field(default_factory=dict)

    def line(self, finding: dict[str, Any]) -> str | None:
        event_id = finding.get("event_id")
        if not isinstance(event_id, str):
            return None  # recorded before the device kept this
        waiting = self.queued.get(event_id, set())
        dropped = self.dropped.get(event_id, {})
        parts = []
        size = finding.get("picture_bytes")
        if isinstance(size, int):
            kb = f"{size / 1000:.0f} KB"
            if "evidence" in waiting:
                parts.append(f"picture waiting to be sent ({kb})")
            elif "evidence" in dropped:  # no longer queued is not sent
                why = dropped["evidence"]
                parts.append(f"picture not sent: {NO_PICTURE.get(why, why)}")
            else:
                parts.append(f"picture sent ({kb})")
        else:
            why = str(finding.get("no_picture") or "none")
            parts.append(f"no picture ({NO_PICTURE.get(why, why)})")
        seen = self.view.get(event_id)
        if "event" in waiting:
            parts.append("waiting for the broker")
        elif "event" in dropped:
            why = dropped["event"]
            parts.append(f"never sent: {NOT_SENT.get(why, why)}")
        elif seen is None:
            parts.append("sent; no word from the collector yet")
        else:
            parts.append(_review_words(seen))
            if seen.contested:
                parts.append("you contested it")
            if seen.picture == "kept" and seen.picture_until:
                parts.append(f"the collector keeps the picture until {_local(seen.picture_until, self.tz)[:10]}")
            elif seen.picture == "deleted":
                parts.append("the collector has deleted the picture")
        return "      -> " + " · ".join(parts)


def _review_words(seen: ReviewedFinding) -> str:
    if seen.state == "acknowledged":
        return "upheld by your supervisor"
    if seen.state == "dismissed":
        why = f": {seen.reason}" if seen.reason else ""
        return f"dismissed by your supervisor{why}" + (" (the detector was wrong)" if seen.wrong else "")
    return "not reviewed yet"


def format_entry(
    kind: str,
    at: str,
    d: dict[str, object],
    checks: bool = False,
    fate: Fate | None = None,
    tz: tzinfo | None = None,
) -> list[str]:
    """One entry in words, its times in ``tz`` (the desk's zone; None: the system's)."""
    when = _local(at, tz)
    if kind == "scan":
        findings = d.get("findings") or []
        assert isinstance(findings, list)
        head = (
            f"{when}  scan ({d.get('trigger')})  {str(d.get('outcome')).upper():<9} "
            f"people {d.get('persons')}, bystanders {d.get('bystanders')}"
        )
        if d.get("trigger") == "pause":  # a pause overrun, published as a scan record: no camera was involved
            head = f"{when}  reported without a scan (the camera was not used): the pause ran over"
        out = [head]
        if d.get("outcome") == "started":  # written before the camera opened (deskwatch.audit.begin_scan)
            out = [f"{when}  scan ({d.get('trigger')})  STARTED   not finished: the camera is on for it now, "
                   "or the daemon stopped during it (its next start records that), or the disk has not taken its "
                   "outcome yet (a full or failing card: written once it does)"]  # fmt: skip
        if d.get("error"):
            out.append(f"    error: {d['error']}")
        for f in findings:
            out.append(
                f"    finding: {f.get('type')} (confidence {float(f.get('confidence') or 0):.2f}) {f.get('detail', '')}".rstrip()
            )
            line = fate.line(f) if fate is not None else None
            if line:
                out.append(line)
        if checks:
            for c in d.get("checks") or []:  # type: ignore[attr-defined]
                out.append(f"    {c['rule']:<20} {c['outcome']:<9} {c.get('reason', '')}".rstrip())
        return out
    if kind == "pause":
        return [f'{when}  pause: "{_shown(d.get("reason"))}" for {d.get("minutes")} min ({d.get("source", "local")})']
    if kind == "resume":
        late = " (after the declared time)" if d.get("late") else ""
        return [f"{when}  resume{late}"]
    if kind == "pause_clock_moved":
        return [
            f"{when}  the clock was corrected by {int(d.get('seconds') or 0):+d} s during the pause; "  # type: ignore[call-overload]
            f"it still ends after {d.get('minutes')} min, at {_local(str(d.get('ends_at')), tz)}"
        ]
    if kind == "pause_expired":
        return [f'{when}  pause "{_shown(d.get("reason"))}" ended by itself after {d.get("minutes")} min']
    if kind == "pause_overrun":
        over = int(d.get("over_seconds") or 0) // 60  # type: ignore[call-overload]
        return [f'{when}  pause_overrun: "{_shown(d.get("reason"))}" ran {over} min over']
    if kind == "worker_changed":
        return [
            f"{when}  this desk was handed over to worker {d.get('to_worker')} (site {d.get('to_site')}); "
            "the previous worker's entries are kept on the device for the audit, not shown here"
        ]
    if kind == "queue_dropped":
        n = int(d.get("event") or 0)  # type: ignore[call-overload]
        return [
            f"{when}  the desk moved from site {d.get('from_site')} to site {d.get('to_site')}: {n} finding(s) "
            "queued there and not yet sent were dropped (the new site cannot take them)"
        ]
    if kind == "remote_scan_accepted":
        return [f"{when}  on-demand scan requested from the central side (request {d.get('request_id')})"]
    if kind == "remote_scan_refused":
        return [f"{when}  on-demand scan REFUSED, camera stayed closed: {d.get('why')}"]
    if kind == "selftest_capture":
        failed = f"; then the camera failed: {d['failed']}" if d.get("failed") else ""
        return [f"{when}  technician's selftest used the camera ({d.get('frames')} frames{failed}; nothing sent)"]
    if kind == "selftest_snapshot":
        return [
            f"{when}  technician kept a framing picture on the device at {d.get('path')} ({d.get('blurred_faces')} "
            f"face(s), {d.get('blurred_bodies')} person box(es) blurred; nothing sent)"
        ]
    if kind == "aim_capture":
        if "open_seconds" in d:  # how long the camera really was open, and why it closed
            how = {"by itself": "", "Ctrl-C": "; stopped with Ctrl-C"}.get(
                str(d.get("stopped")), f"; {_shown(d.get('stopped'))}"
            )
            return [
                f"{when}  technician aimed the camera (live view, the camera open {d.get('open_seconds')} s of the "
                f"{d.get('asked_seconds')} s asked, {d.get('frames')} frames{how}; nothing kept or sent)"
            ]
        if "asked_seconds" in d:  # recorded as it began, never completed (the tool was killed)
            return [
                f"{when}  technician began aiming the camera (live view for up to {d.get('asked_seconds')} s; it "
                "did not finish; nothing kept or sent)"
            ]
        return [f"{when}  technician aimed the camera (live view for up to {d.get('seconds')} s, nothing kept or sent)"]
    if kind == "enroll_capture":
        took = (
            f"took {d['frames']} photo(s)"
            if "frames" in d
            else f"began taking up to {d.get('asked')} photo(s) (it did not finish)"
        )
        failed = f"; then the camera failed: {d['failed']}" if d.get("failed") else ""
        return [
            f"{when}  technician {took} with the camera to enrol worker {d.get('worker')}{failed} "
            "(with their consent; no photo kept or sent, at most face templates stored on the device)"
        ]
    return [f"{when}  {kind}: {json.dumps(d)}"]


def _shown(text: object) -> str:
    """A reason as recorded, what a terminal must not get written as escapes: a lone surrogate
    (printing it fails) or a control character (U+009B is a terminal's CSI), which entries
    recorded before the reason rule refused them may hold."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if "\ud800" <= c <= "\udfff" or unicodedata.category(c) == "Cc"
        else c
        for c in str(text)
    )


def run(args: argparse.Namespace) -> int:
    from deskwatch.audit import AuditLog, audit_path, utc
    from deskwatch.delivery.outbox import dropped_event_ids, queued_event_ids
    from deskwatch.domain import utcnow
    from deskwatch.handover import shown_since
    from deskwatch.policy.pause import checked_restore

    cfg = load_config_or_exit(args)
    if args.limit < 1:
        print("deskwatch history: --limit must be at least 1", file=sys.stderr)
        return exitcodes.USAGE
    path = audit_path(cfg.state_dir)
    if not path.exists():
        print(f"No scans recorded yet on this device ({path} does not exist).")
        return 0
    # the desk handed from another worker: their scans, findings and pauses are not this one's to see
    since, holder = shown_since(cfg.state_dir, cfg.device.worker_id, cfg.device.site, utcnow())
    try:
        # read only: a reader that found the file damaged moved it aside under the running daemon,
        # which went on recording into the moved file, and history showed none of it
        log = AuditLog(path, keep_days=cfg.evidence.retention_days, read_only=True)
        try:
            entries = log.recent(args.limit, since=utc(since) if since else None)
            pause = log.load_pause()
            if pause is not None and since is not None and pause.started_at < utc(since):
                pause = None  # the previous worker's (the daemon ends it when it takes the change)
            if pause is not None:  # saved by an older daemon: its reason may be what today's rule refuses
                pause = checked_restore(pause)
            view, view_at = log.collector_view()
            read_back = log.read_back_note()
        finally:
            log.close()
    except Exception as exc:  # unreadable: permissions or a damaged file
        print(f"deskwatch history: cannot read {path}: {exc}{_remedy(exc)}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    tz = ZoneInfo(cfg.schedule.timezone)  # the worker's, which the notice states the working hours in
    fate = Fate(queued_event_ids(cfg.state_dir), view, view_at, tz, dropped_event_ids(cfg.state_dir))
    if args.json:
        for e in entries:
            data = dict(e.data)
            if e.kind == "scan":
                data["findings"] = [_with_fate(f, fate) for f in data.get("findings") or []]
            print(json.dumps({"at": e.at, "kind": e.kind, **data}))
        return 0
    earlier = ""
    if since is not None and holder is not None:
        earlier = (
            f"(This desk was handed over to worker {cfg.device.worker_id} at {_local(since, tz)}: the previous "
            "worker's entries are kept on the device for the audit, not shown here.)"
        )
    if not entries:
        print("\n".join(filter(None, ["No scans recorded yet on this device.", earlier])))
        return 0
    if pause is not None and pause.ends_at > datetime.now(pause.ends_at.tzinfo):
        print(
            shown(
                f'Paused now: "{pause.reason}" until {pause.ends_at.astimezone(tz).strftime("%H:%M %Z")} '
                "(no scans until then)."
            )
        )
    print(
        f"Last {len(entries)} entries on desk {cfg.device.id} (newest first; times in {cfg.schedule.timezone}; "
        f"kept {cfg.evidence.retention_days} days; no images are stored):"
    )
    if earlier:
        print(earlier)
    for e in entries:
        try:
            lines = format_entry(e.kind, e.at, e.data, args.checks, fate, tz)
        except (AttributeError, TypeError, KeyError, ValueError, AssertionError, OverflowError):
            lines = [f"{e.at}  {e.kind}: an entry not as the daemon writes it (damaged?): {json.dumps(e.data)[:300]}"]
        for line in lines:
            print(shown(line))
    if read_back is not None and not read_back.get("complete", True):
        print(
            f"(On {_local(str(read_back.get('at')), tz)[:10]} this log was found damaged on the device's storage: "
            "what could be read was kept, some older entries could not be read and are missing.)"
        )
    if view_at is None:
        print(
            "(The collector has not yet said how findings were reviewed: it sends that when the device is connected.)"
        )
    else:
        print(f"(Reviews as the collector reported them at {_local(view_at, tz)}.)")
    return 0


def shown(line: str) -> str:
    """``line`` with its control characters written out (ESC as \\x1b): the daemon's user
    writes the trail, and history is read on a technician's terminal, as root, and the
    worker's, where an escape sequence in a reason would be the terminal's to obey."""
    return "".join(c if unicodedata.category(c) != "Cc" else repr(c)[1:-1] for c in line)


def _remedy(exc: BaseException) -> str:
    from deskwatch_contract.sqlite import is_damaged

    if is_damaged(exc):
        return (
            "; the file is damaged (a failing SD card?): the service sets it aside (kept for inspection) when a"
            " scan's record or its next start meets the damage, and goes on in a fresh trail with what can still"
            " be read of it (sudo systemctl restart deskwatch does it now)"
        )
    return ""


def _with_fate(finding: dict[str, Any], fate: Fate) -> dict[str, Any]:
    event_id = finding.get("event_id")
    if not isinstance(event_id, str):
        return finding
    seen = fate.view.get(event_id)
    return {
        **finding,
        "queued": sorted(fate.queued.get(event_id, set())),
        "dropped": fate.dropped.get(event_id, {}),
        "collector": seen.as_json() if seen is not None else None,
    }
