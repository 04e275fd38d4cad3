"""How often each rule is right: per rule, per site and per device over a period.

For each group: findings, upheld (acknowledged), dismissed as wrong (a reason that says the
detector was wrong, by reason), dismissed although right, contested, contested but upheld,
still open. Accuracy is ``1 - wrong / reviewed`` (a commercial product's "event accuracy" is
``1 - disagreed / detected``; counting only reviewed findings keeps an unworked queue from
looking accurate). A rule on a device is *noisy* when at least ``MIN_REVIEWED`` of its
findings were reviewed and the share dismissed as wrong reaches the threshold.

Passes over the covering index ``events_site_ts`` (no table rows are read on
PostgreSQL): one grouped by (site, device, rule), then one by (rule, local day) for each UTC offset
the zone has in the period (one, or two across a DST change).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from deskwatch_collector.console import timefmt
from deskwatch_collector.console.vocab import DISMISS_REASONS, RULES, WRONG_REASONS
from deskwatch_collector.store import Tx

MIN_REVIEWED = 5
REASON_KEYS = tuple(r.key for r in DISMISS_REASONS)  # constants, safe to inline in SQL
NOISY_DEFAULT = 0.4
DAY = 86400


@dataclass
class Tally:
    findings: int = 0
    upheld: int = 0
    dismissed: int = 0
    wrong: int = 0
    contested: int = 0
    contested_upheld: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, c: tuple[int, int, int, int, int, int]) -> None:
        """Add (findings, upheld, dismissed, wrong, contested, contested_upheld)."""
        self.findings += c[0]
        self.upheld += c[1]
        self.dismissed += c[2]
        self.wrong += c[3]
        self.contested += c[4]
        self.contested_upheld += c[5]

    @property
    def reviewed(self) -> int:
        return self.upheld + self.dismissed

    @property
    def open(self) -> int:
        return self.findings - self.reviewed

    @property
    def wrong_rate(self) -> float | None:
        return self.wrong / self.reviewed if self.reviewed else None

    @property
    def accuracy(self) -> float | None:
        rate = self.wrong_rate
        return None if rate is None or self.reviewed < MIN_REVIEWED else 1.0 - rate

    def as_json(self) -> dict[str, Any]:
        return {
            "findings": self.findings,
            "reviewed": self.reviewed,
            "upheld": self.upheld,
            "dismissed": self.dismissed,
            "dismissed_wrong": self.wrong,
            "dismissed_right": self.dismissed - self.wrong,
            "contested": self.contested,
            "contested_upheld": self.contested_upheld,
            "open": self.open,
            "wrong_rate": _round(self.wrong_rate),
            "accuracy": _round(self.accuracy),
            "reasons": dict(self.reasons),
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


@dataclass
class Report:
    since: float
    until: float
    threshold: float
    by_rule: dict[str, Tally]
    by_site: dict[str, Tally]
    by_device: dict[tuple[str, str], Tally]
    cells: dict[tuple[str, str, str], Tally]  # (site, device, rule)
    days: list[date]
    series: dict[str, list[tuple[int, int]]]  # rule -> per day (findings, wrong)
    noisy: list[tuple[str, str, str, Tally]]  # (site, device, rule, tally), worst first
    total: Tally

    def noisy_for(self, site: str, device: str) -> list[str]:
        return [rule for s, d, rule, _ in self.noisy if (s, d) == (site, device)]

    def as_json(self, device_limit: int | None = None) -> dict[str, Any]:
        devices = sorted(self.by_device.items(), key=lambda kv: (-(kv[1].wrong_rate or 0), -kv[1].findings, kv[0]))
        return {
            "since": self.since,
            "until": self.until,
            "noisy_threshold": self.threshold,
            "min_reviewed": MIN_REVIEWED,
            "total": self.total.as_json(),
            "by_rule": {r: t.as_json() for r, t in self.by_rule.items()},
            "by_site": {s: t.as_json() for s, t in self.by_site.items()},
            "by_device": [
                {"site": s, "device_id": d, **t.as_json(), "noisy_rules": self.noisy_for(s, d)}
                for (s, d), t in devices[:device_limit]
            ],
            "devices_total": len(devices),
            "days": [d.isoformat() for d in self.days],
            "series": {r: [{"findings": f, "wrong": w} for f, w in v] for r, v in self.series.items()},
            "noisy": [
                {
                    "site": s,
                    "device_id": d,
                    "rule": r,
                    "reviewed": t.reviewed,
                    "dismissed_wrong": t.wrong,
                    "wrong_rate": _round(t.wrong_rate),
                }
                for s, d, r, t in self.noisy
            ],
        }


def report(
    tx: Tx,
    sites: tuple[str, ...],
    since: float,
    until: float,
    tz: ZoneInfo,
    *,
    threshold: float = NOISY_DEFAULT,
    device: str | None = None,
    chart: bool = True,
) -> Report:
    """The report; ``chart=False`` skips the per-day pass (and the reasons), for the noisy flags alone."""
    base = f"e.site IN ({', '.join('?' for _ in sites)}) AND e.detected_ts >= ? AND e.detected_ts < ?"
    params: list[Any] = [*sites, since, until]
    if device:
        base += " AND e.device_id = ?"
        params.append(device)
    wrong = ", ".join("?" for _ in WRONG_REASONS)
    rows = tx.rows(
        "SELECT e.site, e.device_id, e.type, COUNT(*),"
        " SUM(CASE WHEN e.review_state = 'acknowledged' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN e.review_state = 'dismissed' THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN e.review_state = 'dismissed' AND e.review_reason IN ({wrong}) THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN e.contested_at IS NOT NULL THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN e.contested_at IS NOT NULL AND e.review_state = 'acknowledged' THEN 1 ELSE 0 END)"
        f" FROM events e WHERE {base} GROUP BY e.site, e.device_id, e.type",
        [*WRONG_REASONS, *params],
    )
    counts = {(site, dev, rule): (int(n), int(a or 0), int(d or 0), int(w or 0), int(c or 0), int(cu or 0))
              for site, dev, rule, n, a, d, w, c, cu in rows}  # fmt: skip
    # The chart and the reasons: per (rule, local day), one more pass. Few groups, so the
    # planner hashes them (grouping by state and reason as well made PostgreSQL sort 100,000 rows).
    # A local day is (ts + the zone's offset) // DAY, with the offset of the time itself: a
    # range across a DST change is read in one piece per offset (the offset of the range's
    # end put October's after-midnight findings on the day before, and a day before the range).
    reason_sums = "".join(
        f", SUM(CASE WHEN e.review_state = 'dismissed' AND e.review_reason = '{key}' THEN 1 ELSE 0 END)"
        for key in REASON_KEYS
    )
    series_rows: list[Any] = []
    for lo, hi, shift in timefmt.offset_spans(since, until, tz) if chart else []:
        piece = [*sites, lo, hi, *([device] if device else [])]
        series_rows += tx.rows(
            f"SELECT e.type, FLOOR((e.detected_ts + ?) / {DAY}), COUNT(*),"
            f" SUM(CASE WHEN e.review_state = 'dismissed' AND e.review_reason IN ({wrong}) THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN e.review_state = 'dismissed' THEN 1 ELSE 0 END){reason_sums}"
            f" FROM events e WHERE {base} GROUP BY 1, 2",
            [shift, *WRONG_REASONS, *piece],
        )
    epoch = date(1970, 1, 1)
    first, last = timefmt.local(since, tz).date(), timefmt.local(until - 1, tz).date()
    first_day = (first - epoch).days
    n_days = max(1, min((last - first).days + 1, 400))
    days = [first + timedelta(days=i) for i in range(n_days)]
    series: dict[str, list[list[int]]] = defaultdict(lambda: [[0, 0] for _ in range(n_days)])
    by_rule: dict[str, Tally] = {r: Tally() for r in RULES}
    reasons: dict[str, dict[str, int]] = defaultdict(dict)
    for rule, day, n, wrong_n, dismissed, *by_reason in series_rows:
        i = int(day) - first_day
        if 0 <= i < n_days:
            series[rule][i][0] += int(n)
            series[rule][i][1] += int(wrong_n or 0)
        counted = 0
        for key, k in zip(REASON_KEYS, by_reason, strict=True):
            if k:
                reasons[rule][key] = reasons[rule].get(key, 0) + int(k)
                counted += int(k)
        if int(dismissed or 0) > counted:  # dismissed without a known reason (before reasons existed)
            reasons[rule]["none"] = reasons[rule].get("none", 0) + int(dismissed) - counted
    by_site: dict[str, Tally] = defaultdict(Tally)
    by_device: dict[tuple[str, str], Tally] = defaultdict(Tally)
    cells: dict[tuple[str, str, str], Tally] = {}
    total = Tally()
    for (site, dev, rule), c in counts.items():
        cells[(site, dev, rule)] = cell = Tally()
        for t in (cell, by_rule.setdefault(rule, Tally()), by_site[site], by_device[(site, dev)], total):
            t.add(c)
    for rule, per_reason in reasons.items():
        by_rule.setdefault(rule, Tally()).reasons = per_reason
        for k, n in per_reason.items():
            total.reasons[k] = total.reasons.get(k, 0) + n
    noisy = [
        (s, d, r, t)
        for (s, d, r), t in cells.items()
        if t.reviewed >= MIN_REVIEWED and (t.wrong_rate or 0.0) >= threshold
    ]
    noisy.sort(key=lambda x: (-(x[3].wrong_rate or 0.0), -x[3].reviewed, x[:3]))
    return Report(
        since, until, threshold,
        {r: t for r, t in by_rule.items() if t.findings or r in RULES},
        dict(sorted(by_site.items())), dict(by_device), cells, days,
        {r: [(f, w) for f, w in v] for r, v in series.items()}, noisy, total,
    )  # fmt: skip
