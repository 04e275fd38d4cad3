"""The console's routes: HTML pages and their JSON twins under ``/api``.

Every handler is a plain function (the server runs it in its worker threads: the
database calls block). The account comes from ``user_of(request)``, the server's session
check; nothing here reads cookies itself except the viewer's time zone.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from deskwatch_collector.auth import User
from deskwatch_collector.console import accuracy, detail, fleet, queue, review, timefmt, worker
from deskwatch_collector.console.charts import daily_bars
from deskwatch_collector.console.vocab import (
    DISMISS_REASONS,
    QUEUE_VIEW_LABELS,
    QUEUE_VIEWS,
    RULE_LABELS,
    STATE_LABELS,
    WRONG_REASONS,
    reason_label,
)
from deskwatch_collector.store import Store, StoreUnavailable
from deskwatch_collector.validate import NAME, UUID

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
TZ_COOKIE = "dw_tz"
MAX_BODY = 16 * 1024
REPORT_MAX_DAYS = 366
DEVICE_ROWS = 100
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LEVEL_LABELS = {
    "offline": "Offline",
    "fault": "Fault",
    "paused": "Paused",
    "attention": "Attention",
    "online": "Online",
}
REASON_SHORT = {
    "false_detection": "nothing there", "misread_object": "misread", "wrong_person": "not the worker",
    "camera_problem": "camera", "allowed": "allowed", "duplicate": "duplicate", "other": "other", "none": "no reason",
}  # fmt: skip
FLEET_COLUMNS = (
    ("device", "Device"), ("site", "Site"), ("state", "State"), ("last_seen", "Last seen"), ("version", "Version"),
    ("profile", "Profile"), ("outbox", "Outbox"), ("noisy", "Noisy rules"),
)  # fmt: skip


@dataclass
class ConsoleSettings:
    retention_days: float = 20.0
    noisy_threshold: float = accuracy.NOISY_DEFAULT
    noisy_days: int = 30
    poll_seconds: float = 5.0


def _worker_state(ev: dict[str, Any]) -> str:
    if ev["review_state"] == "acknowledged":
        return f"Upheld by your supervisor ({ev['reviewed_by']})."
    if ev["review_state"] == "dismissed":
        return f"Dismissed by your supervisor: {reason_label(ev['review_reason']) or 'no reason given'}."
    return "Not reviewed yet."


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        show=timefmt.show, iso=timefmt.iso_utc, ago=timefmt.ago, urlencode=urlencode, rule_labels=RULE_LABELS,
        state_labels=STATE_LABELS, view_labels=QUEUE_VIEW_LABELS, views=QUEUE_VIEWS, reasons=DISMISS_REASONS,
        level_labels=LEVEL_LABELS, levels=fleet.LEVELS, reason_short=REASON_SHORT, reason_order=tuple(REASON_SHORT),
        worker_state=_worker_state, min_reviewed=accuracy.MIN_REVIEWED,
        wrong_reasons=WRONG_REASONS, right_reasons=tuple(k for k in REASON_SHORT if k not in WRONG_REASONS),
    )  # fmt: skip
    return env


class Console:
    def __init__(
        self,
        store: Store,
        user_of: Callable[[Request], User | None],
        settings: ConsoleSettings | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.user_of = user_of
        self.settings = settings or ConsoleSettings()
        self.wall = wall
        self.env = _environment()

    # -- plumbing -------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        def r(path: str, fn: Callable[..., Response], methods: tuple[str, ...] = ("GET",)) -> Route:
            return Route(path, self._guard(fn), methods=list(methods))

        return [
            r("/queue", self.queue_page),
            r("/queue.csv", self.queue_csv),
            r("/api/queue", self.queue_api),
            r("/api/queue/latest", self.latest_api),
            r("/events/{event_id}", self.event_page),
            r("/api/events/{event_id}", self.event_api),
            r("/api/events/{event_id}/review", self.review_api, ("POST",)),
            r("/api/events/{event_id}/contest", self.contest_api, ("POST",)),
            r("/accuracy", self.accuracy_page),
            r("/api/accuracy", self.accuracy_api),
            r("/fleet", self.fleet_page),
            r("/api/devices", self.devices_api),
            r("/devices/{site}/{device_id}", self.device_page),
            r("/api/devices/{site}/{device_id}", self.device_api),
            r("/me", self.worker_page),
            r("/api/me/findings", self.worker_api),
            Route("/static/console.css", self._static("console.css", "text/css; charset=utf-8")),
            Route("/static/console.js", self._static("console.js", "text/javascript; charset=utf-8")),
        ]

    def _static(self, name: str, ctype: str) -> Callable[[Request], Response]:
        body = (HERE / "static" / name).read_bytes()

        def serve(request: Request) -> Response:
            return Response(body, media_type=ctype, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

        return serve

    def _guard(self, fn: Callable[[Request, User], Response]) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            request.state.body = b""
            if request.method == "POST":
                chunks, size = [], 0
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_BODY:
                        return self.json({"error": "body too large"}, 413)
                    chunks.append(chunk)
                request.state.body = b"".join(chunks)
            return await run_in_threadpool(self._run, fn, request)

        handler.__name__ = fn.__name__
        return handler

    def _run(self, fn: Callable[[Request, User], Response], request: Request) -> Response:
        api = request.url.path.startswith("/api/") or request.url.path.endswith(".csv")
        user = None
        try:
            user = self.user_of(request)
            if user is None:
                return self.json({"error": "sign in first"}, 401) if api else RedirectResponse("/login", 303)
            return fn(request, user)
        except queue.BadFilter as exc:
            return (
                self.json({"error": str(exc)}, 400)
                if api
                else self.error(request, user, 400, "Cannot show that", str(exc))
            )
        except review.ReviewRefused as exc:
            return (
                self.json({"error": str(exc)}, exc.status)
                if api
                else self.error(request, user, exc.status, "Not allowed", str(exc))
            )
        except StoreUnavailable:
            return self.json({"error": "database unavailable, try again"}, 503) if api else self.error(
                request, user, 503, "Database unavailable", "Try again in a moment.")  # fmt: skip
        except Exception:
            logger.exception("console failed on %s %s", request.method, request.url.path)
            return self.json({"error": "internal error"}, 500) if api else self.error(
                request, None, 500, "Internal error", "The console failed; the log says why.")  # fmt: skip

    def json(self, obj: Any, status: int = 200) -> Response:
        body = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
        return Response(body, status, media_type="application/json", headers=SECURITY_HEADERS)

    def html(self, request: Request, user: User, template: str, status: int = 200, **ctx: Any) -> Response:
        tz = self.tz(request)
        text = self.env.get_template(template).render(user=user, tz=tz, page_name=template.removesuffix(".html"), **ctx)
        return Response(text, status, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    def error(self, request: Request, user: User | None, status: int, title: str, message: str) -> Response:
        if user is None:
            return Response(
                f"{title}: {message}\n", status, media_type="text/plain; charset=utf-8", headers=SECURITY_HEADERS
            )
        return self.html(request, user, "error.html", status, title=title, message=message)

    def tz(self, request: Request) -> Any:
        return timefmt.zone(request.query_params.get("tz") or request.cookies.get(TZ_COOKIE))

    @staticmethod
    def query(request: Request) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in request.query_params.multi_items():
            out.setdefault(k, []).append(v)
        return out

    def _supervisor(self, user: User) -> None:
        if not user.is_supervisor:
            raise review.ReviewRefused(403, "supervisors only")

    # -- the queue -----------------------------------------------------------------------
    def _queue(self, request: Request, user: User) -> tuple[queue.Filters, queue.Page, queue.Counts]:
        q = self.query(request)
        f = queue.parse_filters(q, user, self.tz(request))
        before, after = queue._one(q, "before"), queue._one(q, "after")
        with self.store.transaction(write=False) as tx:
            pg = queue.page(tx, f, before=before, after=after, limit=queue.page_size(q))
            counts = queue.counts(tx, f)
        return f, pg, counts

    def queue_page(self, request: Request, user: User) -> Response:
        if not user.is_supervisor:
            return RedirectResponse("/me", 303)
        f, pg, counts = self._queue(request, user)
        with self.store.transaction(write=False) as tx:
            latest = self._latest_id(tx, user)
            names = [r[0] for r in tx.rows(
                f"SELECT device_id FROM devices WHERE site IN ({', '.join('?' for _ in user.sites)})"
                " ORDER BY device_id LIMIT 2000", list(user.sites))]  # fmt: skip
        return self.html(request, user, "queue.html", f=f, pg=pg, counts=counts, latest_id=latest,
                         poll_seconds=self.settings.poll_seconds, device_names=names, compact=False)  # fmt: skip

    def queue_api(self, request: Request, user: User) -> Response:
        _f, pg, counts = self._queue(request, user)
        return self.json({
            "events": [_public(ev) for ev in pg.events], "newer": pg.newer, "older": pg.older,
            "counts": {"total": counts.total, "by_view": counts.by_view, "by_type": counts.by_type},
        })  # fmt: skip

    def queue_csv(self, request: Request, user: User) -> Response:
        self._supervisor(user)
        tz = self.tz(request)
        f = queue.parse_filters(self.query(request), user, tz)

        def body() -> Iterator[bytes]:
            with self.store.transaction(write=False) as tx:
                for chunk in queue.csv_lines(tx, f, tz):
                    yield chunk.encode("utf-8")

        name = f"deskwatch-{f.view}-{date.fromtimestamp(self.wall()).isoformat()}.csv"
        headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
        logger.info("%s exported %s events as CSV", user.username, f.view)
        return StreamingResponse(body(), media_type="text/csv; charset=utf-8", headers=headers)

    def _latest_id(self, tx: Any, user: User) -> int:
        where, params = detail.scope(user)
        row = tx.one(f"SELECT MAX(e.id) FROM events e WHERE {where}", params)
        return int(row[0]) if row and row[0] is not None else 0

    def latest_api(self, request: Request, user: User) -> Response:
        """New open events since ``after_id`` (for alerts while a page is open)."""
        self._supervisor(user)
        try:
            after = int(request.query_params.get("after_id", "0"))
        except ValueError:
            raise queue.BadFilter("after_id: a whole number") from None
        where, params = detail.scope(user)
        with self.store.transaction(write=False) as tx:
            rows = tx.rows(
                f"SELECT {queue.EVENT_COLUMNS} FROM events e LEFT JOIN evidence v ON v.event_id = e.event_id"
                f" WHERE {where} AND e.id > ? AND e.review_state = 'open' ORDER BY e.id DESC LIMIT 20",
                (*params, after),
            )
            latest = self._latest_id(tx, user)
        return self.json({"latest_id": max(latest, after), "events": [_public(queue.event_row(r)) for r in rows]})

    # -- one event -----------------------------------------------------------------------
    def _event(self, request: Request, user: User) -> dict[str, Any] | None:
        event_id = request.path_params["event_id"].lower()
        if not UUID.match(event_id):
            return None
        with self.store.transaction(write=False) as tx:
            ev = detail.find_event(tx, user, event_id)
            if ev is None:
                return None
            ev["scan"] = detail.scan_of(tx, ev["site"], ev["device_id"], ev["scan_id"])
            ev["history"] = detail.device_history(tx, user, ev["site"], ev["device_id"])
            ev["trail"] = detail.trail(tx, event_id)
        worker.annotate(ev, self.settings.retention_days, self.wall())
        return ev

    def event_page(self, request: Request, user: User) -> Response:
        ev = self._event(request, user)
        if ev is None:
            return self.error(request, user, 404, "No such event", "It does not exist or is not one of yours.")
        if not user.is_supervisor:
            return RedirectResponse(f"/me#{ev['event_id']}", 303)
        q = self.query(request)
        f = queue.parse_filters(q, user, self.tz(request))
        nav = self._neighbours(f, ev)
        return self.html(request, user, "event.html", ev=ev, f=f, nav=nav, scan=ev["scan"], history=ev["history"],
                         trail=ev["trail"], days_left=ev["days_left"], retention_days=self.settings.retention_days)  # fmt: skip

    def _neighbours(self, f: queue.Filters, ev: dict[str, Any]) -> dict[str, str | None]:
        here = queue.encode_cursor(ev["detected_ts"], ev["id"])
        with self.store.transaction(write=False) as tx:
            older = queue.page(tx, f, before=here, limit=1).events
            newer_rows = _newer(tx, f, here)
        qs = f.qs()
        return {
            "older_url": f"/events/{older[0]['event_id']}?{qs}" if older else None,
            "newer_url": f"/events/{newer_rows[0]['event_id']}?{qs}" if newer_rows else None,
        }

    def event_api(self, request: Request, user: User) -> Response:
        ev = self._event(request, user)
        if ev is None:
            return self.json({"error": "no such event"}, 404)
        return self.json(_public(ev))

    def _body(self, request: Request) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise review.ReviewRefused(415, "send JSON")
        raw = request.state.body
        try:
            data = json.loads(raw or b"")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise review.ReviewRefused(400, "body must be a JSON object")
        return data

    def review_api(self, request: Request, user: User) -> Response:
        event_id = request.path_params["event_id"].lower()
        if not UUID.match(event_id):
            raise review.ReviewRefused(404, "no such event")
        data = self._body(request)
        note = review.clean_note(data.get("note"))
        with self.store.transaction() as tx:
            review.review(tx, user, event_id, data.get("action"), data.get("reason"), note, self.wall())
        ev = self._event(request, user)
        return self.json(_public(ev) if ev else {"ok": True})

    def contest_api(self, request: Request, user: User) -> Response:
        event_id = request.path_params["event_id"].lower()
        if not UUID.match(event_id):
            raise review.ReviewRefused(404, "no such event")
        data = self._body(request)
        note = review.clean_note(data.get("note"))
        with self.store.transaction() as tx:
            review.contest(tx, user, event_id, note, self.wall())
        ev = self._event(request, user)
        return self.json(_public(ev) if ev else {"ok": True})

    # -- accuracy ------------------------------------------------------------------------
    def _report(
        self, request: Request, user: User, device: str | None = None
    ) -> tuple[accuracy.Report, date, date, str | None]:
        self._supervisor(user)
        tz = self.tz(request)
        q = self.query(request)
        today = timefmt.local(self.wall(), tz).date()
        day_to = queue._day(q, "to") or today
        day_from = queue._day(q, "from") or day_to - timedelta(days=29)
        if day_to < day_from:
            raise queue.BadFilter("to: the period ends before it starts")
        if (day_to - day_from).days >= REPORT_MAX_DAYS:
            raise queue.BadFilter(f"from: at most {REPORT_MAX_DAYS} days at a time")
        site = queue._one(q, "site")
        if site is not None and site not in user.sites:
            raise queue.BadFilter(f"site: {site[:64]!r} is not one of your sites")
        threshold_text = queue._one(q, "noisy")
        try:
            threshold = float(threshold_text) if threshold_text else self.settings.noisy_threshold
        except ValueError:
            raise queue.BadFilter("noisy: a share between 0.05 and 1, e.g. 0.4") from None
        if not (math.isfinite(threshold) and 0.05 <= threshold <= 1):
            raise queue.BadFilter("noisy: a share between 0.05 and 1, e.g. 0.4")
        with self.store.transaction(write=False) as tx:
            rep = accuracy.report(tx, (site,) if site else user.sites, timefmt.day_start(day_from, tz),
                                  timefmt.day_end(day_to, tz), tz, threshold=threshold, device=device)  # fmt: skip
        return rep, day_from, day_to, site

    def accuracy_page(self, request: Request, user: User) -> Response:
        rep, day_from, day_to, site = self._report(request, user)
        charts = {rule: daily_bars(rep.days, rep.series.get(rule, [(0, 0)] * len(rep.days)),
                                   f"{RULE_LABELS.get(rule, rule)}: findings per day") for rule in rep.by_rule}  # fmt: skip
        devices = sorted(rep.by_device.items(), key=lambda kv: (-(kv[1].wrong_rate or 0), -kv[1].findings, kv[0]))
        return self.html(request, user, "accuracy.html", rep=rep, charts=charts, day_from=day_from, day_to=day_to,
                         site=site, device_rows=devices[:DEVICE_ROWS], devices_total=len(devices))  # fmt: skip

    def accuracy_api(self, request: Request, user: User) -> Response:
        rep, *_ = self._report(request, user)
        return self.json(rep.as_json(device_limit=DEVICE_ROWS))

    # -- fleet ---------------------------------------------------------------------------
    def _noisy(self, user: User, tz: Any, device: str | None = None) -> dict[tuple[str, str], list[str]]:
        now = self.wall()
        with self.store.transaction(write=False) as tx:
            rep = accuracy.report(tx, user.sites, now - self.settings.noisy_days * 86400, now, tz,
                                  threshold=self.settings.noisy_threshold, device=device)  # fmt: skip
        out: dict[tuple[str, str], list[str]] = {}
        for s, d, rule, _ in rep.noisy:
            out.setdefault((s, d), []).append(rule)
        return out

    def _fleet(
        self, request: Request, user: User
    ) -> tuple[list[fleet.Device], dict[tuple[str, str], list[str]], str, bool]:
        self._supervisor(user)
        sort = request.query_params.get("sort", "state")
        if sort not in fleet.SORT_KEYS:
            raise queue.BadFilter(f"sort: one of {', '.join(fleet.SORT_KEYS)}")
        desc = request.query_params.get("dir", "asc") == "desc"
        with self.store.transaction(write=False) as tx:
            items = fleet.devices(tx, user, self.wall())
        return fleet.sort_devices(items, sort, desc), self._noisy(user, self.tz(request)), sort, desc

    def fleet_page(self, request: Request, user: User) -> Response:
        items, noisy, sort, desc = self._fleet(request, user)
        return self.html(request, user, "fleet.html", devices=items, noisy=noisy, sort=sort, desc=desc,
                         summary=fleet.summary(items), columns=FLEET_COLUMNS, sort_keys=fleet.SORT_KEYS,
                         now=self.wall(), noisy_days=self.settings.noisy_days,
                         noisy_threshold=self.settings.noisy_threshold)  # fmt: skip

    def devices_api(self, request: Request, user: User) -> Response:
        items, noisy, _, _ = self._fleet(request, user)
        return self.json({"devices": [{**d.as_json(), "noisy_rules": noisy.get((d.site, d.device_id), [])}
                                      for d in items], "summary": fleet.summary(items)})  # fmt: skip

    def _device(self, request: Request, user: User) -> dict[str, Any] | None:
        self._supervisor(user)
        site, device_id = request.path_params["site"], request.path_params["device_id"]
        if site not in user.sites or not NAME.match(device_id):
            return None
        now = self.wall()
        tz = self.tz(request)
        with self.store.transaction(write=False) as tx:
            found = fleet.devices(tx, user, now, device_id=device_id, site=site)
            if not found:
                return None
            history = detail.device_history(tx, user, site, device_id, limit=20)
            rep = accuracy.report(tx, (site,), now - self.settings.noisy_days * 86400, now, tz,
                                  threshold=self.settings.noisy_threshold, device=device_id)  # fmt: skip
        rules = [(r, t) for r, t in rep.by_rule.items() if t.findings]
        return {"device": found[0], "history": history, "rules": rules,
                "noisy": [r for s, d, r, _ in rep.noisy if d == device_id]}  # fmt: skip

    def device_page(self, request: Request, user: User) -> Response:
        got = self._device(request, user)
        if got is None:
            return self.error(request, user, 404, "No such device", "It has not reported, or is not at your sites.")
        return self.html(request, user, "device.html", d=got["device"], history=got["history"], rules=got["rules"],
                         noisy=got["noisy"], days=self.settings.noisy_days, now=self.wall())  # fmt: skip

    def device_api(self, request: Request, user: User) -> Response:
        got = self._device(request, user)
        if got is None:
            return self.json({"error": "no such device"}, 404)
        return self.json({**got["device"].as_json(), "noisy_rules": got["noisy"],
                          "rules": {r: t.as_json() for r, t in got["rules"]},
                          "recent": [_public(e) for e in got["history"]]})  # fmt: skip

    # -- the worker ----------------------------------------------------------------------
    def _findings(self, request: Request, user: User) -> queue.Page:
        q = self.query(request)
        before, after = queue._one(q, "before"), queue._one(q, "after")
        with self.store.transaction(write=False) as tx:
            return worker.findings(tx, user, self.settings.retention_days, self.wall(), before=before, after=after,
                                   limit=queue.page_size(q))  # fmt: skip

    def worker_page(self, request: Request, user: User) -> Response:
        if user.is_supervisor:
            return RedirectResponse("/queue", 303)
        return self.html(request, user, "worker.html", pg=self._findings(request, user),
                         retention_days=self.settings.retention_days)  # fmt: skip

    def worker_api(self, request: Request, user: User) -> Response:
        if user.is_supervisor:
            raise review.ReviewRefused(403, "workers only: supervisors use /api/queue")
        pg = self._findings(request, user)
        return self.json({"events": [_public(e) for e in pg.events], "newer": pg.newer, "older": pg.older,
                          "retention_days": self.settings.retention_days})  # fmt: skip


def _newer(tx: Any, f: queue.Filters, here: str) -> list[dict[str, Any]]:
    """The event just newer than ``here`` in the filtered order (not the newest page)."""
    ts, row_id = queue.decode_cursor(here)
    sql, params = queue._select(f, (ts, row_id), True, 1)
    return [queue.event_row(r) for r in tx.rows(sql, params)]


def _public(ev: dict[str, Any]) -> dict[str, Any]:
    """An event for JSON: times also as RFC 3339, the picture's URL."""
    out = {k: v for k, v in ev.items() if k not in ("history", "trail", "scan") or v is not None}
    out["detected_at_utc"] = timefmt.iso_utc(ev["detected_ts"])
    out["picture_url"] = f"/evidence/{ev['event_id']}" if ev.get("has_picture") else None
    return out
