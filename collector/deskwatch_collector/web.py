"""The supervisor page: stdlib ``ThreadingHTTPServer``, no web framework.

Why stdlib: the page has a handful of routes, server-sent events need nothing more than a
long-lived response, and every dependency the collector does not carry is one less thing
to patch. Live violations reach the browser over SSE: each stream wakes when this process
commits an event (``Hub.notify``) and also polls the database every second, so events
stored by another collector sharing the load appear too.

Access control: every route except ``/login`` and the static assets needs a session;
queries are scoped in SQL to the account's sites (and, for workers, their own
``worker_id``); POSTs must be JSON (a cross-site form cannot send that without CORS) and
the cookie is SameSite=Strict. Responses carry a strict Content-Security-Policy.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from deskwatch_collector import auth
from deskwatch_collector.ingest import missing_seqs
from deskwatch_collector.store import Store, StoreUnavailable, Tx
from deskwatch_collector.validate import UUID
from deskwatch_collector.webassets import APP_JS, CSS, app_page, login_page

logger = logging.getLogger(__name__)

COOKIE = "dw_session"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
MAX_BODY = 16 * 1024
MAX_NOTE = 500
SESSION_RECHECK_SECONDS = 30.0
LOOKBACK_IDS = 1000  # PostgreSQL identity values can commit out of order across collectors


class LoginThrottle:
    """At most ``limit`` failed sign-ins per user name, and ``address_limit`` per client address
    (several supervisors may share an office NAT), in ``window`` seconds."""

    def __init__(self, limit: int = 5, address_limit: int = 30, window: float = 300.0) -> None:
        self.limit = limit
        self.address_limit = address_limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def blocked(self, keys: list[str], now: float) -> bool:
        with self._lock:
            return any(
                len(self._recent(k, now)) >= (self.address_limit if k.startswith("addr:") else self.limit) for k in keys
            )

    def failed(self, keys: list[str], now: float) -> None:
        with self._lock:
            for k in keys:
                self._recent(k, now).append(now)
            if len(self._failures) > 10_000:  # forget idle keys
                for k in [k for k, v in self._failures.items() if not v]:
                    del self._failures[k]


class Hub:
    """Wakes the SSE streams of this process when events are committed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0

    def notify(self, event_ids: list[str] | None = None) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        with self._cond:
            if self._version == seen:
                self._cond.wait(timeout)
            return self._version


EVENT_COLUMNS = (
    "e.id, e.event_id, e.site, e.device_id, e.worker_id, e.type, e.detected_at, e.confidence, e.seq, e.replayed,"
    " e.evidence_reason, e.review_state, e.review_note, e.reviewed_by, e.reviewed_at, e.contest_note,"
    " e.contested_at, e.evidence_sha256, v.state"
)


def _scope(user: auth.User) -> tuple[str, list[Any]]:
    marks = ", ".join("?" for _ in user.sites)
    sql, params = f"e.site IN ({marks})", list(user.sites)
    if not user.is_supervisor:
        sql += " AND e.worker_id = ?"
        params.append(user.worker_id or "")
    return sql, params


def _event_json(row: tuple[Any, ...]) -> dict[str, Any]:
    (rid, event_id, site, device, worker, typ, detected, conf, seq, replayed, reason, state, note, by, at, contest,
     contested_at, sha, ev_state) = row  # fmt: skip
    has_photo = sha is not None and ev_state == "verified"
    if sha is not None and ev_state is None:
        reason = reason or "purged or not received"
    return {
        "id": rid,
        "event_id": event_id,
        "site": site,
        "device_id": device,
        "worker_id": worker,
        "type": typ,
        "detected_at": detected,
        "confidence": conf,
        "seq": seq,
        "replayed": bool(replayed),
        "evidence_url": f"/evidence/{event_id}" if has_photo else None,
        "evidence_reason": reason,
        "review_state": state,
        "review_note": note,
        "reviewed_by": by,
        "reviewed_at": at,
        "contest_note": contest,
        "contested_at": contested_at,
    }


def query_events(tx: Tx, user: auth.User, *, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    scope, params = _scope(user)
    rows = tx.rows(
        f"SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN evidence v ON v.event_id = e.event_id"
        f" WHERE {scope} AND e.id > ? ORDER BY e.id DESC LIMIT ?",
        (*params, after_id, limit),
    )
    return [_event_json(r) for r in rows]


def query_event(tx: Tx, user: auth.User, event_id: str) -> dict[str, Any] | None:
    scope, params = _scope(user)
    row = tx.one(
        f"SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN evidence v ON v.event_id = e.event_id"
        f" WHERE {scope} AND e.event_id = ?",
        (*params, event_id),
    )
    return _event_json(row) if row else None


def query_fleet(tx: Tx, user: auth.User, now: float) -> list[dict[str, Any]]:
    marks = ", ".join("?" for _ in user.sites)
    rows = tx.rows(
        "SELECT site, device_id, state, session, version, profile, since, reasons, status_at, health, health_at,"
        f" last_seq, last_event_at FROM devices WHERE site IN ({marks}) ORDER BY site, device_id",
        list(user.sites),
    )
    gaps: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for site in user.sites:
        gaps.update(missing_seqs(tx, site))
    out = []
    for (
        site,
        device,
        state,
        session,
        version,
        profile,
        since,
        reasons,
        status_at,
        health,
        health_at,
        last_seq,
        _,
    ) in rows:
        missing = sum(b - a + 1 for a, b in gaps.get((site, device), []))
        out.append(
            {
                "site": site,
                "device_id": device,
                "state": state,
                "session": session,
                "version": version,
                "profile": profile,
                "since": since,
                "reasons": json.loads(reasons) if reasons else [],
                "status_at": status_at,
                "health": json.loads(health) if health else None,
                "health_at": health_at,
                "health_age_s": (now - health_at) if health_at else None,
                "last_seq": last_seq,
                "missing_events": missing,
            }
        )
    return out


class SupervisorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        store: Store,
        hub: Hub,
        *,
        cookie_secure: bool = False,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(address, SupervisorHandler)
        self.store = store
        self.hub = hub
        self.cookie_secure = cookie_secure
        self.wall = wall
        self.stopping = threading.Event()
        self.throttle = LoginThrottle()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="collector-web", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.hub.notify()
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)


class SupervisorHandler(BaseHTTPRequestHandler):
    server: SupervisorServer
    protocol_version = "HTTP/1.1"
    server_version = "deskwatch-collector"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("web %s " + format, self.client_address[0], *args)

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json", headers)

    def _redirect(self, where: str, headers: dict[str, str] | None = None) -> None:
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": where, **(headers or {})})

    def _token(self) -> str | None:
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        morsel = cookie.get(COOKIE)
        return morsel.value if morsel else None

    def _user(self) -> auth.User | None:
        return auth.session_user(self.server.store, self._token(), self.server.wall())

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length < 0 or length > MAX_BODY:
            return None
        return self.rfile.read(length)

    def _cookie(self, value: str, max_age: int) -> str:
        secure = "; Secure" if self.server.cookie_secure else ""
        return f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"

    # -- routing ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _guard(self, route: Callable[[str], None]) -> None:
        try:
            route(urlsplit(self.path).path)
        except StoreUnavailable:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "database unavailable, try again"})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            logger.exception("supervisor page failed on %s %s", self.command, self.path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def _get(self, path: str) -> None:
        if path == "/static/app.css":
            return self._send(200, CSS.encode(), "text/css; charset=utf-8")
        if path == "/static/app.js":
            return self._send(200, APP_JS.encode(), "text/javascript; charset=utf-8")
        if path == "/login":
            return self._send(200, login_page(), "text/html; charset=utf-8")
        if path == "/healthz":
            return self._json(200, {"ok": True})
        user = self._user()
        if user is None:
            if path.startswith("/api/") or path.startswith("/evidence/"):
                return self._json(HTTPStatus.UNAUTHORIZED, {"error": "sign in first"})
            return self._redirect("/login")
        if path == "/":
            me = json.dumps({"username": user.username, "role": user.role, "sites": list(user.sites)})
            return self._send(200, app_page(me, user.username, user.is_supervisor), "text/html; charset=utf-8")
        if path == "/api/events":
            query = parse_qs(urlsplit(self.path).query)
            limit = max(1, min(500, _int(query.get("limit", ["100"])[0], 100)))
            after = max(0, _int(query.get("after_id", ["0"])[0], 0))
            with self.server.store.transaction(write=False) as tx:
                return self._json(200, {"events": query_events(tx, user, after_id=after, limit=limit)})
        if path == "/api/fleet":
            if not user.is_supervisor:
                return self._json(HTTPStatus.FORBIDDEN, {"error": "supervisors only"})
            with self.server.store.transaction(write=False) as tx:
                return self._json(200, {"devices": query_fleet(tx, user, self.server.wall())})
        if path == "/api/stream":
            return self._stream(user)
        if path.startswith("/evidence/"):
            return self._evidence(user, path.rsplit("/", 1)[-1].lower())
        return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _post(self, path: str) -> None:
        if path == "/login":
            return self._login()
        if path == "/logout":
            auth.logout(self.server.store, self._token())
            return self._json(200, {"ok": True}, {"Set-Cookie": self._cookie("", 0)})
        user = self._user()
        if user is None:
            return self._json(HTTPStatus.UNAUTHORIZED, {"error": "sign in first"})
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send JSON"})
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["api", "events"] and UUID.match(parts[2]):
            body = self._body()
            try:
                data = json.loads(body or b"")
            except ValueError:
                data = None
            if not isinstance(data, dict):
                return self._json(HTTPStatus.BAD_REQUEST, {"error": "body must be a JSON object"})
            note = data.get("note") or ""
            if not isinstance(note, str) or len(note) > MAX_NOTE:
                return self._json(
                    HTTPStatus.BAD_REQUEST, {"error": f"note must be text of at most {MAX_NOTE} characters"}
                )
            if parts[3] == "review":
                return self._review(user, parts[2].lower(), data.get("action"), note.strip())
            if parts[3] == "contest":
                return self._contest(user, parts[2].lower(), note.strip())
        return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    # -- handlers ---------------------------------------------------------------------------
    def _login(self) -> None:
        body = self._body() or b""
        form = parse_qs(body.decode("utf-8", "replace"))
        username = (form.get("username") or [""])[0]
        password = (form.get("password") or [""])[0]
        keys, now = [f"user:{username[:64]}", f"addr:{self.client_address[0]}"], self.server.wall()
        if self.server.throttle.blocked(keys, now):
            logger.warning("sign-in for %r from %s refused: too many failures", username[:64], self.client_address[0])
            page = login_page("Too many failed attempts. Wait a few minutes and try again.")
            return self._send(HTTPStatus.TOO_MANY_REQUESTS, page, "text/html; charset=utf-8")
        got = auth.login(self.server.store, username, password, now)
        if got is None:
            self.server.throttle.failed(keys, now)
            logger.warning("failed sign-in for %r from %s", username[:64], self.client_address[0])
            return self._send(
                HTTPStatus.UNAUTHORIZED, login_page("Wrong user name or password."), "text/html; charset=utf-8"
            )
        token, user = got
        logger.info("%s %s signed in", user.role, user.username)
        self._redirect("/", {"Set-Cookie": self._cookie(token, auth.SESSION_SECONDS)})

    def _review(self, user: auth.User, event_id: str, action: Any, note: str) -> None:
        if not user.is_supervisor:
            return self._json(HTTPStatus.FORBIDDEN, {"error": "supervisors only"})
        states = {"acknowledge": "acknowledged", "dismiss": "dismissed"}
        if action not in states:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "action must be acknowledge or dismiss"})
        scope, params = _scope(user)
        with self.server.store.transaction() as tx:
            n = tx.execute(
                "UPDATE events SET review_state = ?, review_note = ?, reviewed_by = ?, reviewed_at = ?"
                f" WHERE event_id = ? AND id IN (SELECT e.id FROM events e WHERE {scope} AND e.event_id = ?)",
                (states[action], note or None, user.username, self.server.wall(), event_id, *params, event_id),
            )
            event = query_event(tx, user, event_id) if n else None
        if event is None:
            return self._json(HTTPStatus.NOT_FOUND, {"error": "no such event"})
        logger.info("event %s %s by %s", event_id, states[action], user.username)
        self._json(200, event)

    def _contest(self, user: auth.User, event_id: str, note: str) -> None:
        if user.is_supervisor:
            return self._json(HTTPStatus.FORBIDDEN, {"error": "only the worker can contest a finding"})
        if not note:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "say why the finding is wrong"})
        scope, params = _scope(user)
        with self.server.store.transaction() as tx:
            n = tx.execute(
                "UPDATE events SET contest_note = ?, contested_by = ?, contested_at = ?"
                f" WHERE event_id = ? AND id IN (SELECT e.id FROM events e WHERE {scope} AND e.event_id = ?)",
                (note, user.username, self.server.wall(), event_id, *params, event_id),
            )
            event = query_event(tx, user, event_id) if n else None
        if event is None:
            return self._json(HTTPStatus.NOT_FOUND, {"error": "no such event"})
        logger.info("event %s contested by %s", event_id, user.username)
        self._json(200, event)

    def _evidence(self, user: auth.User, event_id: str) -> None:
        scope, params = _scope(user)
        with self.server.store.transaction(write=False) as tx:
            row = tx.one(
                "SELECT v.data FROM evidence v JOIN events e ON e.event_id = v.event_id"
                f" WHERE {scope} AND v.event_id = ? AND v.state = 'verified'",
                (*params, event_id),
            )
        if row is None:
            return self._json(HTTPStatus.NOT_FOUND, {"error": "no evidence (not received, not allowed or purged)"})
        self._send(200, bytes(row[0]), "image/jpeg", {"Cache-Control": "private, no-store"})

    def _stream(self, user: auth.User) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        self.close_connection = True
        hub, store = self.server.hub, self.server.store
        with store.transaction(write=False) as tx:
            backlog = query_events(tx, user, limit=50)
        seen: set[int] = set()
        top = 0
        version = hub.wait(-1, 0)
        last_beat = time.monotonic()
        self._push(reversed(backlog), seen)
        top = max([e["id"] for e in backlog] + [0])
        checked = time.monotonic()
        while not self.server.stopping.is_set():
            version = hub.wait(version, 1.0)
            if self.server.stopping.is_set():
                return
            if time.monotonic() - checked > SESSION_RECHECK_SECONDS:
                checked = time.monotonic()
                if self._user() is None:  # signed out or expired: the stream ends with the session
                    return
            with store.transaction(write=False) as tx:
                fresh = query_events(tx, user, after_id=max(0, top - LOOKBACK_IDS), limit=500)
            fresh = [e for e in reversed(fresh) if e["id"] not in seen]
            if fresh:
                self._push(fresh, seen)
                top = max(top, *(e["id"] for e in fresh))
                seen.difference_update([i for i in seen if i < top - 2 * LOOKBACK_IDS])
            elif time.monotonic() - last_beat > 15:
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
                last_beat = time.monotonic()

    def _push(self, events: Any, seen: set[int]) -> None:
        for event in events:
            seen.add(event["id"])
            self.wfile.write(f"event: violation\nid: {event['id']}\ndata: {json.dumps(event)}\n\n".encode())
        self.wfile.flush()


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default
