"""``deskwatch-desk window``: the pause button and what the appliance saw, in a small Tk window.

Top: the common reasons as buttons (one click asks for a pause of the chosen
minutes), a free-text reason, minutes, Pause and Resume, the time left of the
pause, and the appliance's answer. Below, two tabs:

- "Your findings" (:mod:`deskwatch_desk.findings_tab`): loaded from the collector when
  the window opens: each finding with the picture that was sent, how it was reviewed,
  when the picture is deleted, and a box to contest it;
- "Checks as they happen": the transparency list, the appliance's scans and findings
  for this desk exactly as they go to the broker while the window is open; for each
  finding, whether an image went to the supervisor (the employer's profile decides).
  The image itself is not shown here: the fleet's broker rules keep evidence for the
  collector, and "Your findings" shows it from there.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import time
import tkinter as tk
from pathlib import Path
from tkinter import ttk
from typing import TYPE_CHECKING, Any

from deskwatch_contract import exitcodes
from deskwatch_desk.findings_tab import FindingsTab
from deskwatch_desk.messages import Finding
from deskwatch_desk.session import DeskSession, Note, describe_finding, describe_scan

if TYPE_CHECKING:
    from deskwatch_desk.config import DeskConfig

logger = logging.getLogger(__name__)

COMMON_REASONS = ("fetch water", "bathroom", "stretch", "short break", "help a colleague")
POLL_MS = 200
LIVE_REFRESH_MS = 5000


class PauseWindow:
    def __init__(self, root: tk.Tk, session: DeskSession) -> None:
        self.root = root
        self.session = session
        self.monotonic = session.monotonic
        cfg = session.cfg
        root.title(f"deskwatch - desk {cfg.device.id}")
        root.minsize(760, 600)
        pad: dict[str, Any] = {"padx": 6, "pady": 4}

        self.status_var = tk.StringVar(value=f"Desk {cfg.device.site}/{cfg.device.id}")
        ttk.Label(root, textvariable=self.status_var).pack(anchor="w", **pad)

        box = ttk.LabelFrame(root, text="Pause")
        box.pack(fill="x", **pad)
        buttons = ttk.Frame(box)
        buttons.pack(fill="x", **pad)
        self.reason_buttons: dict[str, ttk.Button] = {}
        for reason in COMMON_REASONS:
            b = ttk.Button(buttons, text=reason, command=self._pause_for(reason))
            b.pack(side="left", padx=2)
            self.reason_buttons[reason] = b

        row = ttk.Frame(box)
        row.pack(fill="x", **pad)
        ttk.Label(row, text="Reason:").pack(side="left")
        self.reason_var = tk.StringVar()
        self.reason_entry = ttk.Entry(row, textvariable=self.reason_var, width=28)
        self.reason_entry.pack(side="left", padx=4)
        ttk.Label(row, text="Minutes:").pack(side="left")
        self.minutes_var = tk.StringVar(value="5")
        self.minutes_box = ttk.Spinbox(row, from_=1, to=cfg_max_minutes(), textvariable=self.minutes_var, width=4)
        self.minutes_box.pack(side="left", padx=4)
        self.pause_button = ttk.Button(row, text="Pause", command=lambda: self.pause(self.reason_var.get()))
        self.pause_button.pack(side="left", padx=4)
        self.resume_button = ttk.Button(row, text="Resume", command=self.resume)
        self.resume_button.pack(side="left")

        self.pause_var = tk.StringVar(value="Not paused.")
        ttk.Label(box, textvariable=self.pause_var, font=("TkDefaultFont", 12, "bold")).pack(anchor="w", **pad)
        self.result_var = tk.StringVar(value="")
        ttk.Label(box, textvariable=self.result_var, wraplength=640).pack(anchor="w", **pad)

        self.notebook = ttk.Notebook(root)
        self.notebook.pack(fill="both", expand=True, **pad)
        self.findings_tab = FindingsTab(self.notebook, session.findings)
        self.notebook.add(self.findings_tab, text="Your findings")
        seen = ttk.Frame(self.notebook)
        self.live_tab = seen
        self.notebook.add(seen, text="Checks as they happen")
        ttk.Label(seen, text="What the appliance records for this desk while this window is open, as it goes to the"
                  " broker.").pack(anchor="w", **pad)  # fmt: skip
        self.tree = ttk.Treeview(seen, columns=("time", "what", "detail"), show="headings", height=8)
        for col, width in (("time", 130), ("what", 190), ("detail", 380)):
            self.tree.heading(col, text=col.capitalize())
            self.tree.column(col, width=width, minwidth=width // 2, stretch=True)
        self.tree.pack(fill="both", expand=True, **pad)
        self.tree.bind("<<TreeviewSelect>>", self._show_selected)
        self.image_label = ttk.Label(seen)
        self.image_label.pack(anchor="w", **pad)
        self._row_finding: dict[str, Finding] = {}
        self.root.protocol("WM_DELETE_WINDOW", self.close)
        self._after: str | None = self.root.after(POLL_MS, self.poll)

    # -- actions ------------------------------------------------------------------------
    def minutes(self) -> int | None:
        try:
            return int(self.minutes_var.get())
        except ValueError:
            return None

    def _pause_for(self, reason: str) -> Any:
        return lambda: self.pause(reason)

    def pause(self, reason: str) -> None:
        minutes = self.minutes()
        if minutes is None:
            self.result_var.set("Minutes must be a whole number from 1 to 120.")
            return
        self.reason_var.set(reason)
        problem = self.session.request("pause", reason=reason, minutes=minutes)
        self.result_var.set(problem or f'Asking the appliance for a pause: "{reason.strip()}", {minutes} min ...')

    def resume(self) -> None:
        self.session.request("resume")
        self.result_var.set("Asking the appliance to resume ...")

    def close(self) -> None:
        if self._after is not None:
            self.root.after_cancel(self._after)
            self._after = None
        self.session.close()
        self.root.destroy()
        # Tk variables must die on this thread: collect the window's reference cycles now
        # rather than let the collector run later on a broker thread.
        gc.collect()

    # -- updates --------------------------------------------------------------------------
    def poll(self) -> None:
        while True:
            try:
                note = self.session.inbox.get_nowait()
            except Exception:
                break
            self.apply(note)
        self.pause_var.set(self.session.pause_text(self.monotonic()))
        self._after = self.root.after(POLL_MS, self.poll)

    def apply(self, note: Note) -> None:
        if note.kind == "outcome":
            kind, outcome, at = note.value
            self.result_var.set(self.session.apply_outcome(kind, outcome, at))
        elif note.kind == "scan":
            self._add_row(describe_scan(note.value), None)
        elif note.kind == "finding":
            self._add_row(describe_finding(note.value), note.value)
            if self.session.findings.add_live(note.value):
                self.findings_tab.redraw()
            self.root.after(LIVE_REFRESH_MS, self.session.findings.refresh)  # the collector's copy, once stored
        elif note.kind == "findings":
            found, _retention = note.value
            self.session.findings.take(found)
            self.findings_tab.redraw()
        elif note.kind == "findings_state":
            self.findings_tab.show_state(note.value)
        elif note.kind == "picture":
            self.findings_tab.picture(*note.value)
        elif note.kind == "contest":
            _, updated, problem = note.value
            if updated is not None:
                self.session.findings.take_one(updated)
            self.findings_tab.contested(problem)

    def _add_row(self, values: tuple[str, str, str], finding: Finding | None) -> None:
        item = self.tree.insert("", 0, values=values)
        if finding is not None:
            self._row_finding[item] = finding
        children = self.tree.get_children()
        for old in children[50:]:
            self._row_finding.pop(old, None)
            self.tree.delete(old)

    def _show_selected(self, _event: Any = None) -> None:
        """Whether the selected finding's image went to the supervisor, from the event itself
        (the image is the collector's: this window never receives it)."""
        selected = self.tree.selection()
        finding = self._row_finding.get(selected[0]) if selected else None
        if finding is None:
            text = ""
        elif finding.evidence:
            text = "An image was sent to your supervisor (not shown here)."
        else:
            text = "No image was sent for this finding."
        self.image_label.configure(text=text)


def cfg_max_minutes() -> int:
    from deskwatch_contract.intake import MAX_PAUSE_MINUTES

    return MAX_PAUSE_MINUTES


def run_window(cfg: DeskConfig, state_dir: Path) -> int:
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        print(f"cannot open a window ({exc}); use 'deskwatch-desk pause' and 'resume' instead", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    session = DeskSession(cfg, state_dir, monotonic=time.monotonic)
    window = PauseWindow(root, session)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: root.after(0, window.close))
    session.start()
    session.findings.start()
    root.mainloop()
    return 0
