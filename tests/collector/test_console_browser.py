"""The console in headless Chromium, as a supervisor and a worker use it: sign in, filter,
page back, open an event, review by keyboard, export, get an alert, read the accuracy
report, the fleet and a device, contest as the worker. Every page is screenshot at
1280 px and at phone width (test-artifacts/console/) and must not overflow sideways;
the browser must report no Content-Security-Policy violation."""

from __future__ import annotations

import contextlib
import csv
import http.server
import io
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deskwatch_collector.console.routes import ConsoleSettings
from deskwatch_collector.store import Store
from deskwatch_collector.web import SupervisorServer
from tests.support.console import Demo, seed_demo, store_messages
from tests.support.web import ARTIFACTS, PASSWORD, ServerFactory, chromium, sign_in, wait

pytestmark = pytest.mark.slow
SHOTS = ARTIFACTS / "console"
PHONE = 390


@pytest.fixture
def site(console_store: Callable[[str], Store], console_server: ServerFactory) -> tuple[SupervisorServer, Demo]:
    store = console_store("sqlite")
    demo = seed_demo(store, datetime.now(UTC).replace(microsecond=0))
    return console_server(store, ConsoleSettings(poll_seconds=1)), demo


def shot(d: Any, name: str, width: int) -> Path:
    """A full-page screenshot; the page must fit the width (no sideways scrolling)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    wait(lambda: d.execute_script("return document.readyState === 'complete'"))
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(width, min(max(int(height), 600), 6000))  # the whole page in view: lazy pictures load
    wait(lambda: d.execute_script("return [...document.images].every(i => i.complete)"))
    scroll_width, inner = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll_width <= inner, f"{name} at {width} px is {scroll_width} px wide"
    path = SHOTS / f"{name}-{width}.png"
    assert d.save_screenshot(str(path))
    d.set_window_size(width, 900)
    return path


def no_csp_violations(d: Any) -> None:
    problems = [e["message"] for e in d.get_log("browser") if "Content Security Policy" in e["message"]]
    assert problems == []


def test_supervisor_works_the_queue_in_chromium(
    site: tuple[SupervisorServer, Demo], browser: Callable[[int], Any]
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, demo = site
    base, d = server.url, browser(1280)
    d.execute_cdp_cmd("Browser.grantPermissions", {"origin": base, "permissions": ["notifications"]})
    sign_in(d, base, "alice")
    assert d.current_url.endswith("/queue")
    open_count = int(d.find_element(By.CSS_SELECTOR, ".tabs a[aria-current=page] .n").text)
    assert open_count == sum(1 for e in demo.events if e["event_id"] not in reviewed(server))
    assert "CET" in d.find_element(By.CSS_SELECTOR, ".event-row time").text  # times carry the zone

    # Filter: all states, phone use at acme.
    d.find_element(By.CSS_SELECTOR, ".tabs a[href*='view=all']").click()
    d.find_element(By.CSS_SELECTOR, "input[name=type][value=phone_use]").click()
    d.find_element(By.CSS_SELECTOR, "input[name=site][value=acme]").click()
    d.find_element(By.CSS_SELECTOR, "#filter-form button[type=submit]").click()
    wait(lambda: "type=phone_use" in d.current_url)
    rows = d.find_elements(By.CSS_SELECTOR, ".event-row")
    phone_at_acme = [e for e in demo.events if e["type"] == "phone_use" and e["site"] == "acme"]
    assert len(rows) == len(phone_at_acme) and all("Phone use" in r.text for r in rows)
    assert d.find_element(By.CSS_SELECTOR, ".total strong").text == str(len(phone_at_acme))
    shot(d, "queue-filtered", 1280)

    # Page older, then back: the same first page.
    d.get(base + "/queue?view=all&limit=20")
    first = [r.get_attribute("data-event-id") for r in d.find_elements(By.CSS_SELECTOR, ".event-row")]
    d.find_element(By.CSS_SELECTOR, ".toolbar a[rel=next]").click()
    wait(lambda: "before=" in d.current_url)
    second = [r.get_attribute("data-event-id") for r in d.find_elements(By.CSS_SELECTOR, ".event-row")]
    assert len(second) == 20 and not set(first) & set(second)
    d.find_element(By.CSS_SELECTOR, ".toolbar a[rel=prev]").click()
    wait(lambda: "after=" in d.current_url)
    assert [r.get_attribute("data-event-id") for r in d.find_elements(By.CSS_SELECTOR, ".event-row")] == first

    # Open the newest open event with the keyboard; the picture and its boxes show.
    d.get(base + "/queue")
    keys = ActionChains(d)
    keys.send_keys("j").perform()
    chosen = d.find_element(By.CSS_SELECTOR, ".event-row.selected").get_attribute("data-event-id")
    keys.send_keys(Keys.ENTER).perform()
    wait(lambda: f"/events/{chosen}" in d.current_url)
    if d.find_elements(By.CSS_SELECTOR, ".frame img"):
        wait(lambda: d.execute_script("return document.querySelector('.frame img').naturalWidth > 0"))
    next_id = d.execute_script("return document.body.dataset.next").split("/events/")[1].split("?")[0]
    assert d.find_elements(By.CSS_SELECTOR, "table.compact tr.outcome-violation")  # the scan's checks
    shot(d, "event", 1280)

    # Dismiss by keyboard: d, reason 2, n, a note, Enter; the next open event follows.
    for k in ("d", "2", "n"):
        ActionChains(d).send_keys(k).perform()
    ActionChains(d).send_keys("a calculator, not a phone").send_keys(Keys.ENTER).perform()
    wait(lambda: f"/events/{next_id}" in d.current_url)
    wait(lambda: d.find_element(By.ID, "toast").text == "Dismissed.")
    with server.store.transaction(write=False) as tx:
        state = tx.one("SELECT review_state, review_reason, review_note, reviewed_by FROM events WHERE event_id = ?",
                       (chosen,))  # fmt: skip
        trail = tx.rows("SELECT action, reason, actor FROM review_log WHERE event_id = ?", (chosen,))
    assert state == ("dismissed", "misread_object", "a calculator, not a phone", "alice")
    assert trail == [("dismiss", "misread_object", "alice")]
    ActionChains(d).send_keys("a").perform()  # uphold the next one
    wait(lambda: reviewed(server).get(next_id) == "acknowledged")
    wait(lambda: d.find_element(By.ID, "toast").text == "Upheld.")  # the page it went on to has loaded

    # Export what is filtered, as the link gives it.
    d.get(base + "/queue?view=dismissed")
    href = d.find_element(By.LINK_TEXT, "Export CSV").get_attribute("href")
    text = d.execute_script("return fetch(arguments[0]).then(r => r.text())", href)
    exported = list(csv.DictReader(io.StringIO(text)))
    assert {r["review_state"] for r in exported} == {"dismissed"} and chosen in {r["event_id"] for r in exported}
    assert {r["zone"] for r in exported} == {"Europe/Berlin"}

    # Alerts: a new open event while the page is open gives a notification and a sound.
    d.find_element(By.ID, "alerts").click()
    wait(lambda: d.find_element(By.ID, "alerts").get_attribute("aria-pressed") == "true")
    d.find_element(By.ID, "sound").click()  # the sound is a choice of its own
    wait(lambda: d.find_element(By.ID, "sound").get_attribute("aria-pressed") == "true")
    d.execute_script(
        "window.__notes = []; window.__beeps = 0;"
        "const N = window.Notification; window.Notification = function (t, o) { __notes.push([t, o.body]); return new N(t, o); };"
        "window.Notification.permission = N.permission; window.Notification.requestPermission = N.requestPermission;"
        "const o = AudioContext.prototype.createOscillator;"
        "AudioContext.prototype.createOscillator = function () { window.__beeps++; return o.call(this); };"
    )
    desk = demo.desks["d05"]
    store_messages(server.store, desk.finding("extra_person", datetime.now(UTC), photo="multi_03.jpg"), time.time())
    notes = wait(lambda: d.execute_script("return window.__notes"), timeout=15)
    assert notes[0] == ["deskwatch: Extra person", "d05 · w-5 · acme"]
    assert d.execute_script("return window.__beeps") >= 1
    assert "1 new open event" in d.find_element(By.ID, "new-banner").text

    # The accuracy report, the fleet and a device.
    d.get(base + "/accuracy")
    assert d.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    noisy = d.find_element(By.ID, "noisy").find_element(By.XPATH, "..").text
    assert "d03" in noisy and "Phone use" in noisy
    shot(d, "accuracy", 1280)
    d.get(base + "/fleet")
    row = {r.get_attribute("data-device"): r.text for r in d.find_elements(By.CSS_SELECTOR, ".fleet-table tbody tr")}
    assert "Paused" in row["d02"] and "fetch water" in row["d02"] and "min left" in row["d02"]
    assert "clock not synchronised" in row["d03"] and "Phone use" in row["d03"]  # and its noisy rule
    assert "offline" in row["d04"] and "camera" in row["d05"] and "no worker enrolled" in row["d06"]
    shot(d, "fleet", 1280)
    d.find_element(By.LINK_TEXT, "Device").click()  # sort by device name
    wait(lambda: "sort=device" in d.current_url)
    names = [r.get_attribute("data-device") for r in d.find_elements(By.CSS_SELECTOR, ".fleet-table tbody tr")]
    assert names == sorted(names)
    d.find_element(By.LINK_TEXT, "d03").click()
    wait(lambda: d.current_url.endswith("/devices/acme/d03"))
    assert "noisy" in d.find_element(By.CSS_SELECTOR, "table.report").text
    shot(d, "device", 1280)
    no_csp_violations(d)


def reviewed(server: SupervisorServer) -> dict[str, str]:
    with server.store.transaction(write=False) as tx:
        return {r[0]: r[1] for r in tx.rows("SELECT event_id, review_state FROM events WHERE review_state != 'open'")}


def test_worker_sees_their_findings_and_contests_in_chromium(site: tuple[SupervisorServer, Demo],
                                                             browser: Callable[[int], Any]) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By

    server, demo = site
    d = browser(1280)
    sign_in(d, server.url, "w-1")
    assert d.current_url.endswith("/me")
    cards = d.find_elements(By.CSS_SELECTOR, ".finding")
    assert len(cards) == len(demo.desks["d01"].sent)
    text = d.find_element(By.CSS_SELECTOR, "ol.findings").text
    assert "Not reviewed yet." in text and "You said:" in text
    # when the picture goes, as a time in the worker's zone: "in 1 day" once meant two hours
    assert re.search(r"Picture deleted \d{4}-\d\d-\d\d \d\d:\d\d \S+\.", text), text
    target = cards[0]
    event_id = target.get_attribute("data-event-id")
    target.find_element(By.TAG_NAME, "textarea").send_keys("I was reading a message from IT about the outage.")
    target.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(lambda: "You said:" in d.find_element(By.ID, event_id).text)
    assert "I was reading a message from IT" in d.find_element(By.ID, event_id).text
    with server.store.transaction(write=False) as tx:
        assert tx.one("SELECT contest_note FROM events WHERE event_id = ?", (event_id,)) == (
            "I was reading a message from IT about the outage.",)  # fmt: skip
    shot(d, "worker", 1280)
    no_csp_violations(d)


def test_every_page_fits_a_phone(site: tuple[SupervisorServer, Demo], browser: Callable[[int], Any]) -> None:
    from selenium.webdriver.common.by import By

    server, demo = site
    d = browser(PHONE)
    sign_in(d, server.url, "alice")
    d.get(server.url + "/queue?view=all&type=phone_use&type=extra_person&site=acme")
    assert not d.find_element(By.ID, "filters").get_attribute("open")  # folded away on a small screen
    shot(d, "queue-filtered", PHONE)
    event_id = next(e for e in demo.events if e["type"] == "extra_person")["event_id"]
    d.get(server.url + f"/events/{event_id}?view=all")
    shot(d, "event", PHONE)
    for page, path in (("accuracy", "/accuracy"), ("fleet", "/fleet"), ("device", "/devices/acme/d03")):
        d.get(server.url + path)
        shot(d, page, PHONE)
    d.delete_all_cookies()
    d.execute_script("sessionStorage.clear()")  # a new browser session
    sign_in(d, server.url, "w-1")
    shot(d, "worker", PHONE)
    no_csp_violations(d)
    assert datetime.now(UTC) - demo.now < timedelta(minutes=10)


@pytest.fixture
def other_sites() -> Iterator[Callable[[str, str], str]]:
    """``page(host, html)``: the URL of a web page with ``html`` served from ``host`` on a free port."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def page(host: str, html: str) -> str:
        body = html.encode()

        class One(http.server.BaseHTTPRequestHandler):
            timeout = 2  # a connection the browser opened ahead and never used

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer((host, 0), One)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://{host}:{server.server_address[1]}/"

    yield page
    for server in servers:
        server.shutdown()
        server.server_close()


def test_another_sites_page_can_neither_sign_the_supervisor_in_as_someone_else_nor_out(
    site: tuple[SupervisorServer, Demo], browser: Callable[[int], Any], other_sites: Callable[[str, str], str]
) -> None:
    """Login CSRF: alice, signed in, opens a page on another site that submits the sign-in
    form with the credentials of an account its author holds (the worker w-1). Her browser
    stayed hers - before, it came back signed in as w-1, and what she did next was done as
    w-1. A page of another service on the same host (same site, so her Strict cookie goes
    with it) cannot sign her out either."""
    from selenium.webdriver.common.by import By

    server, _ = site
    d = browser(1280)
    sign_in(d, server.url, "alice")
    form = (f'<form id=f method=post action="{server.url}/login"><input name=username value="w-1">'
            f'<input name=password value="{PASSWORD}"></form><script>document.getElementById("f").submit()</script>')  # fmt: skip
    d.get(other_sites("127.0.0.2", form))
    wait(lambda: d.current_url.startswith(server.url) and d.execute_script("return document.readyState") == "complete")
    d.get(server.url + "/")
    assert d.current_url.endswith("/queue") and d.find_element(By.CSS_SELECTOR, ".user").text == "alice"
    same_host = other_sites("127.0.0.1", f'<form id=f method=post action="{server.url}/logout"></form>'
                                         '<script>document.getElementById("f").submit()</script>')  # fmt: skip
    d.get(same_host)
    wait(lambda: d.current_url.startswith(server.url + "/logout"))
    d.get(server.url + "/")
    assert d.current_url.endswith("/queue") and d.find_element(By.CSS_SELECTOR, ".user").text == "alice"


def test_closing_the_browser_leaves_no_one_signed_in(site: tuple[SupervisorServer, Demo]) -> None:
    """A supervisor on a shared PC closes the browser instead of signing out. The session
    cookie had a Max-Age of 12 hours, so the next person to open the browser within them
    was in as the supervisor; it now lasts as long as the browser runs."""
    from selenium.webdriver.common.by import By

    server, _ = site
    profile = tempfile.mkdtemp(prefix="deskwatch-chromium-")
    try:
        d = chromium(1280, profile)
        try:
            sign_in(d, server.url, "alice")
            assert d.find_element(By.CSS_SELECTOR, ".user").text == "alice"
        finally:
            d.quit()
        d = chromium(1280, profile)  # the same browser, started again
        try:
            d.get(server.url + "/queue")
            wait(lambda: d.current_url.endswith("/login"))
            assert not [c for c in d.get_cookies() if c["name"] == "dw_session"]
        finally:
            d.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_sign_out_works_where_no_script_runs(
    site: tuple[SupervisorServer, Demo], browser: Callable[[int], Any]
) -> None:
    """The pages work without script, but Sign out was a script's button: where no script
    runs (a policy, an extension, console.js not loading) clicking it did nothing, and the
    supervisor who clicked and left stayed signed in."""
    from selenium.webdriver.common.by import By

    server, _ = site
    d = browser(1280)
    sign_in(d, server.url, "alice")
    d.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    d.get(server.url + "/queue")
    d.find_element(By.ID, "logout").click()
    wait(lambda: d.current_url.endswith("/login"))
    assert not [c for c in d.get_cookies() if c["name"] == "dw_session"]
    d.get(server.url + "/queue")
    assert d.current_url.endswith("/login")


def test_a_page_left_open_signs_the_supervisor_out_after_the_idle_timeout_and_says_why(
    console_store: Callable[[str], Store], console_server: ServerFactory, browser: Callable[[int], Any]
) -> None:
    """A supervisor leaves the queue open on a shared PC. The page polls for alerts every
    second, and the session lasted 12 hours whatever the person did, so the findings stayed
    open to whoever sat down; the poll now does not count, and after the idle timeout (4 s
    here) the page goes to the sign-in form saying why. Working keeps the session."""
    from selenium.webdriver.common.by import By

    store = console_store("sqlite")
    seed_demo(store, datetime.now(UTC).replace(microsecond=0))
    server = console_server(store, ConsoleSettings(poll_seconds=1))
    server.ctx.settings.idle_seconds = 4  # run --idle-timeout (its least is 60 s)
    d = browser(1280)
    sign_in(d, server.url, "alice")
    for path in ("/queue", "/fleet", "/accuracy", "/queue?view=all"):  # working: 2.5 s between pages, 10 s in all
        time.sleep(2.5)
        d.get(server.url + path)
        assert d.find_element(By.CSS_SELECTOR, ".user").text == "alice", path
    left = time.monotonic()
    time.sleep(2.5)  # nobody touches the page; it polls
    polls = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/api/queue/latest')).length"
    assert d.execute_script(polls) >= 2 and "/login" not in d.current_url
    wait(lambda: "/login" in d.current_url, timeout=15)  # it goes by itself
    assert time.monotonic() - left >= 3.5  # not before the timeout
    assert d.current_url.endswith("/login?signed_out=idle")
    notice = d.find_element(By.CSS_SELECTOR, ".login .notice").text
    assert notice == "You were signed out after 4 seconds without activity. Sign in again to go on."
    d.get(server.url + "/queue")
    assert "/login" in d.current_url  # the session is gone on the server, not just in the page
    with store.transaction(write=False) as tx:
        assert tx.one("SELECT COUNT(*) FROM sessions") == (0,)


def _tls_relay(context: ssl.SSLContext, target: int) -> socketserver.ThreadingTCPServer:
    """HTTPS in front of a plain-HTTP port: TLS ends here, the bytes go on as they are."""

    class Relay(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            inner = socket.create_connection(("127.0.0.1", target))

            def pump(src: socket.socket, dst: socket.socket) -> None:
                with contextlib.suppress(OSError):
                    while data := src.recv(65536):
                        dst.sendall(data)
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

            back = threading.Thread(target=pump, args=(inner, self.request), daemon=True)
            back.start()
            pump(self.request, inner)
            back.join(10)
            inner.close()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, Any]:
            sock, address = super().get_request()
            return context.wrap_socket(sock, server_side=True), address

    server = Server(("127.0.0.1", 0), Relay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_over_https_a_sibling_subdomain_cannot_put_its_cookie_over_the_session(
    console_store: Callable[[str], Store], console_server: ServerFactory, tmp_path: Path
) -> None:
    """console.deskwatch.test and a sibling app, evil.deskwatch.test, both over HTTPS. The
    sibling set dw_session (and __Host-dw_session) with Domain=deskwatch.test, holding a
    session of mallory's own account; the browser sent it beside the supervisor's and the
    console took it: the supervisor went on as mallory. Chromium refuses a __Host- cookie
    with a Domain, and the console reads no other over HTTPS."""
    from selenium.webdriver.common.by import By

    from deskwatch_collector import auth

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=deskwatch.test",
         "-addext", "subjectAltName=DNS:*.deskwatch.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    store = console_store("sqlite")
    auth.add_user(store, "alice", PASSWORD, "supervisor", ["acme"], None)
    auth.add_user(store, "mallory", PASSWORD, "worker", ["acme"], "w-9")
    server = console_server(store, cookie_secure=True)  # HTTPS is the relay's
    theirs = auth.start_session(store, "mallory", time.time())

    class Sibling(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            for name in ("dw_session", "__Host-dw_session"):
                self.send_header("Set-Cookie", f"{name}={theirs}; Domain=deskwatch.test; Path=/; Secure")
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args: Any) -> None:
            pass

    sibling = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sibling)
    threading.Thread(target=sibling.serve_forever, daemon=True).start()
    relays = [_tls_relay(context, server.server_address[1]), _tls_relay(context, sibling.server_address[1])]
    flags = ("--ignore-certificate-errors", "--host-resolver-rules=MAP *.deskwatch.test 127.0.0.1")
    d = chromium(1280, flags=flags)
    try:
        base = f"https://console.deskwatch.test:{relays[0].server_address[1]}"
        sign_in(d, base, "alice")
        assert [c["name"] for c in d.get_cookies() if "session" in c["name"]] == ["__Host-dw_session"]
        d.get(f"https://evil.deskwatch.test:{relays[1].server_address[1]}/")
        d.get(base + "/queue")
        assert d.current_url == base + "/queue" and d.find_element(By.CSS_SELECTOR, ".user").text == "alice"
    finally:
        d.quit()
        shutil.rmtree(d.profile_dir, ignore_errors=True)
        for s in (*relays, sibling):
            s.shutdown()
            s.server_close()
