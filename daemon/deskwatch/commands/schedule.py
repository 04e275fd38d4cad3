"""``deskwatch schedule``: show the coming scan times, or simulate weeks of them."""

from __future__ import annotations

import argparse
import itertools
from datetime import UTC, datetime

from deskwatch.commands.common import load_config_or_exit
from deskwatch.schedule import Schedule, simulate

NAME = "schedule"
HELP = "print the shift windows and simulated scan statistics for the configured schedule"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=int, default=7, help="days to simulate (default 7)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the simulation")
    parser.add_argument("--start", default=None, help="simulation start (ISO 8601, default now)")


def run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    sc = cfg.schedule
    start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    times, rows, outside = simulate(sc, start, args.days, args.seed)
    tz = Schedule(sc).calendar.tz
    print(
        f"schedule: mode {sc.mode}, {sc.scans_per_hour:g}/h, min gap {sc.min_gap_minutes:g} min, "
        f"time zone {sc.timezone}; {args.days} days from {start.astimezone(tz):%Y-%m-%d %H:%M %Z}"
    )
    print(f"{'hour':>5} {'shift h':>8} {'scans':>6} {'per h':>6}")
    total_h = 0.0
    for r in rows:
        total_h += r.shift_hours
        rate = r.scans / r.shift_hours if r.shift_hours else float("inf")
        print(f"{r.hour:>5} {r.shift_hours:>8.1f} {r.scans:>6} {rate:>6.2f}")
    overall = len(times) / total_h if total_h else 0.0
    expected = {"random": sc.scans_per_hour, "interval": 3600 / sc.interval_seconds}.get(sc.mode)
    print(
        f"total: {len(times)} scans in {total_h:.1f} shift hours = {overall:.2f}/h"
        + (f" (configured {expected:.2f}/h)" if expected else "")
        + f"; outside shifts: {outside}"
    )
    gaps = [(b - a).total_seconds() / 60 for a, b in itertools.pairwise(times)]
    if gaps:
        print(f"gap between scans: min {min(gaps):.1f} min, median {sorted(gaps)[len(gaps) // 2]:.1f} min")
    return 0 if outside == 0 else 1
