"""The JSON API, the evidence photos and the live stream (server-sent events).

Every route needs a session (401 otherwise). POSTs must be JSON: a cross-site form
cannot send ``application/json`` without CORS, and the cookie is SameSite=Strict.

The live stream is one coroutine per open page: it wakes when this process commits an
event (:class:`Hub`) and also polls every ``stream_poll_seconds``, so events stored by
another collector sharing the database appear too. Streams are limited per user and in
total; each ends with its session (re-checked every ``session_recheck_seconds``) and
when the server stops.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from deskwatch_contract.jsonutil import dumps

from .. import auth
from ..store import Tx
from ..validate import UUID
from .context import WebContext, json_response
from .queries import query_event, query_events, query_fleet, scope_sql

logger = logging.getLogger("deskwatch_collector.web")

MAX_NOTE = 500
LOOKBACK_IDS = 1000  # PostgreSQL identity values can commit out of order across collectors
KEEPALIVE_SECONDS = 15.0


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _unauthorised() -> Response:
    return json_response(401, {"error": "sign in first"})


async def events(request: Request) -> Response:
    ctx = WebContext.of(request)
    user = await ctx.user(request)
    if user is None:
        return _unauthorised()
    limit = max(1, min(500, _int(request.query_params.get("limit"), 100)))
    after = max(0, _int(request.query_params.get("after_id"), 0))
    found = await ctx.read(lambda tx: query_events(tx, user, after_id=after, limit=limit))
    return json_response(200, {"events": found})


async def fleet(request: Request) -> Response:
    ctx = WebContext.of(request)
    user = await ctx.user(request)
    if user is None:
        return _unauthorised()
    if not user.is_supervisor:
        return json_response(403, {"error": "supervisors only"})
    devices = await ctx.read(query_fleet, user, ctx.wall())
    return json_response(200, {"devices": devices})


async def evidence(request: Request) -> Response:
    ctx = WebContext.of(request)
    user = await ctx.user(request)
    if user is None:
        return _unauthorised()
    event_id = str(request.path_params["event_id"]).lower()
    if not UUID.match(event_id):
        return json_response(404, {"error": "not found"})
    scope, params = scope_sql(user)
    row = await ctx.read(
        lambda tx: tx.one(
            "SELECT v.data FROM evidence v JOIN events e ON e.event_id = v.event_id"
            f" WHERE {scope} AND v.event_id = ? AND v.state = 'verified'",
            (*params, event_id),
        )
    )
    if row is None:
        return json_response(404, {"error": "no evidence (not received, not allowed or purged)"})
    return Response(bytes(row[0]), 200, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


async def _json_body(request: Request) -> dict[str, Any] | Response:
    if not request.headers.get("content-type", "").startswith("application/json"):
        return json_response(415, {"error": "send JSON"})
    try:
        data = json.loads(await request.body())
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return json_response(400, {"error": "body must be a JSON object"})
    note = data.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        return json_response(400, {"error": f"note must be text of at most {MAX_NOTE} characters"})
    data["note"] = note.strip()
    return data


def _mark(tx: Tx, user: auth.User, event_id: str, assignments: str, values: tuple[Any, ...]) -> dict[str, Any] | None:
    scope, params = scope_sql(user)
    n = tx.execute(
        f"UPDATE events SET {assignments}"
        f" WHERE event_id = ? AND id IN (SELECT e.id FROM events e WHERE {scope} AND e.event_id = ?)",
        (*values, event_id, *params, event_id),
    )
    return query_event(tx, user, event_id) if n else None


async def review(request: Request) -> Response:
    ctx = WebContext.of(request)
    user = await ctx.user(request)
    if user is None:
        return _unauthorised()
    data = await _json_body(request)
    if isinstance(data, Response):
        return data
    if not user.is_supervisor:
        return json_response(403, {"error": "supervisors only"})
    states = {"acknowledge": "acknowledged", "dismiss": "dismissed"}
    action = data.get("action")
    if action not in states:
        return json_response(400, {"error": "action must be acknowledge or dismiss"})
    event_id = str(request.path_params["event_id"]).lower()
    event = await ctx.write(
        _mark,
        user,
        event_id,
        "review_state = ?, review_note = ?, reviewed_by = ?, reviewed_at = ?",
        (states[action], data["note"] or None, user.username, ctx.wall()),
    )
    if event is None:
        return json_response(404, {"error": "no such event"})
    logger.info("event %s %s by %s", event_id, states[action], user.username)
    return json_response(200, event)


async def contest(request: Request) -> Response:
    ctx = WebContext.of(request)
    user = await ctx.user(request)
    if user is None:
        return _unauthorised()
    data = await _json_body(request)
    if isinstance(data, Response):
        return data
    if user.is_supervisor:
        return json_response(403, {"error": "only the worker can contest a finding"})
    if not data["note"]:
        return json_response(400, {"error": "say why the finding is wrong"})
    event_id = str(request.path_params["event_id"]).lower()
    event = await ctx.write(
        _mark,
        user,
        event_id,
        "contest_note = ?, contested_by = ?, contested_at = ?",
        (data["note"], user.username, ctx.wall()),
    )
    if event is None:
        return json_response(404, {"error": "no such event"})
    logger.info("event %s contested by %s", event_id, user.username)
    return json_response(200, event)


def _recent(tx: Tx, user: auth.User, after_id: int) -> list[dict[str, Any]]:
    return query_events(tx, user, after_id=after_id, limit=500)


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: violation\nid: {e['id']}\ndata: {dumps(e)}\n\n".encode() for e in events)


async def stream(request: Request) -> Response:
    ctx = WebContext.of(request)
    user = await ctx.user(request)
    if user is None:
        return _unauthorised()
    settings = ctx.settings
    if sum(ctx.streams.values()) >= settings.max_streams:
        return json_response(503, {"error": "too many live pages open; try again later"}, {"Retry-After": "30"})
    if ctx.streams.get(user.username, 0) >= settings.streams_per_user:
        return json_response(429, {"error": f"at most {settings.streams_per_user} live pages per account"})
    ctx.streams[user.username] = ctx.streams.get(user.username, 0) + 1
    token = request.cookies.get("dw_session")
    return StreamingResponse(
        _violations(ctx, user, token),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store"},
    )


async def _violations(ctx: WebContext, user: auth.User, token: str | None) -> AsyncIterator[bytes]:
    try:
        version = ctx.hub.version
        backlog = await ctx.read(lambda tx: query_events(tx, user, limit=50))
        seen = {e["id"] for e in backlog}
        top = max(seen, default=0)
        yield b"retry: 3000\n\n" + _sse(list(reversed(backlog)))
        checked = last_sent = time.monotonic()
        while not (ctx.stopping is not None and ctx.stopping.is_set()):
            version = await ctx.hub.wait(version, ctx.settings.stream_poll_seconds)
            if ctx.stopping is not None and ctx.stopping.is_set():
                return
            if time.monotonic() - checked > ctx.settings.session_recheck_seconds:
                checked = time.monotonic()
                if await ctx.run(auth.session_user, ctx.store, token, ctx.wall()) is None:
                    return  # signed out, expired, password changed or account disabled
            fresh = await ctx.read(_recent, user, max(0, top - LOOKBACK_IDS))
            fresh = [e for e in reversed(fresh) if e["id"] not in seen]
            if fresh:
                seen.update(e["id"] for e in fresh)
                top = max(top, *(e["id"] for e in fresh))
                seen.difference_update([i for i in seen if i < top - 2 * LOOKBACK_IDS])
                last_sent = time.monotonic()
                yield _sse(fresh)
            elif time.monotonic() - last_sent > KEEPALIVE_SECONDS:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"
    finally:
        left = ctx.streams.get(user.username, 1) - 1
        if left > 0:
            ctx.streams[user.username] = left
        else:
            ctx.streams.pop(user.username, None)


ROUTES: list[BaseRoute] = [
    Route("/api/events", events, methods=["GET"]),
    Route("/api/fleet", fleet, methods=["GET"]),
    Route("/api/stream", stream, methods=["GET"]),
    Route("/api/events/{event_id}/review", review, methods=["POST"]),
    Route("/api/events/{event_id}/contest", contest, methods=["POST"]),
    Route("/evidence/{event_id}", evidence, methods=["GET"]),
]
