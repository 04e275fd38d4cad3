"""The desk window's "Your findings" tab under Xvfb, against the real collector (console on
hypercorn, SQLite) and a real broker: the worker's history loads when the window opens,
with dates, the picture that was sent, the review and the days until deletion; a live
finding joins the list; the worker contests from the window."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deskwatch_collector.console.routes import ConsoleSettings, console_routes
from deskwatch_collector.store import Store
from deskwatch_collector.web import SupervisorServer
from deskwatch_desk.config import load_desk_config
from deskwatch_desk.session import DeskSession
from tests.support.common import REPO
from tests.support.console import PASSWORD, Demo, seed_demo, thumbnail
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.broker]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def collector(console_store: Callable[[str], Store]) -> Iterator[tuple[SupervisorServer, Demo]]:
    store = console_store("sqlite")
    demo = seed_demo(store, datetime.now(UTC).replace(microsecond=0))
    server = SupervisorServer(("127.0.0.1", 0), store, extra_routes=console_routes(ConsoleSettings()))
    server.start()
    yield server, demo
    server.stop()


def pump(root: Any, until: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        root.update()
        if until():
            return True
        time.sleep(0.02)
    root.update()
    return until()


def rows(tab: Any) -> dict[str, tuple[str, ...]]:
    return {i: tuple(tab.tree.item(i, "values")) for i in tab.tree.get_children()}


def test_window_loads_the_workers_findings_and_contests(
    xvfb: Any, mosquitto: Broker, desk_config: Any, make_fake_appliance: Any, collector: Any, tmp_path: Path
) -> None:
    import tkinter as tk

    from deskwatch_desk.window import PauseWindow

    server, demo = collector
    path = desk_config(mosquitto, device_id="d01")
    secret = tmp_path / "w-1.collector-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    path.write_text(path.read_text() + f"collector: {{url: '{server.url}', username: w-1, password_file: {secret}}}\n")
    session = DeskSession(load_desk_config(path), tmp_path / "state", request_timeout=5)
    root = tk.Tk(screenName=xvfb.display)
    win = PauseWindow(root, session)
    root.geometry("1000x720+0+0")
    session.start()
    session.findings.start()
    tab = win.findings_tab
    try:
        mine = demo.desks["d01"].sent
        assert pump(root, lambda: len(rows(tab)) == len(mine)), tab.source_var.get()
        assert "Your findings at the collector" in tab.source_var.get() and "deleted 20 days" in tab.source_var.get()
        shown = rows(tab)
        newest = max(mine, key=lambda e: e["detected_at"])
        assert next(iter(shown)) == newest["event_id"]  # newest first
        when, finding, picture, review, you = shown[newest["event_id"]]
        local = datetime.fromisoformat(newest["detected_at"].replace("Z", "+00:00")).astimezone()
        assert when == local.strftime("%a %d %b %H:%M")  # the date, not only the time
        assert finding.startswith("Extra person (") and picture.startswith("sent, deleted ")
        # the time the collector deletes it (20 days after it was taken), not "in 20 days" rounded up
        due = local + timedelta(days=20)  # taken a moment after it was detected
        near = {(due + timedelta(minutes=m)).strftime("%a %d %b %H:%M") for m in (-1, 0, 1, 2)}
        assert picture.removeprefix("sent, deleted ") in near, (picture, near)
        assert (review, you) == ("Not reviewed yet", "")
        assert {r[3] for r in shown.values()} >= {"Not reviewed yet", "Upheld"}
        assert any(r[4] == "you contested" for r in shown.values())
        assert any(r[2] == "none" for r in shown.values())
        assert any(r[3].startswith("Dismissed: ") for r in shown.values())
        # The columns share the window's width: none is squeezed below its minimum.
        widths = [tab.tree.column(c, "width") for c in tab.tree["columns"]]
        assert sum(widths) >= tab.tree.winfo_width() - 10 and min(widths) >= 80

        # Select the newest: its picture comes from the collector; the worker contests it.
        tab.tree.selection_set(newest["event_id"])
        assert pump(root, lambda: tab._photo is not None), tab.image_label.cget("text")
        assert "Review: Not reviewed yet." in tab.detail_var.get()
        tab.contest_text.insert("1.0", "I was showing a colleague the printer manual.")
        tab.contest_button.invoke()
        assert pump(root, lambda: tab.contest_var.get().startswith("Sent")), tab.contest_var.get()
        assert rows(tab)[newest["event_id"]][4] == "you contested"
        with server.store.transaction(write=False) as tx:
            note = tx.one("SELECT contest_note FROM events WHERE event_id = ?", (newest["event_id"],))
        assert note == ("I was showing a colleague the printer manual.",)

        # A finding the appliance reports now joins the list at once, before the collector has it.
        appliance = make_fake_appliance(mosquitto, device_id="d01")
        assert pump(root, lambda: session.link.subscribed.is_set())
        appliance.publish_scan(("phone_use",), evidence=thumbnail("phone_01.jpg")[0])
        assert pump(root, lambda: len(rows(tab)) == len(mine) + 1)
        live = next(v for k, v in rows(tab).items() if k not in {e["event_id"] for e in mine})
        assert live[1].startswith("Phone use") and live[3] == "Not reviewed yet"

        tab.tree.selection_set(newest["event_id"])
        assert pump(root, lambda: tab._photo is not None)
        ARTIFACTS.mkdir(exist_ok=True)
        xvfb.screenshot(ARTIFACTS / "desk_window_findings.png")
    finally:
        win.close()


def test_window_asks_for_the_password_and_says_what_is_wrong(
    xvfb: Any, mosquitto: Broker, desk_config: Any, collector: Any, tmp_path: Path
) -> None:
    import tkinter as tk

    from deskwatch_desk.window import PauseWindow

    server, demo = collector
    path = desk_config(mosquitto, device_id="d01")
    path.write_text(path.read_text() + f"collector: {{url: '{server.url}', username: w-1}}\n")
    session = DeskSession(load_desk_config(path), tmp_path / "state", request_timeout=5)
    root = tk.Tk(screenName=xvfb.display)
    win = PauseWindow(root, session)
    session.start()
    session.findings.start()
    tab = win.findings_tab
    try:
        assert pump(root, lambda: "Sign in as w-1" in tab.source_var.get())
        assert tab.signin.winfo_ismapped()
        tab.password_var.set("not the password")
        tab.signin_button.invoke()
        assert pump(root, lambda: "wrong user name or password" in tab.source_var.get()), tab.source_var.get()
        tab.password_var.set(PASSWORD)
        tab.signin_button.invoke()
        assert pump(root, lambda: len(rows(tab)) == len(demo.desks["d01"].sent))
        assert not tab.signin.winfo_ismapped() and tab.password_var.get() == ""  # not kept in the widget
        server.stop()  # the collector goes away: the window says so instead of failing
        tab.findings.refresh()
        assert pump(root, lambda: "cannot reach the collector" in tab.source_var.get().lower(), timeout=15)
    finally:
        win.close()


def test_a_password_file_keeps_the_spaces_of_the_password(collector: Any, tmp_path: Path) -> None:
    """The collector keeps leading and trailing spaces in passwords; the password file must
    too, or the worker cannot sign in from the window and the attempt counts as a failure."""
    import queue

    from deskwatch_collector import auth
    from deskwatch_desk.config import DeskCollector
    from deskwatch_desk.findings import FindingsList

    server, _ = collector
    auth.add_user(server.store, "w-7", "  correct horse  ", "worker", ["acme"], "w-7")
    secret = tmp_path / "w-7.collector-password"
    secret.write_text("  correct horse  \r\n")
    secret.chmod(0o600)

    def signed_in_with_the_file() -> tuple[str, list[str]]:
        inbox: queue.Queue[Any] = queue.Queue()
        findings = FindingsList(DeskCollector(url=server.url, username="w-7", password_file=str(secret)), inbox)
        findings.start()
        said: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and findings.state not in ("ready", "error", "signin"):
            try:
                note = inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if note.kind == "findings_state":
                said.append(note.value)
        while not inbox.empty():  # the state is set just before its note is put
            note = inbox.get()
            if note.kind == "findings_state":
                said.append(note.value)
        return findings.state, said

    state, said = signed_in_with_the_file()
    assert state == "ready", said
    secret.write_bytes(b"\xff\xfe not text\n")  # a file saved in another encoding: said, not a dead thread
    state, said = signed_in_with_the_file()
    assert state == "error" and "collector.password_file" in said[-1] and "UTF-8" in said[-1], said


def test_a_finding_about_the_previous_worker_at_a_handed_over_desk_is_not_shown(tmp_path: Path) -> None:
    """The appliance, provisioned for Bob, sent the findings it had queued about Alice (their
    worker_id w-1, as recorded), and Bob's window listed them among his findings, live. With
    the desk's worker_id in desk.yaml the window shows only Bob's."""
    import json
    import queue

    from deskwatch_desk.config import load_desk_config_text

    cfg = load_desk_config_text(
        "device: {id: desk-7, site: acme, worker_id: w-2}\nmqtt: {host: 127.0.0.1, port: 1883, tls: {enabled: false}}\n",
        "desk.yaml",
    )
    session = DeskSession(cfg, tmp_path / "state")

    def event(event_id: str, worker: str) -> bytes:
        return json.dumps({"schema": "deskwatch.event/1", "event_id": event_id, "type": "phone_use", "worker_id": worker,
                           "detected_at": "2026-12-01T09:00:00.000Z", "confidence": 0.9, "detail": "phone at the ear",
                           "evidence": None, "evidence_reason": "rule", "scan_id": "s-1"}).encode()  # fmt: skip

    session._on_message("event", event("ev-alice", "w-1"))
    session._on_message("event", event("ev-bob", "w-2"))
    shown = []
    with contextlib.suppress(queue.Empty):
        while True:
            shown.append(session.inbox.get_nowait().value.event_id)
    assert shown == ["ev-bob"]
