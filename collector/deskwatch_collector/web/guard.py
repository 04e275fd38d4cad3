"""The ASGI layer in front of every route: who is asking, how much at once, how slowly.

The server (hypercorn) already closes a connection that has not sent a complete request
head within its keep-alive timeout (slowloris). Everything after the head is ours:

- **client address**: the peer, or, when the peer is a trusted proxy, the right-most
  ``X-Forwarded-For`` entry that is not itself a trusted proxy (the left part of that
  header is whatever the client wrote);
- **bounded concurrency**: at most ``per_address`` requests at once from one client, at
  most ``max_body_readers`` bodies being received and ``max_requests`` requests in the
  routes; more are answered 503/429 at once. A slow body holds a reader slot, never a
  route slot, so half-sent POSTs cannot take the page's GETs down with them. Every
  response is short (the console polls; there is no long-lived stream), so every request
  is counted;
- **bodies read here, whole, before the route runs**: at most ``max_body_bytes``, within
  ``body_seconds``; a half-sent body costs one coroutine for that long, never a thread,
  and the route always sees a complete body;
- **no state change from another site**: a request that is not GET/HEAD/OPTIONS is refused
  (403) when the browser says it was sent by another site's page (``Sec-Fetch-Site``
  ``cross-site`` or ``same-site``); a form on any web page could otherwise sign the
  supervisor's browser into the attacker's account (``/login``) or out of their own. The
  JSON APIs need this less (a form cannot send JSON) but get it too. Requests a browser
  did not make carry no such header and pass (the API, scripts, the tests);
- **headers on every response**: a strict Content-Security-Policy and friends, and HSTS
  to a browser that spoke HTTPS;
- **whether the browser spoke HTTPS** (to us, or to a trusted proxy that says so in
  ``X-Forwarded-Proto``): the session cookie is then ``Secure`` and ``__Host-`` without
  ``--cookie-secure``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from deskwatch_contract.jsonutil import dumps_bytes

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# Sent only to a browser that spoke HTTPS (directly or through a trusted proxy): it makes the
# browser use https:// for this host for a year, so the name typed without it (or a link, or
# an attacker on the office network) never reaches the console, or its cookie, in plain HTTP.
# No includeSubDomains: other hosts of the domain are not the collector's to decide.
HSTS = b"max-age=31536000"
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


@dataclass(frozen=True)
class GuardLimits:
    max_requests: int = 64
    max_body_readers: int = 32
    per_address: int = 8
    max_body_bytes: int = 16 * 1024
    body_seconds: float = 10.0
    trusted_proxies: tuple[Network, ...] = ()


def parse_networks(texts: list[str]) -> tuple[Network, ...]:
    """``10.0.0.5``, ``10.0.0.0/8`` or ``::1``; raises ValueError naming the bad entry."""
    out = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {text!r}") from None
    return tuple(out)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(scope: Scope, proxies: tuple[Network, ...]) -> str:
    peer = str((scope.get("client") or ("unknown", 0))[0])
    if not proxies or not _trusted(peer, proxies):
        return peer
    forwarded = b",".join(v for k, v in scope.get("headers", []) if k == b"x-forwarded-for").decode("latin-1")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # garbage where an address should be: trust nothing the client wrote
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


def browser_https(scope: Scope, proxies: tuple[Network, ...]) -> bool:
    """Whether the browser spoke HTTPS: to this server, or to a trusted proxy in front that
    says so in ``X-Forwarded-Proto`` (its right-most value: what the nearest proxy saw)."""
    if scope.get("scheme") == "https":
        return True
    peer = str((scope.get("client") or ("unknown", 0))[0])
    if not proxies or not _trusted(peer, proxies):
        return False
    said = b",".join(v for k, v in scope.get("headers", []) if k == b"x-forwarded-proto").decode("latin-1")
    hops = [h.strip().lower() for h in said.split(",") if h.strip()]
    return bool(hops) and hops[-1] == "https"


class _Refused(Exception):
    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
OWN_ORIGIN = (b"same-origin", b"none")  # Sec-Fetch-Site of the console's own pages, or a typed URL


def _same_origin(scope: Scope) -> None:
    """Refuse a state-changing request a browser sent from another site's page."""
    if scope.get("method") in SAFE_METHODS:
        return
    fetch_site = next((v for k, v in scope.get("headers", []) if k == b"sec-fetch-site"), None)
    if fetch_site is not None and fetch_site.strip().lower() not in OWN_ORIGIN:
        raise _Refused(
            403,
            "refused: this request was sent by a page of another web site; use the console's own pages",
            "cross_site",
        )


@dataclass
class GuardStats:
    in_progress: int = 0
    reading_bodies: int = 0
    refused: Counter[str] = field(default_factory=Counter)


class Guard:
    def __init__(self, app: ASGIApp, limits: GuardLimits | None = None) -> None:
        self.app = app
        self.limits = limits or GuardLimits()
        self.stats = GuardStats()
        self._per_address: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = client_address(scope, self.limits.trusted_proxies)
        scope.setdefault("state", {})["client_address"] = address
        scope["state"]["browser_https"] = browser_https(scope, self.limits.trusted_proxies)
        send = self._with_headers(send, scope["state"]["browser_https"])
        if self._per_address[address] >= self.limits.per_address:
            await self._refuse(
                send, _Refused(429, "too many requests at once from your address", "per_address"), address
            )
            return
        self._per_address[address] += 1
        try:
            try:
                _same_origin(scope)
                receive = await self._buffered_body(scope, receive)
                self._admit()
            except _Refused as refused:
                await self._refuse(send, refused, address)
                return
            try:
                await self.app(scope, receive, send)
            finally:
                self.stats.in_progress -= 1
        finally:
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]

    def _admit(self) -> None:
        if self.stats.in_progress >= self.limits.max_requests:
            raise _Refused(503, "the server is busy; try again in a few seconds", "busy")
        self.stats.in_progress += 1

    async def _buffered_body(self, scope: Scope, receive: Receive) -> Receive:
        headers = dict(scope.get("headers", []))
        length_text = headers.get(b"content-length")
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                raise _Refused(400, "bad Content-Length", "bad_length") from None
            if length > self.limits.max_body_bytes:
                raise _Refused(413, f"the body may have at most {self.limits.max_body_bytes} bytes", "too_large")
        more = scope.get("method") not in SAFE_METHODS
        if not more:
            return receive
        if self.stats.reading_bodies >= self.limits.max_body_readers:
            raise _Refused(503, "the server is busy; try again in a few seconds", "busy_bodies")
        self.stats.reading_bodies += 1
        try:
            body = await self._read_body(receive)
        finally:
            self.stats.reading_bodies -= 1
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def buffered() -> Message:
            return replay.pop() if replay else await receive()

        return buffered

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.limits.body_seconds
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise _Refused(408, "the request body took too long", "slow_body") from None
            if message["type"] == "http.disconnect":
                raise _Refused(400, "the client went away", "disconnect")
            body = message.get("body", b"")
            size += len(body)
            if size > self.limits.max_body_bytes:
                raise _Refused(413, f"the body may have at most {self.limits.max_body_bytes} bytes", "too_large")
            chunks.append(body)
            more = bool(message.get("more_body", False))
        return b"".join(chunks)

    def _with_headers(self, send: Send, https: bool = False) -> Send:
        """Every answer gets :data:`SECURITY_HEADERS`; one to a browser that spoke HTTPS also HSTS."""

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                if https and b"strict-transport-security" not in present:
                    headers.append((b"strict-transport-security", HSTS))
                message["headers"] = headers
            await send(message)

        return wrapped

    async def _refuse(self, send: Send, refused: _Refused, address: str) -> None:
        self.stats.refused[refused.reason] += 1
        now = time.monotonic()
        if now - self._last_log.get(refused.reason, -1e9) > 60:
            self._last_log[refused.reason] = now
            logger.warning(
                "web: refused a request from %s (%s: %s); %d refused so far for this reason",
                address,
                refused.reason,
                refused.message,
                self.stats.refused[refused.reason],
            )
        body = dumps_bytes({"error": refused.message})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if refused.status in (503, 429):
            headers.append((b"retry-after", b"5"))
        if refused.status in (408, 413, 400):
            headers.append((b"connection", b"close"))
        try:
            await send({"type": "http.response.start", "status": refused.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except OSError:
            pass
