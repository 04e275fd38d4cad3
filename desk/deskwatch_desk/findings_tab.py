"""The window's "Your findings" tab: the worker's findings with the picture that was sent,
how it was reviewed, when the picture goes, and a box to contest one.

The list fills the tab's width (every column stretches with the window); the selected
finding's details wrap below it instead of being cut off in a column.
"""

from __future__ import annotations

import io
import logging
import time
import tkinter as tk
from tkinter import ttk
from typing import Any

from deskwatch_desk.findings import FindingsList, Row

logger = logging.getLogger(__name__)

COLUMNS = (  # key, heading, share of the width, minimum pixels
    ("when", "When", 16, 130),
    ("finding", "Finding", 20, 130),
    ("picture", "Picture", 24, 150),
    ("review", "Review", 28, 150),
    ("you", "You", 12, 80),
)
PAD: dict[str, Any] = {"padx": 6, "pady": 4}


class FindingsTab(ttk.Frame):
    def __init__(self, parent: tk.Misc, findings: FindingsList) -> None:
        super().__init__(parent)
        self.findings = findings
        self.top = top = ttk.Frame(self)
        top.pack(fill="x", **PAD)
        self.source_var = tk.StringVar(value="Loading your findings ...")
        ttk.Label(top, textvariable=self.source_var, wraplength=760, justify="left").pack(side="left", fill="x")
        self.refresh_button = ttk.Button(top, text="Refresh", command=findings.refresh)
        self.refresh_button.pack(side="right")
        self.signin = ttk.Frame(self)  # shown only while a password is needed
        ttk.Label(self.signin, text="Password:").pack(side="left")
        self.password_var = tk.StringVar()
        self.password_entry = ttk.Entry(self.signin, textvariable=self.password_var, show="•", width=24)
        self.password_entry.pack(side="left", padx=4)
        self.password_entry.bind("<Return>", lambda _e: self.sign_in())
        self.signin_button = ttk.Button(self.signin, text="Sign in", command=self.sign_in)
        self.signin_button.pack(side="left")

        zone = time.strftime("%Z")
        self.tree = ttk.Treeview(self, columns=[c[0] for c in COLUMNS], show="headings", height=7, selectmode="browse")
        for key, heading, _, minimum in COLUMNS:
            self.tree.heading(key, text=f"{heading} ({zone})" if key == "when" else heading)
            self.tree.column(key, width=minimum, minwidth=minimum, stretch=True)
        self.tree.pack(fill="both", expand=True, **PAD)
        self.tree.bind("<<TreeviewSelect>>", lambda _e: self.show_selected())
        self.tree.bind("<Configure>", self._fit_columns)

        below = ttk.Frame(self)
        below.pack(fill="x", **PAD)
        self.image_label = ttk.Label(below, text="", width=28, anchor="center")
        self.image_label.pack(side="left", anchor="n")
        side = ttk.Frame(below)
        side.pack(side="left", fill="both", expand=True, padx=8)
        self.detail_var = tk.StringVar(value="Select a finding to see its picture and how it was reviewed.")
        self.detail_label = ttk.Label(side, textvariable=self.detail_var, wraplength=640, justify="left")
        self.detail_label.pack(anchor="w", fill="x")
        ttk.Label(side, text="This is wrong because:").pack(anchor="w", pady=(6, 0))
        self.contest_text = tk.Text(side, height=3, width=50, wrap="word")
        self.contest_text.pack(fill="x")
        self.contest_button = ttk.Button(side, text="Contest", command=self.contest, state="disabled")
        self.contest_button.pack(anchor="w", pady=4)
        self.contest_var = tk.StringVar(value="")
        ttk.Label(side, textvariable=self.contest_var, wraplength=460).pack(anchor="w")
        self._photo: Any = None
        self._pictures: dict[str, bytes] = {}
        self.selected: str | None = None

    # -- layout ----------------------------------------------------------------------------
    def _fit_columns(self, event: Any) -> None:
        """Share the full width between the columns (Tk would give all of it to the last one)."""
        total = sum(c[2] for c in COLUMNS)
        width = max(event.width - 4, 0)
        for key, _, share, minimum in COLUMNS:
            self.tree.column(key, width=max(minimum, width * share // total))

    # -- actions ---------------------------------------------------------------------------
    def sign_in(self) -> None:
        password = self.password_var.get()
        self.password_var.set("")
        self.findings.sign_in(password)

    def contest(self) -> None:
        if self.selected is None:
            return
        note = self.contest_text.get("1.0", "end")
        problem = self.findings.contest(self.selected, note)
        self.contest_var.set(problem or "Sending ...")

    # -- what the window hands over --------------------------------------------------------
    def show_state(self, text: str) -> None:
        self.source_var.set(text)
        if self.findings.state == "signin":
            self.signin.pack(fill="x", padx=6, pady=4, after=self.top)
            self.password_entry.focus_set()
        else:
            self.signin.pack_forget()

    def redraw(self) -> None:
        keep = self.selected
        self.tree.delete(*self.tree.get_children())
        for row in self.findings.ordered():
            self.tree.insert("", "end", iid=row.event_id, values=row.values())
        if keep and self.tree.exists(keep):
            self.tree.selection_set(keep)
        self.show_selected()

    def picture(self, event_id: str, jpeg: bytes | None, problem: str | None) -> None:
        if jpeg is not None:
            self._pictures[event_id] = jpeg
        elif problem and event_id == self.selected:
            self.image_label.configure(image="", text="The picture cannot be shown here.")
            logger.warning("picture of finding %s: %s", event_id, problem)
        if event_id == self.selected:
            self.show_selected()

    def contested(self, problem: str | None) -> None:
        if problem:
            self.contest_var.set(problem)
            return
        self.contest_text.delete("1.0", "end")
        self.contest_var.set("Sent: your supervisor sees it beside the finding.")
        self.redraw()

    # -- the selected finding ----------------------------------------------------------------
    def show_selected(self) -> None:
        chosen = self.tree.selection()
        row = self.findings.rows.get(chosen[0]) if chosen else None
        if row is None:
            self.selected = None
            self.contest_button.configure(state="disabled")
            return
        if row.event_id != self.selected:
            self.contest_var.set("")
        self.selected = row.event_id
        self.detail_var.set(describe(row))
        signed_in = self.findings.client is not None and self.findings.client.signed_in and not row.live
        self.contest_button.configure(state="normal" if signed_in else "disabled")
        self.contest_button.configure(text="Change what you said" if row.contested else "Contest")
        self._show_picture(row)

    def _show_picture(self, row: Row) -> None:
        self._photo = None
        if not row.has_picture:
            self.image_label.configure(image="", text="No picture was sent.")
            return
        jpeg = self._pictures.get(row.event_id)
        if jpeg is None:
            client = self.findings.client
            if client is None or not client.signed_in:
                self.image_label.configure(image="", text="Sign in to see the picture.")
                return
            self.image_label.configure(image="", text="Loading the picture ...")
            self.findings.fetch_picture(row.event_id)
            return
        try:
            from PIL import Image, ImageTk

            with Image.open(io.BytesIO(jpeg)) as im:
                im.thumbnail((240, 180))
                self._photo = ImageTk.PhotoImage(im.convert("RGB"))
            self.image_label.configure(image=self._photo, text="")
        except Exception as exc:  # Pillow missing or a bad JPEG: say so, keep running
            logger.warning("cannot show the picture of finding %s: %s", row.event_id, exc)
            self.image_label.configure(image="", text="The picture cannot be shown here.")


def describe(row: Row) -> str:
    when = time.strftime("%A %d %B %Y, %H:%M %Z", time.localtime(row.detected_ts))
    lines = [f"{row.label} on {when} (confidence {row.confidence:.0%}).", f"Picture: {row.picture}.",
             f"Review: {row.review}."]  # fmt: skip
    if row.why:
        lines.append(row.why)
    if row.live:
        lines.append("Just reported: the collector's review will show here once it has the finding.")
    if row.contested and row.contest_note:
        lines.append(f'You said: "{row.contest_note}"')
    return "\n".join(lines)
