"""The collector's web server in tests, as the collector runs it: the console's routes on
hypercorn behind the guard; a cookie-keeping HTTP client; headless Chromium.

- ``console_server(store, ...)`` (fixture): a started :class:`SupervisorServer` with the
  console's routes, stopped at teardown.
- :class:`WebClient`: sign in, call a page or the JSON API; redirects are not followed,
  so a 303 is visible.
- ``browser(width)`` (fixture): Debian's Chromium through chromedriver, headless, in
  Europe/Berlin; :func:`sign_in` and :func:`wait` for what the pages do by script.
- ``PASSWORD`` of every test account; ``ARTIFACTS`` for screenshots.
"""

from __future__ import annotations

import http.cookiejar
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deskwatch_collector.console.routes import ConsoleSettings, console_routes
from deskwatch_collector.store import Store
from deskwatch_collector.web import SupervisorServer
from tests.support.common import REPO

PASSWORD = "correct horse 1"
ARTIFACTS = REPO / "test-artifacts"

ServerFactory = Callable[..., SupervisorServer]


@pytest.fixture
def console_server() -> Iterator[ServerFactory]:
    """``console_server(store, settings=None, **kwargs)``: the supervisor page's server with the
    console's routes, started on a free loopback port (``kwargs`` go to :class:`SupervisorServer`)."""
    started: list[SupervisorServer] = []

    def start(store: Store, settings: ConsoleSettings | None = None, **kwargs: Any) -> SupervisorServer:
        routes = console_routes(settings or ConsoleSettings())
        server = SupervisorServer(("127.0.0.1", 0), store, extra_routes=routes, **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class WebClient:
    """A cookie-keeping HTTP client for the pages and the JSON API (redirects are not followed)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a: Any, **k: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def call(
        self, path: str, data: bytes | None = None, ctype: str | None = None, method: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers with lower-case names, body)``; an HTTP error status is returned, not raised."""
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with self.opener.open(req, timeout=10) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def login(self, user: str, password: str = PASSWORD) -> int:
        form = urllib.parse.urlencode({"username": user, "password": password}).encode()
        return self.call("/login", form, "application/x-www-form-urlencoded")[0]

    @property
    def session(self) -> str | None:
        """The session cookie's value, if the server set one."""
        return next((c.value for c in self.jar if c.name == "dw_session" and c.value), None)

    def get_json(self, path: str) -> tuple[int, Any]:
        status, _, body = self.call(path)
        return status, json.loads(body)

    def post_json(self, path: str, obj: Any) -> tuple[int, Any]:
        status, _, body = self.call(path, json.dumps(obj).encode(), "application/json")
        return status, json.loads(body)


# -- headless Chromium --------------------------------------------------------------------------
def chromium(width: int, profile: str | None = None, flags: tuple[str, ...] = ()) -> Any:
    """Headless Chromium ``width`` px wide; ``profile``: a user data directory to reuse (the same
    browser started again), else a new one; ``flags``: more command-line switches."""
    chromium_bin, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium_bin or not driver_bin:
        pytest.fail("apt-get install chromium chromium-driver (Debian's headless Chromium drives the page tests)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_bin
    profile = profile or tempfile.mkdtemp(prefix="deskwatch-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 f"--window-size={width},900", "--force-device-scale-factor=1", "--lang=en-GB", *flags):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The browser's zone: the console prints times in it, with its name.
    driver = webdriver.Chrome(service=Service(driver_bin, env={"TZ": "Europe/Berlin"}), options=options)
    driver.set_page_load_timeout(20)
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Europe/Berlin"})
    driver.profile_dir = profile
    return driver


@pytest.fixture
def browser() -> Iterator[Callable[[int], Any]]:
    """``browser(width)``: a headless Chromium window that many px wide (quit at teardown)."""
    made: list[Any] = []

    def make(width: int) -> Any:
        made.append(chromium(width))
        return made[-1]

    yield make
    for d in made:
        d.quit()
        shutil.rmtree(d.profile_dir, ignore_errors=True)


def wait(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``predicate()``'s first truthy value within ``timeout`` seconds (AssertionError if none)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = predicate()
        except Exception:  # an element replaced by a navigation: look again
            got = None
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout} s: {predicate}")


def sign_in(d: Any, base: str, user: str, password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By

    d.get(base + "/login")
    d.find_element(By.ID, "username").send_keys(user)
    d.find_element(By.ID, "password").send_keys(password)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The first page tells the server the browser's zone (a cookie) and reloads once with it.
    wait(lambda: "/login" not in d.current_url and d.execute_script(
        "return document.readyState === 'complete' && document.body.dataset.tz === "
        "Intl.DateTimeFormat().resolvedOptions().timeZone"))  # fmt: skip


__all__ = ["ARTIFACTS", "PASSWORD", "ServerFactory", "WebClient", "browser", "chromium", "sign_in", "wait"]
