"""What the server answers besides the console: sign-in, sign-out and the health probe.

Sign-in order matters: the attempt is counted by the throttle *before* the password is
hashed (refunded on success), and the hash runs on the bounded :class:`HashGate`, so
neither parallel guesses nor a burst of slow logins can outrun the limits or the memory.
"""

from __future__ import annotations

import contextlib
import logging
from html import escape
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .. import auth
from ..store import StoreUnavailable
from .context import WebContext, browser_https, client_address, html_response, json_response, session_token
from .throttle import Attempt, HashBusy

logger = logging.getLogger("deskwatch_collector.web")


def login_page(error: str = "", notice: str = "") -> bytes:
    """The sign-in form (no script; the console's stylesheet). Supervisors and workers use it alike.
    ``notice``: why the person is here (their session ended), in words."""
    err = f"<p class=error role=alert>{escape(error)}</p>" if error else ""
    err += f"<p class=notice role=status>{escape(notice)}</p>" if notice else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1"><title>Sign in · deskwatch</title>'
        '<link rel=stylesheet href="/static/console.css"><link rel=icon href="/static/favicon.svg" type="image/svg+xml">'
        '</head><body><form class=login method=post action="/login"><h1>deskwatch</h1>'
        f"{err}<label for=username>User</label><input id=username name=username autocomplete=username required>"
        "<label for=password>Password</label>"
        "<input id=password name=password type=password autocomplete=current-password required>"
        "<button type=submit class=primary>Sign in</button></form></body></html>"
    ).encode()


async def healthz(request: Request) -> Response:
    """200 while messages are being stored and acknowledged; 503 with the kind of failure when
    not (never the database's own message: this route needs no sign-in)."""
    ctx = WebContext.of(request)
    state = ctx.health() if ctx.health is not None else {"ok": True}
    return json_response(200 if state.get("ok") else 503, state)


def signed_out_message(why: str | None, idle_seconds: float) -> str:
    """Why a session ended, for the person whose page it was (only the reasons the server gives)."""
    if why == "idle":
        return f"You were signed out after {duration(idle_seconds)} without activity. Sign in again to go on."
    if why == "expired":
        return f"You were signed out: a session lasts {auth.SESSION_SECONDS // 3600} hours. Sign in again to go on."
    return ""


def duration(seconds: float) -> str:
    if seconds >= 60:
        minutes = round(seconds / 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


async def login_form(request: Request) -> Response:
    ctx = WebContext.of(request)
    notice = signed_out_message(request.query_params.get("signed_out"), ctx.settings.idle_seconds)
    return html_response(200, login_page(notice=notice))


async def login_submit(request: Request) -> Response:
    ctx = WebContext.of(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    username = (form.get("username") or [""])[0][:64]
    password = (form.get("password") or [""])[0][: auth.MAX_PASSWORD]
    address, now = client_address(request), ctx.wall()
    try:  # counted in the database on PostgreSQL (SharedThrottle): on the database's threads
        attempt = await ctx.run(ctx.throttle.attempt, username, address, now)
    except StoreUnavailable as exc:
        return _no_database(username, address, exc)
    if attempt is None:
        logger.warning("sign-in for %r from %s refused: too many failures", username, address)
        page = login_page("Too many failed attempts. Wait a few minutes and try again.")
        return html_response(429, page, {"Retry-After": str(int(ctx.throttle.limits.window))})
    try:
        user = await ctx.hashes.run(auth.verify_login, ctx.store, username, password)
    except HashBusy:
        await _cancel(ctx, attempt)
        logger.warning("sign-in for %r from %s refused: too many sign-ins in progress", username, address)
        page = login_page("The server is busy. Try again in a few seconds.")
        return html_response(503, page, {"Retry-After": "5"})
    except StoreUnavailable as exc:
        await _cancel(ctx, attempt)  # no password was checked: not a failed guess
        return _no_database(username, address, exc)
    if user is None:
        logger.warning("failed sign-in for %r from %s", username, address)
        return html_response(401, login_page("Wrong user name or password."))
    try:
        await ctx.run(ctx.throttle.succeeded, attempt, ctx.wall())
        token = await ctx.run(auth.start_session, ctx.store, user.username, ctx.wall())
    except StoreUnavailable as exc:
        return _no_database(username, address, exc)
    logger.info("%s %s signed in from %s", user.role, user.username, address)
    return RedirectResponse("/", 303, headers={"Set-Cookie": ctx.cookie(token, https=browser_https(request))})


async def _cancel(ctx: WebContext, attempt: Attempt) -> None:
    """The attempt checked no password: refund it (with the database away it cannot be, and
    the row goes with the window)."""
    with contextlib.suppress(StoreUnavailable):
        await ctx.run(ctx.throttle.cancel, attempt)


def _no_database(username: str, address: str, exc: StoreUnavailable) -> Response:
    """The sign-in form again, saying why (the app's 503 for the database is JSON, which the
    browser showed as it came), with nothing counted against the account."""
    logger.warning("sign-in for %r from %s: the database is unavailable (%s)", username, address, exc.kind)
    page = login_page("The database is unavailable, so nobody can sign in just now. Try again in a minute.")
    return html_response(503, page, {"Retry-After": "5"})


async def logout(request: Request) -> Response:
    """End the session on the server and in the browser. The browser's cookie is cleared
    whatever the database says: a supervisor who signs out on a shared PC while the
    database is away must not leave the next person signed in once it is back."""
    ctx = WebContext.of(request)
    cleared = {"Set-Cookie": ctx.cookie("", 0, https=browser_https(request))}
    # The pages' Sign out button posts a form where no script runs: that browser goes to the form.
    page = not request.headers.get("content-type", "").startswith("application/json")
    try:
        await ctx.run(auth.logout, ctx.store, session_token(request))
    except StoreUnavailable as exc:
        logger.warning(
            "sign-out from %s while the database is unavailable (%s): the browser's cookie is cleared;"
            " the session itself ends when it expires (%d h)",
            client_address(request), exc.kind, auth.SESSION_SECONDS // 3600,
        )  # fmt: skip
        message = (
            "Signed out in this browser. The database is unavailable, so the server could not end the session;"
            f" it ends by itself within {auth.SESSION_SECONDS // 3600} hours."
        )
        if page:
            return html_response(503, login_page(message), {**cleared, "Retry-After": "5"})
        return json_response(503, {"error": message, "signed_out": True}, {**cleared, "Retry-After": "5"})
    if page:
        return RedirectResponse("/login", 303, headers=cleared)
    return json_response(200, {"ok": True}, cleared)


ROUTES: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
