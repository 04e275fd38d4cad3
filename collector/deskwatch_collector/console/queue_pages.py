"""Routes of the queue and of one event: the filtered list, its CSV, the alert poll, the
event detail, its picture, review and contest. Each is ``handler(view, request, user)``
(see :mod:`.view`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from deskwatch_collector.auth import User
from deskwatch_collector.console import detail, queue, review, worker
from deskwatch_collector.console.timefmt import local
from deskwatch_collector.console.view import View
from deskwatch_collector.store import Tx
from deskwatch_collector.validate import UUID
from deskwatch_collector.web.context import WebContext

logger = logging.getLogger(__name__)

ALERT_BATCH = 20


def _queue(view: View, request: Request, user: User) -> tuple[queue.Filters, queue.Page, queue.Counts]:
    q = view.query(request)
    f = queue.parse_filters(q, user, view.tz(request))
    with view.store(request).transaction(write=False) as tx:
        pg = queue.page(
            tx, f, kept_from=view.kept_from(request), before=queue.single(q, "before"),
            after=queue.single(q, "after"), limit=f.limit,
        )  # fmt: skip
        counts = queue.counts(tx, f)
    return f, pg, counts


def _latest_id(tx: Tx, user: User) -> int:
    where, params = queue.scope(user)
    row = tx.one(f"SELECT MAX(e.id) FROM events e WHERE {where}", params)
    return int(row[0]) if row and row[0] is not None else 0


def _position(tx: Tx, row_id: int) -> str:
    """The alert poll's position, sealed like a cursor (the id's gaps count other sites' findings)."""
    return queue.encode_cursor(queue.cursor_box(tx), 0.0, row_id)


def queue_page(view: View, request: Request, user: User) -> Response:
    if not user.is_supervisor:
        return RedirectResponse("/me", 303)
    f, pg, counts = _queue(view, request, user)
    with view.store(request).transaction(write=False) as tx:
        latest = _position(tx, _latest_id(tx, user))
        devices = tx.rows(
            f"SELECT device_id FROM devices WHERE site IN ({', '.join('?' for _ in user.sites)})"
            " ORDER BY device_id LIMIT 2000",
            list(user.sites),
        )
    return view.html(
        request, user, "queue.html", f=f, pg=pg, counts=counts, latest_id=latest,
        poll_seconds=view.settings.poll_seconds, device_names=[r[0] for r in devices], csv_max=queue.CSV_MAX_ROWS,
    )  # fmt: skip


def queue_api(view: View, request: Request, user: User) -> Response:
    _, pg, counts = _queue(view, request, user)
    return view.json(
        {
            "events": [queue.public(ev, user) for ev in pg.events],
            "newer": pg.newer,
            "older": pg.older,
            "counts": {"total": counts.total, "by_view": counts.by_view, "by_type": counts.by_type},
        }
    )


def queue_csv(view: View, request: Request, user: User) -> Response:
    view.supervisor(user)
    tz = view.tz(request)
    f = queue.parse_filters(view.query(request), user, tz)
    ctx = WebContext.of(request)
    with ctx.store.transaction(write=False) as tx:
        matching = queue.counts(tx, f).total
    if matching > queue.CSV_MAX_ROWS:  # a file cut at the cap would look complete
        raise queue.BadFilter(
            f"the export holds at most {queue.CSV_MAX_ROWS:,} findings and this filter matches {matching:,}:"
            " narrow it (dates, sites, rules) and export in parts"
        )
    lines = queue.csv_lines(ctx.store, f, tz, kept_from=view.kept_from(request), limit=queue.CSV_MAX_ROWS)

    async def chunks() -> AsyncIterator[bytes]:
        # One page per step on the server's database threads (WebContext.run's limit), each in
        # its own short transaction: a slow client holds neither a thread nor a connection.
        while (text := await ctx.run(next, lines, None)) is not None:
            yield text.encode("utf-8")

    name = f"deskwatch-{f.view}-{local(view.now(request), tz).date().isoformat()}.csv"
    logger.info("%s exported the %s queue as CSV", user.username, f.view)
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def latest_api(view: View, request: Request, user: User) -> Response:
    """Open events newer than ``after_id`` (the page's alerts: a ``latest_id`` this API or the
    queue page gave, or ``0`` for all), and the position of the newest there is."""
    view.supervisor(user)
    text = request.query_params.get("after_id", "0")
    where, params = queue.scope(user)
    with view.store(request).transaction(write=False) as tx:
        after = 0 if text == "0" else queue.decode_cursor(queue.cursor_box(tx), text, "after_id")[1]
        rows = tx.rows(
            f"SELECT {queue.EVENT_COLUMNS} FROM events e LEFT JOIN evidence v ON v.event_id = e.event_id"
            f" WHERE {where} AND e.id > ? AND e.review_state = 'open' ORDER BY e.id DESC LIMIT ?",
            (*params, after, ALERT_BATCH),
        )
        latest = _position(tx, max(_latest_id(tx, user), after))
    kept_from = view.kept_from(request)
    events = [queue.public(queue.event_row(r, kept_from)) for r in rows]
    return view.json({"latest_id": latest, "events": events})


def _event(view: View, request: Request, user: User) -> dict[str, Any] | None:
    event_id = str(request.path_params["event_id"]).lower()
    if not UUID.match(event_id):
        return None
    kept_from = view.kept_from(request)
    with view.store(request).transaction(write=False) as tx:
        ev = detail.find_event(tx, user, event_id, kept_from=kept_from)
        if ev is None:
            return None
        ev["scan"] = detail.scan_of(tx, ev["site"], ev["device_id"], ev["scan_id"])
        ev["history"] = detail.device_history(tx, user, ev["site"], ev["device_id"], kept_from=kept_from)
        ev["trail"] = detail.trail(tx, event_id)
    worker.annotate(ev, view.settings.retention_days, view.now(request))
    return ev


def event_page(view: View, request: Request, user: User) -> Response:
    ev = _event(view, request, user)
    if ev is None:
        return view.error(request, user, 404, "No such event", "It does not exist or is not one of yours.")
    if not user.is_supervisor:
        return RedirectResponse(f"/me#{ev['event_id']}", 303)
    f = queue.parse_filters(view.query(request), user, view.tz(request))
    with view.store(request).transaction(write=False) as tx:
        older = queue.neighbour(tx, f, ev, newer=False)
        newer = queue.neighbour(tx, f, ev, newer=True)
    nav = {
        "older_url": f"/events/{older['event_id']}?{f.qs()}" if older else None,
        "newer_url": f"/events/{newer['event_id']}?{f.qs()}" if newer else None,
    }
    return view.html(
        request, user, "event.html", ev=ev, f=f, nav=nav, scan=ev["scan"], history=ev["history"], trail=ev["trail"],
        days_left=ev["days_left"], retention_days=view.settings.retention_days,
    )  # fmt: skip


def event_api(view: View, request: Request, user: User) -> Response:
    ev = _event(view, request, user)
    return view.json(queue.public(ev, user)) if ev else view.json({"error": "no such event"}, 404)


def picture(view: View, request: Request, user: User) -> Response:
    """The picture sent with an event the account may see (the pages' ``<img>``, the desk window),
    while it is within the retention: the purge runs only every ``--purge-every``."""
    event_id = str(request.path_params["event_id"]).lower()
    if not UUID.match(event_id):
        return view.json({"error": "not found"}, 404)
    where, params = queue.scope(user)
    with view.store(request).transaction(write=False) as tx:
        row = tx.one(
            "SELECT v.data FROM evidence v JOIN events e ON e.event_id = v.event_id"
            f" WHERE {where} AND v.event_id = ? AND v.state = 'verified' AND v.captured_ts >= ?",
            (*params, event_id, view.kept_from(request)),
        )
    if row is None:
        return view.json({"error": "no picture (not received, not yours to see, or deleted)"}, 404)
    return Response(bytes(row[0]), 200, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


def review_api(view: View, request: Request, user: User) -> Response:
    """``{"action": "acknowledge" | "dismiss" | "reopen", "reason": key (dismiss), "note": text}``."""
    return _change(
        view, request, user,
        lambda tx, event_id, data, note: review.review(
            tx, user, event_id, data.get("action"), data.get("reason"), note, view.now(request)
        ),
    )  # fmt: skip


def contest_api(view: View, request: Request, user: User) -> Response:
    """``{"note": why the finding is wrong}`` from the worker it names."""
    return _change(
        view,
        request,
        user,
        lambda tx, event_id, data, note: review.contest(tx, user, event_id, note, view.now(request)),
    )


def _change(
    view: View, request: Request, user: User, apply: Callable[[Tx, str, dict[str, Any], str], None]
) -> Response:
    """One review or contest: the body's note cleaned, the change in one transaction, then
    the event as this account may see it."""
    event_id = str(request.path_params["event_id"]).lower()
    data = view.body(request)
    note = review.clean_note(data.get("note"))
    if not UUID.match(event_id):
        raise review.ReviewRefused(404, "no such event")
    with view.store(request).transaction() as tx:
        apply(tx, event_id, data, note)
    ev = _event(view, request, user)
    return view.json(queue.public(ev, user)) if ev else view.json({"error": "no such event"}, 404)
