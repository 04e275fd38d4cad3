"""What every console route shares: the signed-in account, the database on the web
server's bounded threads, the viewer's time zone, templates, and errors in words.

A route is a plain function ``handler(view, request, user) -> Response``; :meth:`View.route`
turns it into a Starlette endpoint that looks up the session, runs the handler on one
of the server's database threads (:meth:`WebContext.run`: the queries block), and maps
:class:`~.queue.BadFilter` to 400, :class:`~.review.ReviewRefused` to its status and an
unavailable database to 503 - as JSON under ``/api``, for pictures and for the CSV, as a page
elsewhere.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from deskwatch_collector.auth import User
from deskwatch_collector.console import accuracy, fleet, queue, timefmt
from deskwatch_collector.console.review import ReviewRefused
from deskwatch_collector.console.vocab import (
    DISMISS_REASONS,
    QUEUE_VIEW_LABELS,
    QUEUE_VIEWS,
    RULE_LABELS,
    STATE_LABELS,
    WRONG_REASONS,
    reason_label,
)
from deskwatch_collector.retention import DAY
from deskwatch_collector.store import Store, StoreUnavailable
from deskwatch_collector.web.context import WebContext, signed_out_why
from deskwatch_collector.web.pages import signed_out_message
from deskwatch_contract.jsonutil import dumps_bytes

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
TZ_COOKIE = "dw_tz"
LEVEL_LABELS = {
    "offline": "Offline",
    "fault": "Fault",
    "paused": "Paused",
    "attention": "Attention",
    "online": "Online",
}
REASON_SHORT = {
    "false_detection": "nothing there",
    "misread_object": "misread",
    "wrong_person": "not the worker",
    "camera_problem": "camera",
    "allowed": "allowed",
    "duplicate": "duplicate",
    "other": "other",
    "none": "no reason",
}

Handler = Callable[["View", Request, User], Response]


@dataclass
class ConsoleSettings:
    retention_days: float = 20.0  # the collector's evidence retention (for "deleted in N days")
    noisy_threshold: float = accuracy.NOISY_DEFAULT
    noisy_days: int = 30  # the window of the fleet's and the device page's noisy-rule flags
    poll_seconds: float = 5.0  # how often an open page asks for new open events (alerts)


def worker_state(ev: dict[str, Any]) -> str:
    """The review as the worker reads it."""
    if ev["review_state"] == "acknowledged":
        return f"Upheld by your supervisor ({ev['reviewed_by']})."
    if ev["review_state"] == "dismissed":
        return f"Dismissed by your supervisor: {reason_label(ev['review_reason']) or 'no reason given'}."
    return "Not reviewed yet."


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        show=timefmt.show,
        iso=timefmt.iso_utc,
        ago=timefmt.ago,
        rule_labels=RULE_LABELS,
        state_labels=STATE_LABELS,
        view_labels=QUEUE_VIEW_LABELS,
        views=QUEUE_VIEWS,
        reasons=DISMISS_REASONS,
        level_labels=LEVEL_LABELS,
        levels=fleet.LEVELS,
        reason_short=REASON_SHORT,
        worker_state=worker_state,
        min_reviewed=accuracy.MIN_REVIEWED,
        wrong_reasons=WRONG_REASONS,
        right_reasons=tuple(k for k in REASON_SHORT if k not in WRONG_REASONS),
    )
    return env


class View:
    def __init__(self, settings: ConsoleSettings | None = None) -> None:
        self.settings = settings or ConsoleSettings()
        self.env = environment()

    # -- routing ---------------------------------------------------------------------------
    def route(
        self, path: str, handler: Handler, methods: tuple[str, ...] = ("GET",), *, background: bool = False
    ) -> Route:
        """``background``: a page's script asks this by itself (the alert poll), so it does not
        keep the session from its idle timeout."""

        async def endpoint(request: Request) -> Response:
            ctx = WebContext.of(request)
            request.state.body = await request.body() if request.method == "POST" else b""
            try:
                user = await ctx.user(request, activity=not background)
            except StoreUnavailable:  # the session is looked up first: answer as a page would
                if self._api(request):
                    return self.json({"error": "database unavailable, try again"}, 503)
                return self.error(request, None, 503, "Database unavailable", "Try again in a moment.")
            return await ctx.run(self._call, handler, request, user)

        endpoint.__name__ = handler.__name__
        return Route(path, endpoint, methods=list(methods))

    @staticmethod
    def _api(request: Request) -> bool:
        """Answered in JSON (the API, pictures, the CSV), not as a page."""
        path = request.url.path
        return path.startswith(("/api/", "/evidence/")) or path.endswith(".csv")

    def _call(self, handler: Handler, request: Request, user: User | None) -> Response:
        api = self._api(request)
        try:
            if user is None:
                why = signed_out_why(request)
                if api:
                    idle = WebContext.of(request).settings.idle_seconds
                    return self.json(
                        {"error": signed_out_message(why, idle) or "sign in first", "signed_out": why}, 401
                    )
                return RedirectResponse(f"/login?signed_out={why}" if why else "/login", 303)
            return handler(self, request, user)
        except queue.BadFilter as exc:
            return (
                self.json({"error": str(exc)}, 400)
                if api
                else self.error(request, user, 400, "Cannot show that", str(exc))
            )
        except ReviewRefused as exc:
            return (
                self.json({"error": str(exc)}, exc.status)
                if api
                else self.error(request, user, exc.status, "Not allowed", str(exc))
            )
        except StoreUnavailable:
            if api:
                return self.json({"error": "database unavailable, try again"}, 503)
            return self.error(request, user, 503, "Database unavailable", "Try again in a moment.")
        except Exception:
            logger.exception("console failed on %s %s", request.method, request.url.path)
            if api:
                return self.json({"error": "internal error"}, 500)
            return self.error(request, None, 500, "Internal error", "The console failed; the collector's log says why.")

    # -- what handlers use -------------------------------------------------------------------
    @staticmethod
    def store(request: Request) -> Store:
        return WebContext.of(request).store

    @staticmethod
    def now(request: Request) -> float:
        return WebContext.of(request).wall()

    def kept_from(self, request: Request) -> float:
        """The capture time before which a picture is past the retention: it is neither served
        nor offered, although the purge (every ``--purge-every``) may not have deleted it yet."""
        return self.now(request) - self.settings.retention_days * DAY

    @staticmethod
    def tz(request: Request) -> ZoneInfo:
        return timefmt.zone(request.query_params.get("tz") or unquote(request.cookies.get(TZ_COOKIE) or ""))

    @staticmethod
    def query(request: Request) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in request.query_params.multi_items():
            out.setdefault(k, []).append(v)
        return out

    @staticmethod
    def body(request: Request) -> dict[str, Any]:
        """The JSON object a POST carried (a cross-site form cannot send JSON)."""
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise ReviewRefused(415, "send JSON")
        try:
            data = json.loads(request.state.body or b"")
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the interpreter goes
            data = None
        if not isinstance(data, dict):
            raise ReviewRefused(400, "body must be a JSON object")
        return data

    @staticmethod
    def supervisor(user: User) -> None:
        if not user.is_supervisor:
            raise ReviewRefused(403, "supervisors only")

    @staticmethod
    def json(obj: Any, status: int = 200) -> Response:
        return Response(dumps_bytes(obj), status, media_type="application/json")

    def html(self, request: Request, user: User, template: str, status: int = 200, **values: Any) -> Response:
        text = self.env.get_template(template).render(
            user=user, tz=self.tz(request), page_name=template.removesuffix(".html"), **values
        )
        return Response(text, status, media_type="text/html; charset=utf-8")

    def error(self, request: Request, user: User | None, status: int, title: str, message: str) -> Response:
        if user is None:
            return Response(f"{title}: {message}\n", status, media_type="text/plain; charset=utf-8")
        return self.html(request, user, "error.html", status, title=title, message=message)
