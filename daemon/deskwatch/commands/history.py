"""``deskwatch history``: the worker's view of the audit trail on this device:
the last scans (when, what was checked, what was found) and every pause. No images."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from deskwatch.commands.common import load_config_or_exit
from deskwatch_contract import exitcodes

NAME = "history"
HELP = "show the last scans, findings and pauses recorded on this device (no images)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", "-n", type=int, default=20, help="how many entries (default 20)")
    parser.add_argument("--checks", action="store_true", help="also list every rule's outcome per scan")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")


def _local(ts: str) -> str:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return ts


def format_entry(kind: str, at: str, d: dict[str, object], checks: bool = False) -> list[str]:
    when = _local(at)
    if kind == "scan":
        findings = d.get("findings") or []
        assert isinstance(findings, list)
        head = (
            f"{when}  scan ({d.get('trigger')})  {str(d.get('outcome')).upper():<9} "
            f"people {d.get('persons')}, bystanders {d.get('bystanders')}"
        )
        out = [head]
        if d.get("error"):
            out.append(f"    error: {d['error']}")
        for f in findings:
            out.append(
                f"    finding: {f.get('type')} (confidence {float(f.get('confidence') or 0):.2f}) {f.get('detail', '')}".rstrip()
            )
        if checks:
            for c in d.get("checks") or []:  # type: ignore[attr-defined]
                out.append(f"    {c['rule']:<20} {c['outcome']:<9} {c.get('reason', '')}".rstrip())
        return out
    if kind == "pause":
        return [f'{when}  pause: "{d.get("reason")}" for {d.get("minutes")} min ({d.get("source", "local")})']
    if kind == "resume":
        late = " (after the declared time)" if d.get("late") else ""
        return [f"{when}  resume{late}"]
    if kind == "pause_expired":
        return [f'{when}  pause "{d.get("reason")}" ended by itself after {d.get("minutes")} min']
    if kind == "pause_overrun":
        return [f'{when}  pause_overrun: "{d.get("reason")}" ran {int(d.get("over_seconds") or 0) // 60} min over']  # type: ignore[call-overload]
    if kind == "remote_scan_accepted":
        return [f"{when}  on-demand scan requested from the central side (request {d.get('request_id')})"]
    if kind == "remote_scan_refused":
        return [f"{when}  on-demand scan REFUSED, camera stayed closed: {d.get('why')}"]
    if kind == "selftest_capture":
        return [f"{when}  technician's selftest used the camera ({d.get('frames')} frames, nothing sent)"]
    return [f"{when}  {kind}: {json.dumps(d)}"]


def run(args: argparse.Namespace) -> int:
    from deskwatch.audit import AuditLog, audit_path

    cfg = load_config_or_exit(args)
    if args.limit < 1:
        print("deskwatch history: --limit must be at least 1", file=sys.stderr)
        return exitcodes.USAGE
    path = audit_path(cfg.state_dir)
    if not path.exists():
        print(f"No scans recorded yet on this device ({path} does not exist).")
        return 0
    try:
        log = AuditLog(path, keep_days=cfg.evidence.retention_days)
    except Exception as exc:  # unreadable: permissions or a damaged file
        print(f"deskwatch history: cannot read {path}: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    try:
        entries = log.recent(args.limit)
        pause = log.load_pause()
    finally:
        log.close()
    if args.json:
        for e in entries:
            print(json.dumps({"at": e.at, "kind": e.kind, **e.data}))
        return 0
    if not entries:
        print("No scans recorded yet on this device.")
        return 0
    if pause is not None and pause.ends_at > datetime.now(pause.ends_at.tzinfo):
        print(
            f'Paused now: "{pause.reason}" until {pause.ends_at.astimezone().strftime("%H:%M")} (no scans until then).'
        )
    print(
        f"Last {len(entries)} entries on desk {cfg.device.id} (newest first; kept {cfg.evidence.retention_days} days; no images are stored):"
    )
    for e in entries:
        for line in format_entry(e.kind, e.at, e.data, args.checks):
            print(line)
    return 0
