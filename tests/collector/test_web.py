"""The supervisor page: login, site scoping, review and contest over HTTP; live updates in headless Chromium."""

from __future__ import annotations

import http.cookiejar
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from deskwatch_collector import auth
from deskwatch_collector.ingest import apply
from deskwatch_collector.store import Store
from deskwatch_collector.subscriber import Subscriber
from deskwatch_collector.validate import Validator
from deskwatch_collector.web import Hub, SupervisorServer
from deskwatch_dev.fleet import Outgoing, SimDevice
from tests.support.common import REPO
from tests.support.mosquitto import Broker

ARTIFACTS = REPO / "test-artifacts"
PASSWORD = "correct horse 1"


def put(store: Store, messages: list[Outgoing]) -> None:
    validator = Validator()
    now = time.time()
    with store.transaction() as tx:
        for m in messages:
            props = dict(m.properties.UserProperty) if m.properties and hasattr(m.properties, "UserProperty") else {}
            apply(tx, validator.check(m.topic, m.payload, props), now, now)


@dataclass
class Site:
    store: Store
    server: SupervisorServer
    hub: Hub
    acme: list[SimDevice]
    other: SimDevice

    @property
    def url(self) -> str:
        return self.server.url


def thumbnail(path: Path) -> bytes:
    import io

    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.thumbnail((320, 240))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    return buf.getvalue()


@pytest.fixture
def site(store_factory: Callable[[str], Store], photos: Path) -> Iterator[Site]:
    store = store_factory("sqlite")
    for name, role, sites, worker in [
        ("alice", "supervisor", ["acme"], None),
        ("bob", "supervisor", ["globex"], None),
        ("w-1", "worker", ["acme"], "w-1"),
    ]:
        auth.add_user(store, name, PASSWORD, role, sites, worker)
    acme = [SimDevice("acme", f"desk-{c}", f"w-{i + 1}") for i, c in enumerate("abc")]
    other = SimDevice("globex", "desk-x", "w-9")
    put(store, [acme[0].status("online"), acme[1].status("degraded", ["camera: not found"]), acme[2].status("online")])
    put(store, [acme[2].status("offline")] + [d.health() for d in acme[:2]])
    phone, eating = thumbnail(photos / "phone_01.jpg"), thumbnail(photos / "eat_02.jpg")
    put(
        store,
        acme[0].violation(finding_type="phone_use", jpeg=phone)[:2]
        + other.violation(finding_type="eating", jpeg=eating)[:2],
    )
    put(store, acme[1].violation(finding_type="extra_person", with_evidence=False)[:1])
    hub = Hub()
    server = SupervisorServer(("127.0.0.1", 0), store, hub)
    server.start()
    yield Site(store, server, hub, acme, other)
    server.stop()


class Browser:
    """A tiny cookie-keeping HTTP client (no redirects followed, so 303s are visible)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a: Any, **k: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def call(self, path: str, data: bytes | None = None, ctype: str | None = None) -> tuple[int, Message, bytes]:
        req = urllib.request.Request(self.base + path, data=data)
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with self.opener.open(req, timeout=5) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def login(self, user: str, password: str = PASSWORD) -> tuple[int, Message]:
        status, headers, _ = self.call(
            "/login", f"username={user}&password={password}".encode(), "application/x-www-form-urlencoded"
        )
        return status, headers

    def post_json(self, path: str, obj: Any) -> tuple[int, Any]:
        status, _, body = self.call(path, json.dumps(obj).encode(), "application/json")
        return status, json.loads(body)

    def get_json(self, path: str) -> tuple[int, Any]:
        status, _, body = self.call(path)
        return status, json.loads(body)


def test_login_is_required_and_the_cookie_is_httponly_samesite(site: Site) -> None:
    b = Browser(site.url)
    assert b.call("/")[0] == 303
    assert b.get_json("/api/events")[0] == 401
    status, _, body = b.call("/login", b"username=alice&password=wrong-one", "application/x-www-form-urlencoded")
    assert status == 401 and b"Wrong user name or password" in body
    assert b.login("nobody")[0] == 401
    status, headers = b.login("alice")
    assert status == 303
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert b.call("/")[0] == 200
    with site.store.transaction(write=False) as tx:
        stored = tx.one("SELECT password_hash FROM users WHERE username = 'alice'")
        tokens = tx.rows("SELECT token_hash FROM sessions")
    assert stored is not None and stored[0].startswith("scrypt$") and PASSWORD not in stored[0]
    assert cookie.split(";")[0].split("=", 1)[1] not in {t[0] for t in tokens}  # only the hash is stored
    assert b.post_json("/logout", {})[0] == 200
    assert b.get_json("/api/events")[0] == 401


def test_supervisors_see_only_their_sites(site: Site) -> None:
    alice, bob = Browser(site.url), Browser(site.url)
    alice.login("alice")
    bob.login("bob")
    _, mine = alice.get_json("/api/events")
    _, theirs = bob.get_json("/api/events")
    assert {e["site"] for e in mine["events"]} == {"acme"} and len(mine["events"]) == 2
    assert [e["site"] for e in theirs["events"]] == ["globex"]
    acme_event = next(e for e in mine["events"] if e["evidence_url"])
    assert alice.call(acme_event["evidence_url"])[1]["Content-Type"] == "image/jpeg"
    assert bob.call(acme_event["evidence_url"])[0] == 404
    assert bob.post_json(f"/api/events/{acme_event['event_id']}/review", {"action": "dismiss"})[0] == 404
    _, fleet = bob.get_json("/api/fleet")
    assert [d["device_id"] for d in fleet["devices"]] == ["desk-x"]
    _, fleet = alice.get_json("/api/fleet")
    assert {d["device_id"]: d["state"] for d in fleet["devices"]} == {
        "desk-a": "online", "desk-b": "degraded", "desk-c": "offline"}  # fmt: skip


def test_review_and_contest(site: Site) -> None:
    alice, worker = Browser(site.url), Browser(site.url)
    alice.login("alice")
    worker.login("w-1")
    _, events = worker.get_json("/api/events")
    assert [e["worker_id"] for e in events["events"]] == ["w-1"]  # a worker sees their own findings only
    event_id = events["events"][0]["event_id"]
    assert worker.post_json(f"/api/events/{event_id}/review", {"action": "dismiss"})[0] == 403
    assert worker.post_json(f"/api/events/{event_id}/contest", {"note": ""})[0] == 400
    status, ev = worker.post_json(f"/api/events/{event_id}/contest", {"note": "That was my calculator."})
    assert status == 200 and ev["contest_note"] == "That was my calculator."
    assert alice.post_json(f"/api/events/{event_id}/contest", {"note": "x"})[0] == 403
    assert alice.post_json(f"/api/events/{event_id}/review", {"action": "delete"})[0] == 400
    # A form post from another site cannot act: JSON only.
    status, _, _ = alice.call(f"/api/events/{event_id}/review", b"action=dismiss", "application/x-www-form-urlencoded")
    assert status == 415
    status, ev = alice.post_json(f"/api/events/{event_id}/review", {"action": "dismiss", "note": "calculator, agreed"})
    assert status == 200
    assert (ev["review_state"], ev["review_note"], ev["reviewed_by"]) == ("dismissed", "calculator, agreed", "alice")
    assert ev["contest_note"] == "That was my calculator."


# -- headless Chromium ------------------------------------------------------------------------


@pytest.fixture
def chromium() -> Iterator[Any]:
    chromium_bin, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium_bin or not driver_bin:
        pytest.fail("apt-get install chromium chromium-driver (Debian's headless Chromium drives the page test)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="deskwatch-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_bin
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,900"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.broker
def test_live_violations_in_chromium(
    site: Site, chromium: Any, mosquitto: Broker, start_collector: Callable[..., Subscriber],
    fleet_publisher: Callable[..., Any], photos: Path,
) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    collector = start_collector(mosquitto, site.store)
    collector.on_stored = site.hub.notify
    worker = Browser(site.url)
    worker.login("w-1")
    _, mine = worker.get_json("/api/events")
    worker.post_json(f"/api/events/{mine['events'][0]['event_id']}/contest", {"note": "I was on a work call."})

    from selenium.common.exceptions import StaleElementReferenceException

    d = chromium
    wait = WebDriverWait(d, 15, ignored_exceptions=[StaleElementReferenceException])  # the page re-renders
    d.get(site.url + "/")
    assert d.current_url.endswith("/login")
    d.find_element(By.ID, "username").send_keys("alice")
    d.find_element(By.ID, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "live"), "live"))
    wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "article.event")) == 2)
    assert "globex" not in d.page_source and "desk-x" not in d.page_source
    # A device publishes a violation now: it reaches the page through broker, collector, database and SSE.
    fresh = site.acme[2].violation(finding_type="extra_person", jpeg=thumbnail(photos / "multi_03.jpg"))
    fleet_publisher(mosquitto).send(fresh)
    card_css = f"article[data-event-id='{fresh[0].event_id}']"
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, card_css)))
    text = wait.until(lambda drv: drv.find_element(By.CSS_SELECTOR, card_css).text)
    assert "Extra person" in text and "desk-c" in text and "Worker w-3" in text
    wait.until(lambda drv: drv.execute_script(
        "const i = document.querySelector(arguments[0] + ' img'); return i && i.complete && i.naturalWidth", card_css))  # fmt: skip
    contested_css = f"article[data-event-id='{mine['events'][0]['event_id']}']"
    assert "Worker contests: I was on a work call." in d.find_element(By.CSS_SELECTOR, contested_css).text
    # Acknowledge with a note.
    d.find_element(By.CSS_SELECTOR, card_css + " textarea").send_keys("called the worker")
    d.find_element(By.CSS_SELECTOR, card_css + " button.ack").click()
    wait.until(
        lambda drv: "acknowledged by alice: called the worker" in drv.find_element(By.CSS_SELECTOR, card_css).text
    )
    # Fleet view from status + health.
    wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#fleet tr")) == 3)
    states = wait.until(lambda drv: drv.execute_script(
        "const out = {}; for (const r of document.querySelectorAll('#fleet tr'))"
        " out[r.dataset.device] = r.querySelector('.state').textContent; return out;"))  # fmt: skip
    assert states == {"desk-a": "online", "desk-b": "degraded (camera: not found)", "desk-c": "offline"}
    ARTIFACTS.mkdir(exist_ok=True)
    assert d.save_screenshot(str(ARTIFACTS / "collector-supervisor.png"))
    with site.store.transaction(write=False) as tx:
        row = tx.one(
            "SELECT review_state, review_note, reviewed_by FROM events WHERE event_id = ?", (fresh[0].event_id,)
        )
    assert row == ("acknowledged", "called the worker", "alice")


def test_repeated_failed_sign_ins_are_throttled(site: Site) -> None:
    b = Browser(site.url)
    for _ in range(5):
        assert b.call("/login", b"username=alice&password=guess", "application/x-www-form-urlencoded")[0] == 401
    status, _, body = b.call(
        "/login", f"username=alice&password={PASSWORD}".encode(), "application/x-www-form-urlencoded"
    )
    assert status == 429 and b"Too many failed attempts" in body
