"""The collector's web server: sign-in, the health probe, and the routes it is given (the
console, :mod:`deskwatch_collector.console`), behind protections every route shares.

A Starlette app served by hypercorn inside the collector process (see :mod:`.server` for
why). The modules, so that a new page adds routes without touching the protections:

- :mod:`.server`: :class:`SupervisorServer` (binds, runs the server in a thread, stops) and
  :func:`build_app`, which takes ``extra_routes``;
- :mod:`.guard`: what every request passes first (client address behind trusted proxies,
  bounded concurrency, bodies read whole with a size cap and a deadline, CSP headers);
- :mod:`.throttle`: sign-in throttling (counted before hashing) and the bounded hash gate;
- :mod:`.context`: :class:`WebContext` (store on bounded threads, signed-in user, clock)
  and the strict JSON response;
- :mod:`.pages`: sign-in, sign-out and ``/healthz``.
"""

from __future__ import annotations

from .context import WebContext, WebSettings
from .guard import GuardLimits
from .server import SupervisorServer, build_app
from .throttle import ThrottleLimits

__all__ = ["GuardLimits", "SupervisorServer", "ThrottleLimits", "WebContext", "WebSettings", "build_app"]
