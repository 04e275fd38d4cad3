"""The queue: filters from a query string, a page of events by keyset cursor, counts, CSV.

Order is newest detection first (``detected_ts DESC, id DESC``). A cursor is the
(detected_ts, id) of the row at a page's edge, so paging stays stable while new events
arrive: ``before`` gives the next (older) page, ``after`` the previous (newer) one.
Cursors and the alert poll's positions are sealed (:func:`cursor_box`): ``id`` is one
sequence for every site, and its gaps told a supervisor of one site how many findings the
others had; for the same reason the JSON carries no ``id``.

For an account with a few sites the page is a merge of one ordered index scan per site;
PostgreSQL cannot keep index order across ``site IN (...)`` and would sort every match
(with 100,000 events: 247 ms for a broad filter, 8 ms merged).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from deskwatch_collector.auth import User
from deskwatch_collector.console import schema, timefmt
from deskwatch_collector.console.vocab import QUEUE_VIEWS, RULES, reason_label, rule_label
from deskwatch_collector.store import Store, Tx
from deskwatch_collector.validate import END_INSTANT, FIRST_INSTANT, NAME

PAGE_DEFAULT, PAGE_MAX = 50, 200
MERGE_SITES_MAX = 16
CSV_MAX_ROWS = 100_000


class BadFilter(ValueError):
    """A query the console cannot run; the message says which parameter and why."""


def scope(user: User) -> tuple[str, list[Any]]:
    """SQL that limits ``events e`` to what the account may see: its sites, and for a worker
    account only its own findings (of its own holding of the worker id, :func:`auth.holding`).
    Every query on events starts here (:meth:`Filters.where` too)."""
    sql = f"e.site IN ({', '.join('?' for _ in user.sites)})"
    params: list[Any] = list(user.sites)
    if not user.is_supervisor:
        sql += " AND e.worker_id = ?"
        params.append(user.worker_id or "")
        # A worker id handed on (auth.holding): only the findings of this account's holding.
        for site, start, end in user.windows:
            bounds = [("e.detected_ts >= ?", start), ("e.detected_ts < ?", end)]
            sql += f" AND (e.site <> ? OR ({' AND '.join(c for c, t in bounds if t is not None)}))"
            params += [site, *(t for _, t in bounds if t is not None)]
    return sql, params


@dataclass(frozen=True)
class Filters:
    user: User  # whose list: where() starts from scope(user), so no filter shows more than that
    sites: tuple[str, ...] = ()  # the sites listed (empty: all of the account's)
    view: str = "open"  # a QUEUE_VIEWS entry
    types: tuple[str, ...] = ()
    device: str | None = None
    worker: str | None = None
    day_from: date | None = None
    day_to: date | None = None
    since: float | None = None  # day_from's start in the viewer's zone
    until: float | None = None  # the end of day_to in the viewer's zone
    chosen_sites: tuple[str, ...] = ()  # the sites asked for (empty: all of the account's)
    limit: int = PAGE_DEFAULT  # events per page (kept in the page's links)

    def __post_init__(self) -> None:
        if not self.sites:
            object.__setattr__(self, "sites", self.user.sites)

    def where(self, *, with_view: bool = True, with_types: bool = True) -> tuple[str, list[Any]]:
        account_sql, params = scope(self.user)
        sql = [account_sql]
        if self.sites != self.user.sites:  # narrower (or, from a careless caller, other: scope still holds)
            sql.append(f"e.site IN ({', '.join('?' for _ in self.sites)})")
            params.extend(self.sites)
        if with_view:
            if self.view in ("open", "acknowledged", "dismissed"):
                sql.append("e.review_state = ?")
                params.append(self.view)
            elif self.view == "contested":
                sql.append("e.contested_at IS NOT NULL")
        if with_types and self.types:
            sql.append(f"e.type IN ({', '.join('?' for _ in self.types)})")
            params.extend(self.types)
        for column, value in (("e.device_id", self.device), ("e.worker_id", self.worker)):
            if value:
                sql.append(f"{column} = ?")
                params.append(value)
        if self.since is not None:
            sql.append("e.detected_ts >= ?")
            params.append(self.since)
        if self.until is not None:
            sql.append("e.detected_ts < ?")
            params.append(self.until)
        return " AND ".join(sql), params

    def query(self, view: str | None = None, **extra: str | None) -> list[tuple[str, str]]:
        """These filters as query-string pairs (for links that keep them), with ``extra`` added."""
        out: list[tuple[str, str]] = [("view", view or self.view)]
        out += [("type", t) for t in self.types]
        for key, value in (("device", self.device), ("worker", self.worker)):
            if value:
                out.append((key, value))
        out += [("site", s) for s in self.chosen_sites]
        if self.day_from:
            out.append(("from", self.day_from.isoformat()))
        if self.day_to:
            out.append(("to", self.day_to.isoformat()))
        if self.limit != PAGE_DEFAULT:
            out.append(("limit", str(self.limit)))
        out += [(k, v) for k, v in extra.items() if v]
        return out

    def qs(self, view: str | None = None, **extra: str | None) -> str:
        return urlencode(self.query(view, **extra))

    @property
    def active(self) -> int:
        """How many filters narrow the list besides the view (for "Filters (3)")."""
        return sum(
            bool(x) for x in (self.types, self.device, self.worker, self.chosen_sites, self.day_from, self.day_to)
        )


def single(query: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = query.get(key) or []
    if len(values) > 1:
        raise BadFilter(f"{key}: give it once")
    value = values[0].strip() if values else ""
    return value or None


# The days a date filter may name: those of the times the collector accepts (validate.py).
# A day at the calendar's end (9999-12-31) has no end to compute, in any zone.
FIRST_DAY = FIRST_INSTANT.date()
LAST_DAY = END_INSTANT.date() - timedelta(days=1)


def date_param(query: Mapping[str, Sequence[str]], key: str) -> date | None:
    text = single(query, key)
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"{key}: {text[:40]!r} is not a date (YYYY-MM-DD)") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise BadFilter(f"{key}: {text[:40]!r} is outside {FIRST_DAY} to {LAST_DAY}, the days findings can have")
    return day


def parse_filters(query: Mapping[str, Sequence[str]], user: User, tz: ZoneInfo) -> Filters:
    """Filters from a query string, checked; raises :class:`BadFilter` with what is wrong."""
    view = single(query, "view") or ("open" if user.is_supervisor else "all")
    if view not in QUEUE_VIEWS:
        raise BadFilter(f"view: {view[:40]!r} is not one of {', '.join(QUEUE_VIEWS)}")
    types = tuple(dict.fromkeys(t for t in query.get("type", []) if t))
    unknown = [t for t in types if t not in RULES]
    if unknown:
        raise BadFilter(f"type: {unknown[0][:40]!r} is not a rule ({', '.join(RULES)})")
    names: dict[str, str | None] = {}
    for key in ("device", "worker"):
        value = single(query, key)
        if value is not None and not NAME.match(value):
            raise BadFilter(f"{key}: use letters, digits, '-' and '_' (at most 64)")
        names[key] = value
    chosen = tuple(dict.fromkeys(s for s in query.get("site", []) if s))
    foreign = [s for s in chosen if s not in user.sites]
    if foreign:
        raise BadFilter(f"site: {foreign[0][:64]!r} is not one of your sites")
    day_from, day_to = date_param(query, "from"), date_param(query, "to")
    if day_from and day_to and day_to < day_from:
        raise BadFilter("to: the range ends before it starts")
    return Filters(
        user=user,
        sites=chosen or user.sites,
        chosen_sites=chosen,
        view=view,
        types=types,
        device=names["device"],
        worker=names["worker"],
        day_from=day_from,
        day_to=day_to,
        since=timefmt.day_start(day_from, tz) if day_from else None,
        until=timefmt.day_end(day_to, tz) if day_to else None,
        limit=page_size(query),
    )


def page_size(query: Mapping[str, Sequence[str]]) -> int:
    text = single(query, "limit")
    if text is None:
        return PAGE_DEFAULT
    try:
        n = int(text)
    except ValueError:
        raise BadFilter("limit: a whole number") from None
    if not 1 <= n <= PAGE_MAX:
        raise BadFilter(f"limit: from 1 to {PAGE_MAX}")
    return n


# -- cursors ---------------------------------------------------------------------------------
def cursor_box(tx: Tx) -> SecretBox:
    """The database's key for cursors and alert positions (made by :func:`.schema.migrate`)."""
    row = tx.one("SELECT value FROM meta WHERE key = ?", (schema.CURSOR_KEY,))
    if row is None:
        raise RuntimeError("the console's schema was not applied (no cursor key): start the collector once")
    return SecretBox(bytes.fromhex(str(row[0])))


def encode_cursor(box: SecretBox, ts: float, row_id: int) -> str:
    return base64.urlsafe_b64encode(box.encrypt(struct.pack(">dq", ts, row_id))).decode().rstrip("=")


def decode_cursor(box: SecretBox, text: str, what: str = "cursor") -> tuple[float, int]:
    try:
        raw = box.decrypt(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        ts, row_id = struct.unpack(">dq", raw)
    except (binascii.Error, struct.error, ValueError, CryptoError):
        raise BadFilter(f"{what}: not one this console made (start again from the newest)") from None
    if not math.isfinite(ts):
        raise BadFilter(f"{what}: not one this console made (start again from the newest)")
    return float(ts), int(row_id)


# -- the page --------------------------------------------------------------------------------
EVENT_COLUMNS = (
    "e.id, e.event_id, e.site, e.device_id, e.worker_id, e.type, e.detected_at, e.detected_ts, e.confidence,"
    " e.replayed, e.evidence_sha256, e.evidence_reason, e.review_state, e.review_reason, e.review_note,"
    " e.reviewed_by, e.reviewed_at, e.contest_note, e.contested_at, v.state, v.captured_ts"
)
EVENT_KEYS = (
    "id", "event_id", "site", "device_id", "worker_id", "type", "detected_at", "detected_ts", "confidence",
    "replayed", "evidence_sha256", "evidence_reason", "review_state", "review_reason", "review_note",
    "reviewed_by", "reviewed_at", "contest_note", "contested_at", "evidence_state", "captured_ts",
)  # fmt: skip


def event_row(row: Sequence[Any], kept_from: float) -> dict[str, Any]:
    """A stored row as the console's event dict (no payload). A picture taken before
    ``kept_from`` (:meth:`View.kept_from`) is past the retention: shown as deleted, although
    the purge may not have reached it yet."""
    ev = dict(zip(EVENT_KEYS, row, strict=True))
    ev["replayed"] = bool(ev["replayed"])
    ev["has_picture"] = (
        ev["evidence_sha256"] is not None
        and ev.pop("evidence_state") == "verified"
        and ev["captured_ts"] is not None
        and float(ev["captured_ts"]) >= kept_from
    )
    ev.pop("evidence_state", None)
    if ev["evidence_sha256"] is not None and not ev["has_picture"]:
        ev["evidence_reason"] = ev["evidence_reason"] or "deleted or not received"
    ev["contested"] = ev["contested_at"] is not None
    ev["label"] = rule_label(ev["type"])
    ev["reason_label"] = reason_label(ev["review_reason"])
    return ev


@dataclass
class Page:
    events: list[dict[str, Any]]
    newer: str | None  # cursor for the previous (newer) page, None at the newest
    older: str | None  # cursor for the next (older) page, None at the oldest


def select_sql(f: Filters, cursor: tuple[float, int] | None, newer: bool, limit: int) -> tuple[str, list[Any]]:
    order, cmp = ("ASC", ">") if newer else ("DESC", "<")
    where, params = f.where()
    if cursor is not None:
        where += f" AND (e.detected_ts {cmp} ? OR (e.detected_ts = ? AND e.id {cmp} ?))"
        params += [cursor[0], cursor[0], cursor[1]]
    sql = (
        f"SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN evidence v ON v.event_id = e.event_id"
        f" WHERE {where} ORDER BY e.detected_ts {order}, e.id {order} LIMIT ?"
    )
    return sql, [*params, limit]


def _rows(tx: Tx, f: Filters, cursor: tuple[float, int] | None, newer: bool, limit: int) -> list[tuple[Any, ...]]:
    """Up to ``limit`` rows past ``cursor`` in the queue's order (ascending when ``newer``)."""
    if 1 < len(f.sites) <= MERGE_SITES_MAX:
        order = "ASC" if newer else "DESC"
        parts = [select_sql(replace(f, sites=(s,)), cursor, newer, limit) for s in f.sites]
        union = " UNION ALL ".join(f"SELECT * FROM ({sql}) AS s{i}" for i, (sql, _) in enumerate(parts))
        sql = f"SELECT * FROM ({union}) AS m ORDER BY detected_ts {order}, id {order} LIMIT ?"
        return tx.rows(sql, [p for _, ps in parts for p in ps] + [limit])
    sql, params = select_sql(f, cursor, newer, limit)
    return tx.rows(sql, params)


def page(
    tx: Tx,
    f: Filters,
    *,
    kept_from: float,
    before: str | None = None,
    after: str | None = None,
    limit: int = PAGE_DEFAULT,
) -> Page:
    """A page of the filtered queue; pictures taken before ``kept_from`` are shown as deleted."""
    newer = after is not None and before is None
    text = after if newer else before
    box = cursor_box(tx)
    cursor = decode_cursor(box, text) if text else None
    rows = _rows(tx, f, cursor, newer, limit + 1)
    more = len(rows) > limit
    if newer and not more:  # back at the top: show a full newest page rather than a short one
        return page(tx, f, kept_from=kept_from, limit=limit)
    events = [event_row(r, kept_from) for r in rows[:limit]]
    if newer:
        events.reverse()
    first = encode_cursor(box, events[0]["detected_ts"], events[0]["id"]) if events else None
    last = encode_cursor(box, events[-1]["detected_ts"], events[-1]["id"]) if events else None
    if newer:
        return Page(events, newer=first, older=last)
    return Page(events, newer=first if cursor is not None else None, older=last if more else None)


def neighbour(tx: Tx, f: Filters, ev: dict[str, Any], *, newer: bool) -> dict[str, Any] | None:
    """The event just older (or newer) than ``ev`` in the filtered order: the queue's next/previous
    (a link only: its picture is not offered)."""
    rows = _rows(tx, f, (ev["detected_ts"], ev["id"]), newer, 1)
    return event_row(rows[0], math.inf) if rows else None


WORKER_HIDDEN = ("review_note", "trail", "history")  # the supervisors' notes and other findings of the device


def public(ev: dict[str, Any], user: User | None = None) -> dict[str, Any]:
    """An event for JSON: the time also as RFC 3339, and the picture's URL when there is one.
    A worker gets their finding and its outcome, not the supervisors' notes. No one gets the
    row's ``id``: one sequence for every site, its gaps count the other sites' findings."""
    hidden = ("id", *WORKER_HIDDEN) if user is not None and not user.is_supervisor else ("id",)
    out = {k: v for k, v in ev.items() if k not in hidden and (k not in ("history", "trail", "scan") or v is not None)}
    if out.get("history") is not None:
        out["history"] = [{k: v for k, v in h.items() if k != "id"} for h in out["history"]]
    out["detected_at_utc"] = timefmt.iso_utc(ev["detected_ts"])
    out["picture_url"] = f"/evidence/{ev['event_id']}" if ev.get("has_picture") else None
    if ev.get("deleted_ts") is not None:  # annotated for the worker's view: when the picture goes
        out["picture_deleted_at"] = timefmt.iso_utc(ev["deleted_ts"])
    return out


@dataclass
class Counts:
    total: int  # matching every filter
    by_view: dict[str, int]  # with the type filters, for each view tab
    by_type: dict[str, int]  # with the view filter, for each rule


def counts(tx: Tx, f: Filters) -> Counts:
    """Counts per filter in one pass: per view (tabs) and per rule (type boxes)."""
    where, params = f.where(with_view=False, with_types=False)
    rows = tx.rows(
        "SELECT e.type, e.review_state, CASE WHEN e.contested_at IS NULL THEN 0 ELSE 1 END, COUNT(*)"
        f" FROM events e WHERE {where} GROUP BY e.type, e.review_state, CASE WHEN e.contested_at IS NULL THEN 0 ELSE 1 END",
        params,
    )
    by_view = dict.fromkeys(QUEUE_VIEWS, 0)
    by_type = dict.fromkeys(RULES, 0)
    total = 0
    for typ, state, contested, n in rows:
        n = int(n)
        in_types = not f.types or typ in f.types
        views = {"all", state} | ({"contested"} if contested else set())
        if in_types:
            for v in views & set(by_view):
                by_view[v] += n
        if f.view in views:
            by_type[typ] = by_type.get(typ, 0) + n
            if in_types:
                total += n
    return Counts(total, by_view, by_type)


# -- CSV ---------------------------------------------------------------------------------
CSV_HEADER = (
    "event_id", "detected_at_utc", "detected_at_local", "zone", "site", "device_id", "worker_id", "rule",
    "confidence", "review_state", "review_reason", "reviewed_by", "reviewed_at_utc", "review_note", "contested",
    "contest_note", "picture", "replayed",
)  # fmt: skip


def csv_lines(store: Store, f: Filters, tz: ZoneInfo, *, kept_from: float, limit: int = CSV_MAX_ROWS) -> Iterator[str]:
    """The filtered events as CSV text chunks (no images, no links to them), newest first;
    a picture taken before ``kept_from`` is past the retention, so not ``kept``. At most
    ``limit`` rows; a file cut there ends with a row that says so.

    Each page is read in its own short transaction (keyset paging keeps the pages apart), so
    a slow download holds no connection or transaction while the client reads."""
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(CSV_HEADER)
    cursor: str | None = None
    sent = 0
    zone_name = str(tz.key)
    while sent < limit:
        with store.transaction(write=False) as tx:
            p = page(tx, f, kept_from=kept_from, before=cursor, limit=min(PAGE_MAX * 5, limit - sent))
        for ev in p.events:
            # Every text a device or a person wrote goes through _cell: device ids, reasons and
            # notes alike reach a spreadsheet.
            out.writerow(
                [
                    _cell(ev["event_id"]), timefmt.iso_utc(ev["detected_ts"]),
                    timefmt.local(ev["detected_ts"], tz).strftime("%Y-%m-%d %H:%M:%S"), _cell(zone_name),
                    _cell(ev["site"]), _cell(ev["device_id"]), _cell(ev["worker_id"]), _cell(ev["type"]),
                    f"{ev['confidence']:.3f}", _cell(ev["review_state"]), _cell(ev["review_reason"]),
                    _cell(ev["reviewed_by"]), timefmt.iso_utc(ev["reviewed_at"]) if ev["reviewed_at"] else "",
                    _cell(ev["review_note"]), "yes" if ev["contested"] else "no", _cell(ev["contest_note"]),
                    "kept" if ev["has_picture"] else (_cell(ev["evidence_reason"]) or "none"),
                    "yes" if ev["replayed"] else "no",
                ]
            )  # fmt: skip
        sent += len(p.events)
        if sent >= limit and p.older is not None:
            # Findings that arrived after the route counted them pushed some past the cap: say so
            # in the file, which would otherwise look complete.
            out.writerow([f"# cut at {limit} findings: more match; narrow the filter and export again"])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        if p.older is None:
            return
        cursor = p.older


# Where a spreadsheet may start a cell inside a field: the field's start, and after any list
# separator a locale uses (',' in English, ';' in German, French, Dutch Excel, a tab) or a line
# end; blanks before the sign are skipped as the spreadsheet skips them.
_CELL_STARTS = re.compile(r"(?:^|[,;\t\r\n])[ \t\r\n]*(?=[=+\-@])")


def _cell(text: str | None) -> str:
    """Free text for a spreadsheet: no = + - @ where a cell may start (formula injection).

    The file is written with ',' and quotes a field holding one, but a spreadsheet whose list
    separator is ';' splits the line at the ';' inside a quoted note, so ``x;=WEBSERVICE(...)``
    became a cell starting with '='. A ' goes before the sign at the field's start and after
    every separator or line end within it."""
    if not text:
        return ""
    text = _CELL_STARTS.sub(lambda m: m.group(0) + "'", text)
    return "'" + text if text[0] in "\t\r" else text
