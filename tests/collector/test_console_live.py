"""The console live, end to end in headless Chromium: a device publishes its status, health
and a finding with its picture through Mosquitto; the collector's intake stores them; a
supervisor's open queue page learns of the finding by itself (it asks ``/api/queue/latest``
every ``poll_seconds``) and says so; the event opens with its picture and is upheld with a
note; the fleet shows the new desk. Then the account is disabled and the open page goes
to the sign-in form by itself, at its next poll.

The console polls; nothing holds a connection open. What the first landing's live page
(server-sent events) promised, "open live pages end within 30 s" of a password change,
now reads: every request checks the session, and an open console page finds out within
one poll (5 s by default; 1 s here).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from deskwatch_collector import auth
from deskwatch_collector.console.routes import ConsoleSettings
from deskwatch_collector.store import Store
from deskwatch_collector.subscriber import Subscriber
from deskwatch_dev.fleet import SimDevice
from tests.support.console import seed_demo, thumbnail
from tests.support.mosquitto import Broker
from tests.support.web import ARTIFACTS, ServerFactory, sign_in, wait

POLL_SECONDS = 1.0


@pytest.mark.slow
@pytest.mark.broker
def test_a_published_finding_reaches_an_open_console_page_and_a_disabled_account_leaves_it(
    console_store: Callable[[str], Store], console_server: ServerFactory, browser: Callable[[int], Any],
    mosquitto: Broker, start_collector: Callable[..., Subscriber], fleet_publisher: Callable[..., Any],
) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By

    store = console_store("sqlite")
    seed_demo(store, datetime.now(UTC).replace(microsecond=0))
    server = console_server(store, ConsoleSettings(poll_seconds=POLL_SECONDS))
    start_collector(mosquitto, store)
    d = browser(1280)
    sign_in(d, server.url, "alice")
    assert d.current_url.endswith("/queue")
    banner = d.find_element(By.ID, "new-banner")
    assert not banner.is_displayed()

    # A new desk comes online and reports a finding with its picture.
    desk = SimDevice("acme", "d07", "w-7")
    fresh = desk.violation(finding_type="extra_person", jpeg=thumbnail("multi_03.jpg")[0])
    event_id = fresh[0].event_id
    fleet_publisher(mosquitto).send([desk.status("online"), desk.health(), *fresh])
    # Broker, intake, database, then the page's next poll: 0.94-0.99 s in five runs here.
    wait(lambda: banner.is_displayed() and "1 new open event" in banner.text, timeout=15)
    banner.find_element(By.LINK_TEXT, "Show").click()
    row = wait(lambda: d.find_element(By.CSS_SELECTOR, f".event-row[data-event-id='{event_id}']"))
    assert "Extra person" in row.text and "d07" in row.text and "w-7" in row.text
    (ARTIFACTS / "console").mkdir(parents=True, exist_ok=True)
    assert d.save_screenshot(str(ARTIFACTS / "console" / "live-new-finding-1280.png"))

    # It opens with its picture; upheld with a note.
    row.click()
    wait(lambda: f"/events/{event_id}" in d.current_url)
    wait(lambda: d.execute_script("const i = document.querySelector('.frame img'); return i && i.naturalWidth > 0"))
    d.find_element(By.ID, "review-note").send_keys("called the worker")
    d.find_element(By.CSS_SELECTOR, "button[data-action=acknowledge]").click()
    wait(lambda: _review(store, event_id) == ("acknowledged", "called the worker", "alice"))
    wait(lambda: d.find_element(By.ID, "toast").text == "Upheld.")  # the page it went on to has loaded

    # The fleet shows the new desk from its status and health.
    d.get(server.url + "/fleet")
    fleet_row = d.find_element(By.CSS_SELECTOR, ".fleet-table tbody tr[data-device='d07']")
    assert "Online" in fleet_row.text and "0.1.0-sim" in fleet_row.text

    # The account is disabled: the open page ends up on the sign-in form by itself.
    d.get(server.url + "/queue")
    wait(lambda: d.execute_script("return document.readyState === 'complete'"))
    auth.set_disabled(store, "alice", True)
    wait(lambda: d.current_url.endswith("/login"), timeout=POLL_SECONDS + 5)  # its next poll got a 401
    assert d.find_elements(By.ID, "password")


def _review(store: Store, event_id: str) -> tuple[Any, ...] | None:
    with store.transaction(write=False) as tx:
        return tx.one("SELECT review_state, review_note, reviewed_by FROM events WHERE event_id = ?", (event_id,))
