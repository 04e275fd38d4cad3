"""The pause window under Xvfb, driven with synthetic input, checked through its widgets and a screenshot."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image

from deskwatch_desk.config import load_desk_config
from deskwatch_desk.session import DeskSession
from tests.support.common import REPO, FakeClock
from tests.support.mosquitto import Broker

if TYPE_CHECKING:
    import tkinter as tk

    from deskwatch_desk.window import PauseWindow
    from tests.support.desk import FakeAppliance, Xvfb

pytestmark = [pytest.mark.broker]
ARTIFACTS = REPO / "test-artifacts"


def pump(root: tk.Tk, until: Callable[[], bool], timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        root.update()
        if until():
            return True
        time.sleep(0.02)
    root.update()
    return until()


@pytest.fixture
def window(xvfb: Xvfb, mosquitto: Broker, desk_config: Any, tmp_path: Path) -> Iterator[tuple[PauseWindow, FakeClock]]:
    import tkinter as tk

    from deskwatch_desk.window import PauseWindow

    clock = FakeClock()
    session = DeskSession(
        load_desk_config(desk_config(mosquitto)), tmp_path / "state", monotonic=clock.monotonic, request_timeout=5
    )
    root = tk.Tk(screenName=xvfb.display)
    win = PauseWindow(root, session)
    root.geometry("+0+0")
    session.start()
    assert pump(root, lambda: session.link.subscribed.is_set())
    yield win, clock
    if win._after is not None:
        win.close()


def click(xvfb: Xvfb, root: tk.Tk, widget: Any) -> None:
    """A real pointer click in the middle of ``widget`` (xdotool, through the X server)."""
    root.update()
    x = widget.winfo_rootx() + widget.winfo_width() // 2
    y = widget.winfo_rooty() + widget.winfo_height() // 2
    xvfb.run("xdotool", "mousemove", str(x), str(y), "click", "1")


def rows(win: PauseWindow) -> list[tuple[str, ...]]:
    return [tuple(win.tree.item(i, "values")) for i in win.tree.get_children()]


def jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (160, 120), color).save(out, "JPEG")
    return out.getvalue()


def test_pause_window_typed_reason_result_transparency_and_pause_end(
    window: tuple[PauseWindow, FakeClock],
    xvfb: Xvfb,
    fake_appliance: FakeAppliance,
    caplog: pytest.LogCaptureFixture,
) -> None:
    win, clock = window
    root = win.root
    # The worker types a reason and minutes with the keyboard and clicks Pause.
    win.reason_entry.focus_force()
    assert pump(root, lambda: root.focus_get() is win.reason_entry)
    xvfb.run("xdotool", "type", "--delay", "5", "printer jam")
    assert pump(root, lambda: win.reason_var.get() == "printer jam"), win.reason_var.get()
    win.minutes_var.set("7")
    click(xvfb, root, win.pause_button)
    assert pump(root, lambda: "accepted" in win.result_var.get()), win.result_var.get()
    assert win.result_var.get() == 'The appliance accepted your pause "printer jam" for 7 min.'
    kind, body = fake_appliance.received[-1]
    assert (kind, body["reason"], body["minutes"]) == ("pause", "printer jam", 7)
    assert win.pause_var.get() == 'Paused: "printer jam", 7:00 left.'
    clock.advance(95)
    assert pump(root, lambda: win.pause_var.get() == 'Paused: "printer jam", 5:25 left.')

    # The transparency list: what the appliance published for this desk; junk is ignored with a log line.
    with caplog.at_level(logging.WARNING, logger="deskwatch_desk.messages"):
        fake_appliance.publish("scan", {"schema": "deskwatch.scan/1", "scan_id": 7})
        fake_appliance.publish_scan()
        fake_appliance.publish_scan(("phone_use",), evidence=jpeg((200, 40, 40)))
        fake_appliance.publish_scan(("eating",))
        assert pump(root, lambda: len(rows(win)) == 5), rows(win)
    assert any("ignored a malformed scan message" in r.getMessage() for r in caplog.records)
    whats = [r[1] for r in rows(win)]
    assert whats == [
        "FINDING eating (0.87)",
        "scan (schedule)",
        "FINDING phone_use (0.87)",
        "scan (schedule)",
        "scan (schedule)",
    ]
    details = [r[2] for r in rows(win)]
    assert details[0].endswith("[no image (not_allowed)]")
    assert "image 160x120 sent to your supervisor" in details[2]
    assert details[4] == "clear: no findings; 3 checks ran"
    win.notebook.select(win.live_tab)
    phone_row = win.tree.get_children()[2]
    win.tree.selection_set(phone_row)
    assert pump(root, lambda: win.image_label.cget("text") == "An image was sent to your supervisor (not shown here).")
    win.tree.selection_set(win.tree.get_children()[0])
    assert pump(root, lambda: win.image_label.cget("text") == "No image was sent for this finding.")
    win.tree.selection_set(phone_row)
    assert pump(root, lambda: win.image_label.cget("text").startswith("An image was sent"))

    ARTIFACTS.mkdir(exist_ok=True)
    shot = xvfb.screenshot(ARTIFACTS / "desk_window_paused.png")
    with Image.open(shot) as im:
        assert im.size == (1024, 768)

    # One click on a common reason; then the pause runs out.
    click(xvfb, root, win.reason_buttons["fetch water"])
    assert pump(root, lambda: win.result_var.get() == 'The appliance accepted your pause "fetch water" for 7 min.')
    clock.advance(7 * 60)
    assert pump(root, lambda: win.pause_var.get().startswith("Pause ended"))
    assert win.pause_var.get() == 'Pause ended: "fetch water" (7 min) is over; checks are back on.'
    xvfb.screenshot(ARTIFACTS / "desk_window_ended.png")


def test_window_shows_refusals_resume_and_malformed_results(
    window: tuple[PauseWindow, FakeClock], fake_appliance: FakeAppliance, caplog: pytest.LogCaptureFixture
) -> None:
    win, _ = window
    root = win.root
    fake_appliance.answer = "refuse"
    win.reason_buttons["stretch"].invoke()
    assert pump(root, lambda: "refused" in win.result_var.get())
    assert win.result_var.get().endswith("pauses are not allowed during the team meeting")
    assert win.pause_var.get() == "Not paused."
    fake_appliance.answer = "ok"
    win.reason_buttons["bathroom"].invoke()
    assert pump(root, lambda: "accepted" in win.result_var.get())
    win.resume_button.invoke()
    assert pump(root, lambda: win.result_var.get() == "The appliance accepted your resume.")
    assert win.pause_var.get() == "Pause ended: you resumed; checks are back on."
    win.minutes_var.set("many")
    win.pause_button.invoke()
    assert win.result_var.get() == "Minutes must be a whole number from 1 to 120."
    win.minutes_var.set("5")
    win.reason_var.set("")
    win.pause_button.invoke()
    assert win.result_var.get() == 'reason must be non-empty text, e.g. "fetch water"'
    fake_appliance.answer = "malformed"
    with caplog.at_level(logging.WARNING, logger="deskwatch_desk.messages"):
        win.reason_buttons["stretch"].invoke()
        assert pump(root, lambda: "No answer" in win.result_var.get(), timeout=10)
    assert sum("ignored a malformed cmd/result" in r.getMessage() for r in caplog.records) == 2


def test_window_queues_when_the_broker_is_away(xvfb: Xvfb, make_broker: Any, desk_config: Any, tmp_path: Path) -> None:
    import tkinter as tk

    from deskwatch_desk.window import PauseWindow

    broker = make_broker(start=False)
    session = DeskSession(load_desk_config(desk_config(broker)), tmp_path, request_timeout=1)
    root = tk.Tk(screenName=xvfb.display)
    win = PauseWindow(root, session)
    session.start()
    try:
        win.reason_buttons["fetch water"].invoke()
        assert pump(root, lambda: "queued" in win.result_var.get())
        assert "cannot be reached" in win.result_var.get()
        assert (tmp_path / "queue.json").exists()
    finally:
        win.close()


def test_window_says_when_a_request_can_be_neither_sent_nor_queued(
    xvfb: Xvfb, make_broker: Any, make_fake_appliance: Any, desk_config: Any, tmp_path: Path
) -> None:
    """Broker away and the state dir unusable: the worker is told the pause is lost, not left
    looking at "Asking the appliance ..." for ever; once the broker is back, asking again works."""
    import tkinter as tk

    from deskwatch_desk.window import PauseWindow

    (tmp_path / "not-a-dir").write_text("")
    state = tmp_path / "not-a-dir" / "state"
    broker = make_broker(start=False)
    session = DeskSession(load_desk_config(desk_config(broker)), state, request_timeout=1)
    root = tk.Tk(screenName=xvfb.display)
    win = PauseWindow(root, session)
    session.start()
    try:
        win.reason_buttons["fetch water"].invoke()
        assert pump(root, lambda: "Asking" not in win.result_var.get()), win.result_var.get()
        text = win.result_var.get()
        assert 'Your pause "fetch water" for 5 min was not sent, and could not be queued' in text, text
        assert str(state / "queue.json") in text and "Not a directory" in text and "ask again" in text, text
        assert win.pause_var.get() == "Not paused."

        broker.start()
        make_fake_appliance(broker)
        assert pump(root, lambda: session.link.subscribed.is_set(), timeout=10)
        win.reason_buttons["fetch water"].invoke()
        assert pump(root, lambda: "accepted" in win.result_var.get()), win.result_var.get()
    finally:
        win.close()


def test_the_window_asks_the_broker_only_for_what_the_fleet_rules_let_a_companion_read() -> None:
    """A subscription the generated ACL denies stays silent, and the window would then say
    something false about what never arrives (no image sent, no status)."""
    from deskwatch_contract import access
    from deskwatch_desk.session import SUBSCRIPTIONS

    assert set(SUBSCRIPTIONS) <= set(access.PERMISSIONS["companion"].read)


def test_window_under_the_fleet_broker_rules_says_an_image_was_sent(
    xvfb: Xvfb, make_broker: Any, make_fake_appliance: Any, desk_config: Any, tmp_path: Path
) -> None:
    import tkinter as tk

    from deskwatch_contract import access
    from deskwatch_contract.ca import mosquitto_acl
    from deskwatch_desk.window import PauseWindow

    acl = mosquitto_acl([access.device("acme", "desk-a"), access.companion("acme", "desk-a")])
    broker = make_broker(acl=acl, passwords={"acme/desk-a": "devpass1", "acme/desk-a/companion": "comppass1"})
    secret = tmp_path / "companion.password"
    secret.write_text("comppass1\n")
    secret.chmod(0o600)
    path = desk_config(broker)
    path.write_text(path.read_text() + f"  username: acme/desk-a/companion\n  password_file: {secret}\n")
    session = DeskSession(load_desk_config(path), tmp_path / "state", request_timeout=5)
    root = tk.Tk(screenName=xvfb.display)
    win = PauseWindow(root, session)
    session.start()
    try:
        assert pump(root, lambda: session.link.subscribed.is_set())
        appliance = make_fake_appliance(broker, username="acme/desk-a", password="devpass1")
        appliance.publish_scan(("phone_use",), evidence=jpeg((200, 40, 40)))
        appliance.publish_scan(("eating",))
        assert pump(root, lambda: len(win._row_finding) == 2), rows(win)
        eating, phone = (i for i in win.tree.get_children() if i in win._row_finding)
        win.notebook.select(win.live_tab)
        win.tree.selection_set(phone)
        assert pump(root, lambda: win.image_label.cget("text") != "")
        assert win.image_label.cget("text") == "An image was sent to your supervisor (not shown here)."
        win.tree.selection_set(eating)
        assert pump(root, lambda: win.image_label.cget("text") == "No image was sent for this finding.")
        # no line that waits for what a companion may not read
        assert win.status_var.get() == "Desk acme/desk-a"
    finally:
        win.close()


def test_window_command_opens_and_closes_on_sigterm(
    xvfb: Xvfb, mosquitto: Broker, desk_config: Any, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deskwatch_desk.cli",
            "window",
            "--config",
            str(desk_config(mosquitto)),
            "--state-dir",
            str(tmp_path),
        ],
        env=xvfb.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        found = xvfb.run("xdotool", "search", "--sync", "--name", "deskwatch - desk desk-a", check=False)
        assert found.returncode == 0 and found.stdout.strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=10)
    assert proc.returncode == 0, log
    assert "connected to broker" in log


def test_window_command_without_a_display_says_so(mosquitto: Broker, desk_config: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deskwatch_desk.cli",
            "window",
            "--config",
            str(desk_config(mosquitto)),
            "--state-dir",
            str(tmp_path),
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 69
    assert "cannot open a window" in done.stderr and "deskwatch-desk pause" in done.stderr


def test_window_command_without_tk_says_what_to_install(
    mosquitto: Broker, desk_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Debian's python3 has no tkinter without python3-tk: a message, not a traceback."""
    import sys

    from deskwatch_desk.cli import main

    monkeypatch.setitem(sys.modules, "tkinter", None)  # import tkinter now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "deskwatch_desk.window", raising=False)
    code = main(["window", "--config", str(desk_config(mosquitto)), "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 69 and "python3-tk" in err and "deskwatch-desk pause" in err and "Traceback" not in err
