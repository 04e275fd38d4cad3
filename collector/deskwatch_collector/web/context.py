"""What every route needs: the store (reached from worker threads), the signed-in user,
the clock, and the strict JSON and HTML responses.

Routes are ``async``; the store is synchronous (sqlite3, psycopg), so every query runs
through :meth:`WebContext.run` on a bounded number of threads (the pool's size): a flood
of requests queues for the database instead of opening connections or threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import Response

from deskwatch_contract.jsonutil import dumps_bytes

from .. import auth
from ..store import Store
from .throttle import HashGate, LoginThrottle, SharedThrottle

T = TypeVar("T")
COOKIE = "dw_session"
# Over HTTPS the cookie has the __Host- prefix: a browser then takes it only Secure, for Path=/
# and without a Domain, so a sibling subdomain (another app of the company) cannot toss a
# Domain= cookie of that name over the session (the browser would send both, and the server
# would have taken the last, signing the supervisor in as the other app's author). Plain HTTP
# (tests, make demo, a loopback console) keeps the plain name: a browser refuses Secure there.
HOST_COOKIE = "__Host-" + COOKIE


@dataclass
class WebSettings:
    cookie_secure: bool = False
    db_threads: int = 8
    idle_seconds: float = auth.IDLE_SECONDS  # a session ends after this long without the person's requests


@dataclass
class WebContext:
    store: Store
    settings: WebSettings = field(default_factory=WebSettings)
    throttle: LoginThrottle | SharedThrottle = field(default_factory=LoginThrottle)
    hashes: HashGate = field(default_factory=HashGate)
    wall: Callable[[], float] = time.time
    health: Callable[[], dict[str, Any]] | None = None  # the intake's state, for /healthz
    _limiter: anyio.CapacityLimiter | None = None

    @staticmethod
    def of(request: Request) -> WebContext:
        ctx: WebContext = request.app.state.ctx
        return ctx

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (a query) on one of ``db_threads`` threads."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.settings.db_threads)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def user(self, request: Request, *, activity: bool = True) -> auth.User | None:
        """The signed-in account. ``activity``: the request is the person's, so it keeps the session
        from its idle timeout (the console's background poll is not). A session that just ended
        leaves why in ``request.state.signed_out`` (``"idle"``, ``"expired"``)."""
        token = session_token(request)
        if not token:
            return None
        user, why = await self.run(
            partial(auth.check_session, idle_seconds=self.settings.idle_seconds, activity=activity),
            self.store, token, self.wall(),
        )  # fmt: skip
        request.state.signed_out = why
        return user

    def cookie(self, value: str, max_age: int | None = None, *, https: bool = False) -> str:
        """The session cookie. Without ``max_age`` it lasts until the browser closes (the session
        itself ends on the server after ``auth.SESSION_SECONDS``): a supervisor who closes the
        browser on a shared PC instead of signing out leaves no one signed in. ``0`` deletes it.
        Secure, and named :data:`HOST_COOKIE`, when the browser spoke HTTPS or ``--cookie-secure``."""
        secure = self.settings.cookie_secure or https
        lasts = f"; Max-Age={max_age}" if max_age is not None else ""
        name = HOST_COOKIE if secure else COOKIE
        return f"{name}={value}; Path=/; HttpOnly; SameSite=Strict{lasts}{'; Secure' if secure else ''}"


def session_token(request: Request) -> str | None:
    """The session cookie's value, read as browsers write the header (Starlette's parser): the
    stdlib's SimpleCookie stops at the first cookie it cannot parse, so a cookie another web
    app on the same host set (``prefs={"theme":"dark"}``, a value with a space) hid the
    session, and the supervisor was sent back to the sign-in form after every sign-in.

    Over HTTPS only :data:`HOST_COOKIE` is read: a plain ``dw_session`` there is another site's."""
    secure = WebContext.of(request).settings.cookie_secure or browser_https(request)
    return request.cookies.get(HOST_COOKIE if secure else COOKIE) or None


def signed_out_why(request: Request) -> str | None:
    """Why the request's session just ended (``"idle"``, ``"expired"``), if it did."""
    return getattr(request.state, "signed_out", None)


def browser_https(request: Request) -> bool:
    """The browser spoke HTTPS (the guard decided: directly, or through a trusted proxy)."""
    return bool(getattr(request.state, "browser_https", False))


def client_address(request: Request) -> str:
    """The address the guard resolved (trusted proxies applied)."""
    return str(getattr(request.state, "client_address", None) or (request.client.host if request.client else "?"))


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    """Strict JSON: a NaN that slipped into the database becomes an error here, never invalid JSON."""
    return Response(dumps_bytes(obj), status, headers=headers, media_type="application/json")


def html_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status, headers=headers, media_type="text/html; charset=utf-8")


__all__ = [
    "COOKIE", "HOST_COOKIE", "WebContext", "WebSettings", "browser_https", "client_address", "html_response", "json_response",
    "signed_out_why",
]  # fmt: skip
