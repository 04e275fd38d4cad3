"""Routes of the accuracy report, the fleet, one device, and the worker's own page.
Each is ``handler(view, request, user)`` (see :mod:`.view`)."""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from deskwatch_collector.auth import User
from deskwatch_collector.console import accuracy, detail, fleet, queue, timefmt, worker
from deskwatch_collector.console.charts import daily_bars
from deskwatch_collector.console.review import ReviewRefused
from deskwatch_collector.console.view import View
from deskwatch_collector.console.vocab import RULE_LABELS
from deskwatch_collector.validate import NAME

REPORT_MAX_DAYS = 366
DEVICE_ROWS = 100
FLEET_COLUMNS = (
    ("device", "Device"),
    ("site", "Site"),
    ("state", "State"),
    ("last_seen", "Last seen"),
    ("version", "Version"),
    ("profile", "Profile"),
    ("outbox", "Outbox"),
    ("noisy", "Noisy rules"),
)


# -- accuracy --------------------------------------------------------------------------------
def _threshold(view: View, text: str | None) -> float:
    if text is None:
        return view.settings.noisy_threshold
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.05 <= value <= 1):
        raise queue.BadFilter("noisy: a share between 0.05 and 1, e.g. 0.4")
    return value


def _report(view: View, request: Request, user: User) -> tuple[accuracy.Report, date, date, str | None]:
    view.supervisor(user)
    tz = view.tz(request)
    q = view.query(request)
    day_to = queue.date_param(q, "to") or timefmt.local(view.now(request), tz).date()
    day_from = queue.date_param(q, "from") or day_to - timedelta(days=29)
    if day_to < day_from:
        raise queue.BadFilter("to: the period ends before it starts")
    if (day_to - day_from).days >= REPORT_MAX_DAYS:
        raise queue.BadFilter(f"from: at most {REPORT_MAX_DAYS} days at a time")
    site = queue.single(q, "site")
    if site is not None and site not in user.sites:
        raise queue.BadFilter(f"site: {site[:64]!r} is not one of your sites")
    threshold = _threshold(view, queue.single(q, "noisy"))
    since, until = timefmt.day_start(day_from, tz), timefmt.day_end(day_to, tz)
    with view.store(request).transaction(write=False) as tx:
        rep = accuracy.report(tx, (site,) if site else user.sites, since, until, tz, threshold=threshold)
    return rep, day_from, day_to, site


def accuracy_page(view: View, request: Request, user: User) -> Response:
    rep, day_from, day_to, site = _report(view, request, user)
    charts = {
        rule: daily_bars(rep.days, rep.series.get(rule, []), f"{RULE_LABELS.get(rule, rule)}: findings per day")
        for rule in rep.by_rule
    }
    devices = sorted(rep.by_device.items(), key=lambda kv: (-(kv[1].wrong_rate or 0), -kv[1].findings, kv[0]))
    return view.html(
        request, user, "accuracy.html", rep=rep, charts=charts, day_from=day_from, day_to=day_to, site=site,
        device_rows=devices[:DEVICE_ROWS], devices_total=len(devices),
    )  # fmt: skip


def accuracy_api(view: View, request: Request, user: User) -> Response:
    rep, *_ = _report(view, request, user)
    return view.json(rep.as_json(device_limit=DEVICE_ROWS))


# -- fleet -------------------------------------------------------------------------------------
def _noisy(
    view: View, request: Request, user: User, site: str | None = None, device: str | None = None
) -> dict[tuple[str, str], list[str]]:
    """Noisy rules per device over the last ``noisy_days``."""
    now = view.now(request)
    with view.store(request).transaction(write=False) as tx:
        rep = accuracy.report(
            tx, (site,) if site else user.sites, now - view.settings.noisy_days * 86400, now, view.tz(request),
            threshold=view.settings.noisy_threshold, device=device, chart=False,
        )  # fmt: skip
    out: dict[tuple[str, str], list[str]] = {}
    for s, d, rule, _ in rep.noisy:
        out.setdefault((s, d), []).append(rule)
    return out


def _fleet(
    view: View, request: Request, user: User
) -> tuple[list[fleet.Device], dict[tuple[str, str], list[str]], str, bool]:
    view.supervisor(user)
    sort = request.query_params.get("sort", "state")
    if sort not in fleet.SORT_KEYS:
        raise queue.BadFilter(f"sort: one of {', '.join(fleet.SORT_KEYS)}")
    desc = request.query_params.get("dir", "asc") == "desc"
    with view.store(request).transaction(write=False) as tx:
        items = fleet.devices(tx, user, view.now(request))
    return fleet.sort_devices(items, sort, desc), _noisy(view, request, user), sort, desc


def fleet_page(view: View, request: Request, user: User) -> Response:
    items, noisy, sort, desc = _fleet(view, request, user)
    return view.html(
        request, user, "fleet.html", devices=items, noisy=noisy, sort=sort, desc=desc, summary=fleet.summary(items),
        columns=FLEET_COLUMNS, sort_keys=fleet.SORT_KEYS, now=view.now(request), noisy_days=view.settings.noisy_days,
        noisy_threshold=view.settings.noisy_threshold,
    )  # fmt: skip


def devices_api(view: View, request: Request, user: User) -> Response:
    items, noisy, _, _ = _fleet(view, request, user)
    return view.json(
        {
            "devices": [{**d.as_json(), "noisy_rules": noisy.get((d.site, d.device_id), [])} for d in items],
            "summary": fleet.summary(items),
        }
    )


def _device(view: View, request: Request, user: User) -> dict[str, Any] | None:
    view.supervisor(user)
    site, device_id = str(request.path_params["site"]), str(request.path_params["device_id"])
    if site not in user.sites or not NAME.match(device_id):
        return None
    now = view.now(request)
    with view.store(request).transaction(write=False) as tx:
        found = fleet.devices(tx, user, now, device_id=device_id, site=site)
        if not found:
            return None
        history = detail.device_history(tx, user, site, device_id, kept_from=view.kept_from(request), limit=20)
        rep = accuracy.report(
            tx, (site,), now - view.settings.noisy_days * 86400, now, view.tz(request),
            threshold=view.settings.noisy_threshold, device=device_id,
        )  # fmt: skip
    return {
        "device": found[0],
        "history": history,
        "rules": [(r, t) for r, t in rep.by_rule.items() if t.findings],
        "noisy": [r for _, _, r, _ in rep.noisy],
    }


def device_page(view: View, request: Request, user: User) -> Response:
    got = _device(view, request, user)
    if got is None:
        return view.error(request, user, 404, "No such device", "It has not reported, or is not at your sites.")
    return view.html(
        request, user, "device.html", d=got["device"], history=got["history"], rules=got["rules"],
        noisy=got["noisy"], days=view.settings.noisy_days, now=view.now(request),
    )  # fmt: skip


def device_api(view: View, request: Request, user: User) -> Response:
    got = _device(view, request, user)
    if got is None:
        return view.json({"error": "no such device"}, 404)
    return view.json(
        {
            **got["device"].as_json(),
            "noisy_rules": got["noisy"],
            "rules": {r: t.as_json() for r, t in got["rules"]},
            "recent": [queue.public(e) for e in got["history"]],
        }
    )


# -- the worker ----------------------------------------------------------------------------
def _findings(view: View, request: Request, user: User) -> queue.Page:
    q = view.query(request)
    with view.store(request).transaction(write=False) as tx:
        return worker.findings(
            tx, user, view.settings.retention_days, view.now(request), before=queue.single(q, "before"),
            after=queue.single(q, "after"), limit=queue.page_size(q),
        )  # fmt: skip


def worker_page(view: View, request: Request, user: User) -> Response:
    if user.is_supervisor:
        return RedirectResponse("/queue", 303)
    pg = _findings(view, request, user)
    return view.html(request, user, "worker.html", pg=pg, retention_days=view.settings.retention_days)


def worker_api(view: View, request: Request, user: User) -> Response:
    if user.is_supervisor:
        raise ReviewRefused(403, "workers only: supervisors use /api/queue")
    pg = _findings(view, request, user)
    return view.json(
        {
            "events": [queue.public(e, user) for e in pg.events],
            "newer": pg.newer,
            "older": pg.older,
            "retention_days": view.settings.retention_days,
        }
    )


def home(view: View, request: Request, user: User) -> Response:
    return RedirectResponse("/queue" if user.is_supervisor else "/me", 303)


def session_api(view: View, request: Request, user: User) -> Response:
    """Whether the session still holds, for a page without the alert poll (the worker's): when it
    has ended the answer is 401 saying why, and the page goes to the sign-in form with it."""
    return view.json({"username": user.username})
