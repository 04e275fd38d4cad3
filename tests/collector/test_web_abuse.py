"""The web server under abuse: slow and half-sent requests, password guessing in
parallel, a proxy's X-Forwarded-For, invented user names, and accounts that change.

Real sockets against the real server as the collector runs it (hypercorn in the
collector's thread, the console's routes behind the guard); timeouts are shortened
through the same settings an operator has, so the tests take seconds.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deskwatch_collector import auth
from deskwatch_collector.cli import main
from deskwatch_collector.console.routes import ConsoleSettings
from deskwatch_collector.intake import IntakeHealth
from deskwatch_collector.store import Store, StoreUnavailable, open_store
from deskwatch_collector.web import GuardLimits, SupervisorServer, ThrottleLimits
from deskwatch_collector.web.guard import parse_networks
from deskwatch_collector.web.throttle import LoginThrottle
from tests.support.web import PASSWORD, ServerFactory, WebClient

Factory = Callable[..., SupervisorServer]
FORM = "application/x-www-form-urlencoded"


def _no_redirect(req: urllib.request.Request) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.build_opener(_Stay).open(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}


class _Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def serve(console_store: Callable[[str], Store], console_server: ServerFactory) -> Factory:
    """``serve(console=None, backend="sqlite", **kwargs)``: a started server (the console's routes,
    ``kwargs`` for :class:`SupervisorServer`) on a fresh store with alice (acme) and her password
    (on PostgreSQL the sign-in counts are the database's, :class:`SharedThrottle`)."""

    def start(console: ConsoleSettings | None = None, backend: str = "sqlite", **kwargs: Any) -> SupervisorServer:
        store = console_store(backend)
        auth.add_user(store, "alice", PASSWORD, "supervisor", ["acme"], None)
        return console_server(store, console, **kwargs)

    return start


def hash_counter(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record when each password hash starts (the expensive part of a sign-in)."""
    calls: list[float] = []
    real = auth.verify_login

    def counted(*args: Any) -> Any:
        calls.append(time.monotonic())
        return real(*args)

    monkeypatch.setattr(auth, "verify_login", counted)
    return calls


async def _status(reader: asyncio.StreamReader, timeout: float) -> str:
    """The status code of the response ("408"), or "closed"."""
    line = await asyncio.wait_for(reader.readline(), timeout)
    return line.decode().split(" ")[1] if line else "closed"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _slowloris(port: int, n: int, seconds: float) -> list[tuple[str, float]]:
    async def one() -> tuple[str, float]:
        start = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /login HTTP/1.1\r\nHost: x\r\n")
        try:
            for i in range(int(seconds * 2)):
                writer.write(f"X-Slow-{i}: a\r\n".encode())
                await writer.drain()
                try:
                    got = await asyncio.wait_for(reader.read(100), 0.5)
                    return ("closed" if not got else got.split(b"\r\n")[0].decode(), time.monotonic() - start)
                except TimeoutError:
                    pass
        except (ConnectionResetError, BrokenPipeError):
            return ("reset", time.monotonic() - start)
        finally:
            writer.close()
        return ("held", time.monotonic() - start)

    return await asyncio.gather(*(one() for _ in range(n)))


def test_slowloris_connections_are_closed_and_the_page_keeps_answering(serve: Factory) -> None:
    server = serve()
    alice = WebClient(server.url)
    assert alice.login("alice") == 303 and alice.call("/api/queue")[0] == 200  # the database thread is up
    threads = threading.active_count()
    result: list[tuple[str, float]] = []
    attack = threading.Thread(target=lambda: result.extend(run(_slowloris(server.server_address[1], 200, 12))))
    attack.start()
    time.sleep(1.0)
    answered = []
    while attack.is_alive():
        for client, path in ((WebClient(server.url), "/login"), (alice, "/api/queue")):
            began = time.monotonic()
            status, _, _ = client.call(path)
            answered.append((status, time.monotonic() - began))
        assert threading.active_count() <= threads + 2  # no thread per connection
        time.sleep(0.5)
    attack.join()
    outcomes = {what for what, _ in result}
    assert outcomes <= {"closed", "reset"}, outcomes  # none held for the attacker's 12 s
    assert max(t for _, t in result) < 9.0  # the head deadline (5 s) plus scheduling
    assert all(status == 200 and took < 2.0 for status, took in answered), answered


async def _half_posts(port: int, n: int, wait: float) -> list[str]:
    async def one() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1000\r\n\r\nusername=alice&pass"
        )
        await writer.drain()
        try:
            return await _status(reader, wait)
        except TimeoutError:
            return "held"
        finally:
            writer.close()

    return list(await asyncio.gather(*(one() for _ in range(n))))


def test_half_sent_bodies_time_out_without_a_hash_or_a_thread(serve: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = hash_counter(monkeypatch)
    server = serve(limits=GuardLimits(body_seconds=2.0, per_address=100, max_body_readers=32))
    alice = WebClient(server.url)
    assert alice.login("alice") == 303  # signed in before the attack
    hashes.clear()
    keys, threads = server.ctx.throttle.keys_held(), threading.active_count()
    got: list[str] = []
    attack = threading.Thread(target=lambda: got.extend(run(_half_posts(server.server_address[1], 60, 8))))
    attack.start()
    time.sleep(0.5)
    # Slow bodies hold reader slots, not the page: the sign-in form and the console answer.
    assert WebClient(server.url).call("/login")[0] == 200
    assert alice.get_json("/api/queue")[0] == 200 and alice.call("/queue")[0] == 200
    attack.join()
    assert got.count("408") == 32 and got.count("503") == 28, got
    assert hashes == [] and threading.active_count() <= threads + 2
    assert server.ctx.throttle.keys_held() == keys  # nothing counted: no sign-in was ever attempted
    # One client cannot take every request slot: past its share it is told at once.
    server2 = serve(limits=GuardLimits(body_seconds=3, per_address=8))
    started = time.monotonic()
    got = run(_half_posts(server2.server_address[1], 20, 8))
    assert got.count("429") == 12 and got.count("408") == 8, got
    assert time.monotonic() - started < 7


async def _parallel_logins(port: int, n: int, username: str, forwarded: list[str] | None = None) -> list[str]:
    async def one(i: int) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = f"username={username}&password=guess-{i:04d}".encode()
        xff = f"X-Forwarded-For: {forwarded[i]}\r\n".encode() if forwarded else b""
        writer.write(
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            + xff
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        try:
            return await _status(reader, 60)
        finally:
            writer.close()

    return list(await asyncio.gather(*(one(i) for i in range(n))))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_parallel_guesses_are_counted_before_hashing(
    serve: Factory, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    hashes = hash_counter(monkeypatch)
    server = serve(backend=backend, limits=GuardLimits(per_address=300, max_requests=300, max_body_readers=300))
    codes = run(_parallel_logins(server.server_address[1], 150, "alice"))
    assert codes.count("401") == 5 and codes.count("429") == 145, sorted(set(codes))
    assert len(hashes) == 5  # the limit held while the hashes ran
    # And the real user, from another address she has used before, is not locked out (below).


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_per_user_and_per_address_limits_do_not_lock_each_other_out(serve: Factory, backend: str) -> None:
    server = serve(
        backend=backend,
        limits=GuardLimits(trusted_proxies=parse_networks(["127.0.0.1"])),
        throttle=ThrottleLimits(per_pair=5, per_address=30, per_user=20),
    )
    port = server.server_address[1]

    def sign_in(address: str, password: str = PASSWORD, user: str = "alice") -> int:
        b = WebClient(server.url)
        b.opener.addheaders = [("X-Forwarded-For", f"203.0.113.99, {address}")]  # left part: client-written
        return b.login(user, password)

    assert sign_in("198.51.100.7") == 303  # alice at home: a known address from now on
    # An attacker guesses alice's password from 40 addresses: the per-user budget (20) runs out...
    codes = [
        c for r in range(4) for c in run(_parallel_logins(port, 10, "alice", [f"192.0.2.{r}{i}" for i in range(10)]))
    ]
    assert codes.count("401") == 20 and codes.count("429") == 20, codes
    # ...but alice still signs in from her known address; from a new one she must wait.
    assert sign_in("198.51.100.7") == 303
    assert sign_in("198.51.100.8") == 429
    # A colleague behind the office NAT exhausts that address (30 failures over many names)...
    for i in range(30):
        assert sign_in("198.51.100.50", "wrong password", f"colleague-{i}") == 401
    assert sign_in("198.51.100.50", "wrong password", "colleague-x") == 429
    # ...and alice, who has signed in from the office before, is not locked out there.
    auth.add_user(server.store, "bob", PASSWORD, "supervisor", ["acme"], None)
    assert sign_in("198.51.100.50", user="bob") == 429  # bob never signed in from the office
    assert sign_in("198.51.100.7", user="bob") == 303 and sign_in("198.51.100.50", user="bob") == 429


def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(serve: Factory) -> None:
    direct = serve(throttle=ThrottleLimits(per_pair=5, per_address=10, per_user=1000))
    codes = run(_parallel_logins(direct.server_address[1], 10, "nobody", [f"192.0.2.{i}" for i in range(10)]))
    assert codes.count("429") == 5  # the header is the client's word: all from 127.0.0.1 (pair limit 5)
    proxied = serve(
        limits=GuardLimits(trusted_proxies=parse_networks(["127.0.0.0/8"])),
        throttle=ThrottleLimits(per_pair=5, per_address=10, per_user=1000),
    )
    codes = run(_parallel_logins(proxied.server_address[1], 10, "nobody", [f"192.0.2.{i}" for i in range(10)]))
    assert codes.count("401") == 10  # ten clients behind the proxy, one guess each


def test_throttle_memory_is_bounded_whatever_names_are_tried() -> None:
    throttle = LoginThrottle(ThrottleLimits(max_keys=1000, per_address=10**9, per_user=10**9))
    now = time.time()
    for i in range(100_000):
        throttle.attempt(f"invented-{i}", f"10.0.{i // 250 % 256}.{i % 250}", now)
    assert throttle.keys_held() <= 4 * 1000


def test_sessions_end_when_the_account_changes(serve: Factory) -> None:
    """A password reset, a disabled or a removed account ends its sessions at once: every
    route refuses the old cookie on its next request. A console page holds no connection
    open; what it asks by itself is ``/api/queue/latest`` every ``poll_seconds`` (its alerts),
    and a 401 there sends it to the sign-in page (in Chromium: test_console_live.py)."""
    server = serve()
    b = WebClient(server.url)
    assert b.login("alice") == 303
    assert b.get_json("/api/queue")[0] == 200 and b.get_json("/api/queue/latest?after_id=0")[0] == 200
    ended = auth.reset_password(server.store, "alice", "a brand new password")
    assert ended == 1
    assert b.get_json("/api/queue")[0] == 401 and b.get_json("/api/queue/latest?after_id=0")[0] == 401
    assert b.call("/queue")[1]["location"] == "/login"
    assert b.login("alice", "a brand new password") == 303 and b.get_json("/api/queue")[0] == 200
    auth.set_disabled(server.store, "alice", True)
    assert b.get_json("/api/queue/latest?after_id=0")[0] == 401
    assert b.login("alice", "a brand new password") == 401  # disabled: sign-in refused
    auth.set_disabled(server.store, "alice", False)
    assert b.login("alice", "a brand new password") == 303
    auth.remove_user(server.store, "alice")
    assert b.get_json("/api/queue")[0] == 401


def test_users_command_lists_adds_resets_disables_and_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "c.db")

    def users(*args: str, password: str = "") -> tuple[int, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
        code = main(["users", *args, "--db", db])
        out = capsys.readouterr()
        return code, out.out + out.err

    assert users("add", "alice", "--site", "acme", password="first password")[0] == 0
    code, text = users("add", "alice", "--site", "acme", password="other password")
    assert code == 78 and "use 'users reset'" in text
    assert users("add", "w-1", "--role", "worker", "--worker-id", "w-1", "--site", "acme", password="pass word")[0] == 0
    from deskwatch_collector.store import open_store

    store = open_store(db)
    token, _ = auth.login(store, "alice", "first password", time.time()) or ("", None)
    code, text = users("list")
    assert code == 0 and "alice" in text and "supervisor" in text and "w-1" in text and " 1  acme" in text
    code, text = users("reset", "alice", password="second password")
    assert code == 0 and "1 session(s) ended" in text
    assert auth.session_user(store, token, time.time()) is None
    assert users("disable", "w-1")[0] == 0 and "disabled" in users("list")[1]
    assert auth.login(store, "w-1", "pass word", time.time()) is None
    assert users("enable", "w-1")[0] == 0 and auth.login(store, "w-1", "pass word", time.time()) is not None
    assert users("remove", "w-1")[0] == 0 and "w-1" not in users("list")[1]
    code, text = users("remove", "nobody")
    assert code == 1 and "no user nobody" in text
    store.close()


def test_healthz_names_the_failure_kind_not_the_database_message(console_server: ServerFactory, tmp_path: Path) -> None:
    """/healthz needs no sign-in: it says that storing fails and how, never the driver's text."""
    health = IntakeHealth()
    health.broker_connected = True
    secret = 'connection to server at "db.internal" (10.0.0.7), port 5432 failed: FATAL: role "dw_writer"'
    health.failing(StoreUnavailable(secret, "unreachable"), 3)
    server = console_server(open_store(str(tmp_path / "c.db")), health=health.snapshot)
    status, _, body = WebClient(server.url).call("/healthz")
    assert status == 503
    state = json.loads(body)
    assert state["failure"] == "unreachable" and state["unacknowledged_held"] == 3
    assert b"db.internal" not in body and b"dw_writer" not in body and b"10.0.0.7" not in body


def test_a_password_the_sign_in_form_cannot_take_is_refused_when_it_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], console_server: ServerFactory
) -> None:
    """The form reads 1024 characters of a password; `users add` took 1500 (a password
    manager's longest), and that account could never sign in: 'Wrong user name or password'."""
    db = str(tmp_path / "c.db")
    long = "correct horse " * 100

    def users(*args: str, password: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
        code = main(["users", *args, "--db", db])
        out = capsys.readouterr()
        return code, out.out + out.err

    code, text = users("add", "alice", "--site", "acme", password=long)
    assert code == 78 and "at most 1024 characters" in text, text
    assert users("add", "alice", "--site", "acme", password=long[:1024])[0] == 0
    code, text = users("reset", "alice", password=long)
    assert code == 78 and "at most 1024 characters" in text, text
    b = WebClient(console_server(open_store(db)).url)
    assert b.login("alice", long[:1024]) == 303


def test_a_password_piped_with_a_windows_line_end_signs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, console_server: ServerFactory
) -> None:
    """`users add alice < password.txt` with a file saved on Windows (CR LF) stored the CR
    as the password's last character, and the password typed into the form never matched."""
    db = str(tmp_path / "c.db")
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\r\n"))
    assert main(["users", "add", "alice", "--site", "acme", "--db", db]) == 0
    b = WebClient(console_server(open_store(db)).url)
    assert b.login("alice", PASSWORD) == 303


def test_the_cookie_is_secure_when_a_trusted_proxy_says_the_browser_spoke_https(serve: Factory) -> None:
    """Behind an HTTPS proxy (--trusted-proxy) without --cookie-secure, the session cookie
    went out without Secure: the browser would send it over any plain http:// request to
    the host (the name typed without https://), readable on the office network. The proxy's
    X-Forwarded-Proto is believed only from a trusted proxy, like its X-Forwarded-For."""
    form = f"username=alice&password={PASSWORD}".encode()
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}

    def cookie(server: SupervisorServer, headers: dict[str, str]) -> str:
        req = urllib.request.Request(server.url + "/login", form, {**headers, "Content-Type": FORM})
        status, answer = _no_redirect(req)
        assert status == 303
        return answer["set-cookie"]

    proxied = serve(limits=GuardLimits(trusted_proxies=parse_networks(["127.0.0.1"])))
    assert "; Secure" in cookie(proxied, https)
    assert "; Secure" not in cookie(proxied, {"X-Forwarded-Proto": "http"})  # the proxy's plain-http listener
    direct = serve()  # no trusted proxy: anyone could write the header
    assert "; Secure" not in cookie(direct, https)


def test_over_https_the_session_cookie_is_a_host_cookie_a_sibling_subdomain_cannot_shadow(serve: Factory) -> None:
    """A sibling subdomain (another app of the company) could set a Domain= cookie named
    dw_session holding a session of an account its author owns; the browser sent both and
    the server took the last, so the supervisor went on as that account. Over HTTPS the
    cookie is now __Host-dw_session (a browser takes it only Secure, Path=/, without Domain)
    and a plain dw_session is not read; the answers carry HSTS. Plain HTTP is as it was."""
    server = serve(limits=GuardLimits(trusted_proxies=parse_networks(["127.0.0.1"])))
    auth.add_user(server.store, "mallory", PASSWORD, "worker", ["acme"], "w-9")
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}

    def call(path: str, headers: dict[str, str], data: bytes | None = None) -> tuple[int, dict[str, str]]:
        extra = {"Content-Type": FORM} if data else {}
        return _no_redirect(urllib.request.Request(server.url + path, data, {**headers, **extra}))

    def sign_in(user: str, headers: dict[str, str]) -> str:
        status, answer = call("/login", headers, f"username={user}&password={PASSWORD}".encode())
        assert status == 303
        return answer["set-cookie"]

    cookie = sign_in("alice", https)
    assert cookie.startswith("__Host-dw_session=") and "; Secure" in cookie and "; Path=/;" in cookie
    assert "domain" not in cookie.lower()
    mine = cookie.split(";")[0]
    tossed = "dw_session=" + sign_in("mallory", {}).split(";")[0].split("=", 1)[1]  # mallory's own session
    for order in (f"{mine}; {tossed}", f"{tossed}; {mine}"):
        status, answer = call("/", {**https, "Cookie": order})
        assert (status, answer["location"]) == (303, "/queue"), order  # alice's, not mallory's /me
    assert call("/", {**https, "Cookie": tossed})[1]["location"] == "/login"
    assert call("/login", https)[1]["strict-transport-security"] == "max-age=31536000"
    assert call("/queue", {**https, "Cookie": mine})[1]["strict-transport-security"] == "max-age=31536000"
    status, answer = call("/logout", {**https, "Cookie": mine}, b"x=1")
    assert answer["set-cookie"].startswith("__Host-dw_session=;") and "Max-Age=0" in answer["set-cookie"]
    # Plain HTTP (tests, make demo, a console on loopback): the plain cookie, no HSTS.
    plain = sign_in("alice", {})
    assert plain.startswith("dw_session=") and "Secure" not in plain
    assert "strict-transport-security" not in call("/login", {})[1]
    assert "strict-transport-security" not in call("/login", {"X-Forwarded-Proto": "http"})[1]
    assert call("/", {"Cookie": plain.split(";")[0]})[1]["location"] == "/queue"


def test_collectors_sharing_postgresql_share_the_sign_in_limits(
    console_store: Callable[[str], Store], console_server: ServerFactory, request: pytest.FixtureRequest
) -> None:
    """Two collectors on one PostgreSQL behind a load balancer each counted alone: a guesser
    alternating between them had 10 tries at alice's password instead of 5 (N collectors, N
    times). The counts now live in the database; alice's known address is known to both."""
    first = console_store("postgresql")
    auth.add_user(first, "alice", PASSWORD, "supervisor", ["acme"], None)
    second = open_store(request.getfixturevalue("postgres_dsn"))  # the other collector's own connections
    try:
        limits = GuardLimits(trusted_proxies=parse_networks(["127.0.0.1"]))
        servers = [console_server(first, limits=limits), console_server(second, limits=limits)]

        def sign_in(i: int, address: str, password: str = PASSWORD, user: str = "alice") -> int:
            b = WebClient(servers[i % 2].url)
            b.opener.addheaders = [("X-Forwarded-For", address)]
            return b.login(user, password)

        assert sign_in(0, "198.51.100.7") == 303  # alice, at collector A: a known address for both
        codes = [sign_in(i, "192.0.2.1", f"guess-{i}") for i in range(20)]
        assert codes.count(401) == 5 and codes.count(429) == 15, codes
        codes = [sign_in(i, f"192.0.2.{100 + i}", f"guess-{i}") for i in range(30)]  # the per-user budget
        assert codes.count(401) == 15 and codes.count(429) == 15, codes  # 20 in all, 5 of them above
        assert sign_in(1, "198.51.100.7") == 303  # alice, at collector B, from her known address
        assert sign_in(1, "198.51.100.8") == 429
    finally:
        second.close()


def test_an_ipv6_client_is_counted_by_its_64(serve: Factory) -> None:
    """An IPv6 client holds a whole /64 and can take a new address per guess: counted per
    address, the per-address and per-pair limits never held for it."""
    server = serve(
        limits=GuardLimits(trusted_proxies=parse_networks(["127.0.0.1"])),
        throttle=ThrottleLimits(per_pair=5, per_address=10, per_user=1000),
    )

    def sign_in(address: str, user: str) -> int:
        b = WebClient(server.url)
        b.opener.addheaders = [("X-Forwarded-For", address)]
        return b.login(user, "wrong password")

    codes = [sign_in(f"2001:db8:0:1::{i:x}", "alice") for i in range(1, 9)]
    assert codes == [401] * 5 + [429] * 3, codes  # one client, one pair
    codes = [sign_in(f"2001:db8:0:1:{i:x}::1", f"name-{i}") for i in range(1, 9)]
    assert codes == [401] * 5 + [429] * 3, codes  # the address's 10 in all
    assert sign_in("2001:db8:0:2::1", "alice") == 401  # the next /64 is another client
    assert sign_in("::ffff:192.0.2.9", "alice") == 401 and sign_in("192.0.2.9", "alice") == 401
