"""Signing in and out of the collector's web server, the console's front door: the cookie,
what the database keeps, the form itself, throttled guessing; and what is no longer there
(the first landing's page and API)."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from deskwatch_collector import auth
from deskwatch_collector.console import schema
from deskwatch_collector.store import Store, open_store
from deskwatch_collector.web import SupervisorServer
from deskwatch_dev.devservers import TempPostgres
from tests.support.console import seed_demo
from tests.support.web import PASSWORD, ServerFactory, WebClient

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def server(console_store: Callable[[str], Store], console_server: ServerFactory) -> SupervisorServer:
    store = console_store("sqlite")
    seed_demo(store, datetime.now(UTC).replace(microsecond=0))  # alice, bob (supervisors), w-1 (a worker)
    return console_server(store)


def test_sign_in_sets_a_strict_cookie_and_the_database_keeps_only_hashes(server: SupervisorServer) -> None:
    b = WebClient(server.url)
    assert b.call("/")[0] == 303 and b.call("/")[1]["location"] == "/login"
    assert b.get_json("/api/queue")[0] == 401
    status, _, body = b.call("/login", b"username=alice&password=wrong-one", FORM)
    assert status == 401 and b"Wrong user name or password" in body and b.session is None
    assert b.login("nobody") == 401
    status, headers, _ = b.call("/login", f"username=alice&password={PASSWORD}".encode(), FORM)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert b.call("/")[1]["location"] == "/queue" and b.get_json("/api/queue")[0] == 200
    with server.store.transaction(write=False) as tx:
        stored = tx.one("SELECT password_hash FROM users WHERE username = 'alice'")
        tokens = {t for (t,) in tx.rows("SELECT token_hash FROM sessions")}
    assert stored is not None and stored[0].startswith("scrypt$") and PASSWORD not in stored[0]
    assert b.session and b.session not in tokens  # only the token's hash is stored
    status, headers, _ = b.call("/logout", b"{}", "application/json")
    assert status == 200 and "Max-Age=0" in headers["set-cookie"]
    assert b.get_json("/api/queue")[0] == 401 and b.call("/queue")[1]["location"] == "/login"


def test_the_form_uses_the_consoles_stylesheet_and_nothing_inline(server: SupervisorServer) -> None:
    b = WebClient(server.url)
    status, headers, body = b.call("/login")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]
    assert b"<script" not in body and b"style=" not in body and b'href="/static/console.css"' in body
    status, headers, css = b.call("/static/console.css")
    assert status == 200 and headers["content-type"].startswith("text/css") and b".login input" in css


def test_the_first_landings_page_and_api_are_gone(server: SupervisorServer) -> None:
    """``/api/events`` gave a worker the supervisors' notes; ``/api/stream`` the same, live."""
    for user in ("alice", "w-1"):
        b = WebClient(server.url)
        assert b.login(user) == 303
        for path in ("/api/events", "/api/fleet", "/api/stream", "/static/app.js", "/static/style.css"):
            assert b.call(path)[0] == 404, (user, path)


def test_repeated_failed_sign_ins_are_throttled(server: SupervisorServer) -> None:
    b = WebClient(server.url)
    for _ in range(5):
        assert b.call("/login", b"username=alice&password=guess", FORM)[0] == 401
    status, headers, body = b.call("/login", f"username=alice&password={PASSWORD}".encode(), FORM)
    assert status == 429 and b"Too many failed attempts" in body and int(headers["retry-after"]) > 0


def test_signing_out_while_the_database_is_away_still_signs_the_browser_out(console_server: ServerFactory) -> None:
    """A supervisor on a shared PC signs out while PostgreSQL is down (a failover, a restart)
    and sees the sign-in form. The browser must hold no session afterwards: once the
    database is back, the next person at that PC must not be in as the supervisor."""
    pg = TempPostgres().start()
    store = open_store(pg.create_database("signout"))
    try:
        schema.migrate(store)
        auth.add_user(store, "alice", PASSWORD, "supervisor", ["acme"], None)
        server = console_server(store)
        b = WebClient(server.url)
        assert b.login("alice") == 303 and b.get_json("/api/queue")[0] == 200
        pg.halt()
        status, headers, body = b.call("/logout", b"{}", "application/json")
        assert status == 503 and "Max-Age=0" in headers.get("set-cookie", ""), (status, headers, body)
        assert b"Signed out in this browser" in body and b.session is None
        pg.resume()
        assert b.get_json("/api/queue")[0] == 401 and b.call("/queue")[1]["location"] == "/login"
    finally:
        store.close()
        pg.stop()


def test_a_user_name_no_account_can_have_is_a_wrong_sign_in_on_postgresql(
    console_store: Callable[[str], Store], console_server: ServerFactory
) -> None:
    """A U+0000 in the user name (PostgreSQL cannot hold one in a query parameter) got a JSON
    500 and a traceback instead of the sign-in form saying the name or password is wrong."""
    store = console_store("postgresql")
    auth.add_user(store, "alice", PASSWORD, "supervisor", ["acme"], None)
    server = console_server(store)
    b = WebClient(server.url)
    for name in ("alice%00", "%00", "al%C3%AFce", "x" * 70):
        status, _, body = b.call("/login", f"username={name}&password=wrong-one".encode(), FORM)
        assert status == 401 and b"Wrong user name or password" in body, (name, status, body[:80])
    assert b.login("alice") == 303


@pytest.mark.parametrize("other", ['prefs={"theme":"dark"}', "theme=dark mode", 'x="unterminated', "bad name=1"])
def test_a_cookie_another_app_on_the_host_set_does_not_hide_the_session(server: SupervisorServer, other: str) -> None:
    """Browsers keep cookies per host, not per port: another web app on the same host sets
    its own, sent to the console too and ahead of the session when it is older. Python's
    SimpleCookie stopped at the first one it could not parse, so after every sign-in the
    console sent the supervisor back to the sign-in form."""
    b = WebClient(server.url)
    assert b.login("alice") == 303 and b.session
    header = {"Cookie": f"{other}; dw_session={b.session}"}
    for path, status in (("/api/queue", 200), ("/queue", 200)):
        req = urllib.request.Request(server.url + path, headers=header)
        with urllib.request.urlopen(req, timeout=10) as answer:
            assert answer.status == status and answer.url == server.url + path, (path, answer.url)
    req = urllib.request.Request(server.url + "/logout", b"{}", {**header, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as answer:
        assert answer.status == 200
    assert b.get_json("/api/queue")[0] == 401  # the sign-out read the session too


def test_signing_in_while_the_database_is_away_says_so_and_counts_no_failure(console_server: ServerFactory) -> None:
    """During a PostgreSQL restart the form answered raw JSON ('database unavailable') and
    counted each try as a failed guess: after five, the supervisor was locked out for five
    minutes once the database was back - with the alerts of the outage waiting. A signed-in
    supervisor's pages showed the raw JSON too (the session is looked up before the page)."""
    pg = TempPostgres().start()
    store = open_store(pg.create_database("signin"))
    try:
        schema.migrate(store)
        auth.add_user(store, "alice", PASSWORD, "supervisor", ["acme"], None)
        server = console_server(store)
        b = WebClient(server.url)
        pg.halt()
        for _ in range(7):
            status, headers, body = b.call("/login", f"username=alice&password={PASSWORD}".encode(), FORM)
            assert status == 503 and headers["content-type"].startswith("text/html"), (status, body[:100])
            assert b"The database is unavailable" in body and b"<form" in body
        pg.resume()
        assert b.login("alice") == 303 and b.get_json("/api/queue")[0] == 200
        pg.halt()  # signed in: the pages say it in words too (they showed the raw JSON)
        for path in ("/queue", "/fleet", "/accuracy"):
            status, headers, body = b.call(path)
            assert status == 503 and headers["content-type"].startswith("text/plain"), (path, body[:100])
            assert body.startswith(b"Database unavailable: Try again in a moment.")
        assert b.get_json("/api/queue") == (503, {"error": "database unavailable, try again"})
        pg.resume()
    finally:
        store.close()
        pg.stop()


def test_the_idle_timeout_ends_a_session_the_alert_poll_alone_keeps_asking(
    console_store: Callable[[str], Store], console_server: ServerFactory
) -> None:
    """The alert poll (and a worker page's session check) are the page's, not the person's:
    thirty minutes of them end the session, with the reason in the 401 and on the form; a
    page asked in between keeps it. The server's clock is the test's."""
    store = console_store("sqlite")
    seed_demo(store, datetime.now(UTC).replace(microsecond=0))
    clock = [datetime.now(UTC).timestamp()]
    server = console_server(store, wall=lambda: clock[0])
    sup, worker = WebClient(server.url), WebClient(server.url)
    assert sup.login("alice") == 303 and worker.login("w-1") == 303
    for _ in range(25):  # 25 minutes of polling, a page at minute 25
        clock[0] += 60
        assert sup.get_json("/api/queue/latest?after_id=0")[0] == 200
        assert worker.get_json("/api/session")[0] == 200
    assert sup.call("/queue")[0] == 200 and worker.call("/me")[0] == 200
    for _ in range(29):  # 29 minutes more: still within the timeout of the page at minute 25
        clock[0] += 60
        assert sup.get_json("/api/queue/latest?after_id=0")[0] == 200
    clock[0] += 61
    status, body = sup.get_json("/api/queue/latest?after_id=0")
    assert status == 401 and body["signed_out"] == "idle"
    assert body["error"] == "You were signed out after 30 minutes without activity. Sign in again to go on."
    assert worker.call("/me")[1]["location"] == "/login?signed_out=idle"
    assert sup.get_json("/api/queue")[0] == 401  # the session is gone, not only refused once
    page = WebClient(server.url).call("/login?signed_out=idle")[2]
    assert b"You were signed out after 30 minutes without activity." in page
    assert b"<script" not in WebClient(server.url).call("/login?signed_out=%3Cscript%3E")[2]
