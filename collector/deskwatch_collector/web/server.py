"""The collector's web server: a Starlette app on hypercorn, in a thread of the collector.

The app is sign-in, sign-out, ``/healthz`` and ``/static`` (:mod:`.pages`) plus the routes
it is given (``extra_routes``: the console, :mod:`deskwatch_collector.console.routes`),
all behind the :class:`Guard`.

Why hypercorn (measured on this project's machine, see ``docs/central/collector.md``):
it closes a connection that has not sent a whole request head within its keep-alive
timeout, counted from the accept (300 slowloris connections were closed after 5 s and
the page kept answering), and requests are coroutines, not threads. uvicorn arms no
timer before the first response (the same 300 connections were held for as long as the
client liked), and a threaded WSGI server holds a thread per slow client. What hypercorn
leaves open, the :class:`Guard` closes: bounded concurrency, body size and deadline,
client address behind a trusted proxy, headers.

The socket is bound in :meth:`SupervisorServer.__init__`, so a port in use fails at once
(the CLI exits 69), and port 0 gives a free port (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from ..store import Store, StoreUnavailable
from . import pages
from .context import WebContext, WebSettings, json_response
from .guard import Guard, GuardLimits
from .throttle import HashGate, LoginThrottle, SharedThrottle, ThrottleLimits

logger = logging.getLogger("deskwatch_collector.web")

KEEP_ALIVE_SECONDS = 5.0  # also the deadline for a complete request head
GRACEFUL_SECONDS = 3.0


async def _unavailable(request: Request, exc: Exception) -> Response:
    return json_response(503, {"error": "database unavailable, try again"}, {"Retry-After": "5"})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return json_response(status, {"error": "not found" if status == 404 else str(getattr(exc, "detail", "error"))})


async def _internal(request: Request, exc: Exception) -> Response:
    logger.error("supervisor page failed on %s %s: %r", request.method, request.url.path, exc)
    return json_response(500, {"error": "internal error"})


def build_app(ctx: WebContext, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """Sign-in, sign-out, ``/healthz``, ``/static`` and ``extra_routes`` (the console's), with
    ``ctx`` in app state."""
    routes: list[BaseRoute] = [
        *pages.ROUTES,
        *extra_routes,
        Mount("/static", app=StaticFiles(packages=[("deskwatch_collector", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={StoreUnavailable: _unavailable, HTTPException: _http_error, Exception: _internal},
    )
    app.state.ctx = ctx
    return app


class SupervisorServer:
    def __init__(
        self,
        address: tuple[str, int],
        store: Store,
        *,
        cookie_secure: bool = False,
        wall: Callable[[], float] = time.time,
        settings: WebSettings | None = None,
        limits: GuardLimits | None = None,
        throttle: ThrottleLimits | None = None,
        hash_workers: int = 2,
        extra_routes: Sequence[BaseRoute] = (),
        health: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        settings = settings or WebSettings()
        settings.cookie_secure = settings.cookie_secure or cookie_secure
        # On PostgreSQL the collectors behind a load balancer share the database, and so the
        # sign-in counts: each process counting alone gave N collectors N times the guesses.
        counts = SharedThrottle(store, throttle) if store.backend == "postgresql" else LoginThrottle(throttle)
        self.ctx = WebContext(store, settings, counts, HashGate(hash_workers, 4 * hash_workers), wall, health)
        self.guard = Guard(build_app(self.ctx, extra_routes), limits)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind(address)
            self._sock.listen(128)
        except OSError:
            self._sock.close()
            raise
        self._sock.set_inheritable(True)
        self.server_address = self._sock.getsockname()[:2]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def _config(self) -> Config:
        config = Config()
        # hypercorn wraps the descriptor it is given and closes it when it stops: give it a duplicate
        config.bind = [f"fd://{os.dup(self._sock.fileno())}"]
        config.keep_alive_timeout = KEEP_ALIVE_SECONDS
        config.graceful_timeout = GRACEFUL_SECONDS
        config.h11_max_incomplete_size = 16 * 1024
        config.accesslog = None
        config.errorlog = logging.getLogger("deskwatch_collector.web.server")
        config.include_server_header = False
        return config

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._shutdown = asyncio.Event()

        async def main() -> None:
            self._started.set()
            await serve(self.guard, self._config(), shutdown_trigger=self._shutdown.wait)  # type: ignore[arg-type, union-attr]

        try:
            loop.run_until_complete(main())
        except Exception:
            logger.exception("the supervisor page's server stopped")
        finally:
            self._started.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="collector-web", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def stop(self) -> None:
        loop, shutdown = self._loop, self._shutdown
        if loop is not None and not loop.is_closed() and shutdown is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(shutdown.set)
        if self._thread is not None:
            self._thread.join(GRACEFUL_SECONDS + 5)
        self.ctx.hashes.close()
        with contextlib.suppress(OSError):
            self._sock.close()
