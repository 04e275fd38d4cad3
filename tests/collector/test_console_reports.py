"""Review actions and their trail, the accuracy report's numbers and noisy-rule flags,
and the fleet's states with their reasons, on a small known data set."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from deskwatch_collector.auth import User
from deskwatch_collector.console import accuracy, detail, fleet, queue, review, timefmt, worker
from deskwatch_collector.console.review import ReviewRefused
from deskwatch_collector.ingest import missing_seqs
from deskwatch_collector.store import Store
from deskwatch_contract.formats import rfc3339
from tests.support.console import T0, Desk, store_messages

SUP = User("alice", "supervisor", ("acme", "globex"), None)
NOW = T0.timestamp()
KEPT_FROM = NOW - 20 * 86400  # the console at NOW with the 20-day retention


@pytest.fixture(params=["sqlite", "postgresql"])
def known(request: pytest.FixtureRequest, console_store: Callable[[str], Store]) -> tuple[Store, dict[str, list[str]]]:
    store = console_store(request.param)
    d1, d2, g1 = Desk("acme", "d1", "w1"), Desk("acme", "d2", "w2"), Desk("globex", "g1", "w3")
    msgs: list[Any] = []
    ids: dict[str, list[str]] = {}

    def add(desk: Desk, rule: str, n: int, key: str) -> None:
        for i in range(n):
            msgs.extend(desk.finding(rule, T0 - timedelta(days=i % 5, hours=i)))
            ids.setdefault(key, []).append(desk.sent[-1]["event_id"])

    add(d1, "phone_use", 6, "d1_phone")
    add(d2, "phone_use", 5, "d2_phone")
    add(g1, "eating", 3, "g1_eating")
    add(d1, "away_from_desk", 3, "d1_away")
    store_messages(store, msgs, NOW)
    with store.transaction() as tx:
        act = lambda e, a, r=None, note="": review.review(tx, SUP, e, a, r, note, NOW)  # noqa: E731
        for e in ids["d1_phone"][:4]:
            act(e, "dismiss", "misread_object")
        act(ids["d1_phone"][4], "dismiss", "allowed", "work call")
        act(ids["d1_phone"][5], "acknowledge")
        act(ids["d2_phone"][0], "dismiss", "camera_problem")
        for e in ids["d2_phone"][1:]:
            act(e, "acknowledge")
        for e in ids["g1_eating"]:
            act(e, "dismiss", "false_detection")
        w1 = User("w1", "worker", ("acme",), "w1")
        review.contest(tx, w1, ids["d1_away"][0], "I was at the printer", NOW)
        act(ids["d1_away"][0], "acknowledge")
    return store, ids


def test_accuracy_numbers_reasons_series_and_noisy_flags(known: tuple[Store, dict[str, list[str]]]) -> None:
    store, _ = known
    with store.transaction(write=False) as tx:
        rep = accuracy.report(tx, SUP.sites, NOW - 30 * 86400, NOW + 3600, ZoneInfo("Europe/Berlin"))
    phone = rep.by_rule["phone_use"]
    assert (phone.findings, phone.reviewed, phone.upheld, phone.dismissed, phone.wrong) == (11, 11, 5, 6, 5)
    assert phone.reasons == {"misread_object": 4, "allowed": 1, "camera_problem": 1}
    assert phone.accuracy == pytest.approx(1 - 5 / 11)
    away = rep.by_rule["away_from_desk"]
    assert (away.findings, away.open, away.contested, away.contested_upheld, away.accuracy) == (3, 2, 1, 1, None)
    eating = rep.by_rule["eating"]
    assert (eating.wrong, eating.accuracy) == (3, None)  # 3 reviewed: too few to give a rate
    assert (rep.by_site["acme"].findings, rep.by_site["globex"].findings) == (14, 3)
    assert rep.by_device[("acme", "d1")].findings == 9
    # Noisy: d1's phone_use (4 of 6 wrong); not d2's (1 of 5) nor g1's eating (3 of 3, only 3 reviewed).
    assert [(s, d, r) for s, d, r, _ in rep.noisy] == [("acme", "d1", "phone_use")]
    assert rep.noisy_for("acme", "d1") == ["phone_use"]
    with store.transaction(write=False) as tx:
        strict = accuracy.report(tx, SUP.sites, NOW - 30 * 86400, NOW + 3600, ZoneInfo("UTC"), threshold=0.2)
    assert {(d, r) for _, d, r, _ in strict.noisy} == {("d1", "phone_use"), ("d2", "phone_use")}
    for rule, tally in rep.by_rule.items():
        days = rep.series.get(rule, [])
        assert sum(f for f, _ in days) == tally.findings and sum(w for _, w in days) == tally.wrong
    assert len(rep.days) == 31 and rep.days[-1].isoformat() == "2026-11-30"
    out = rep.as_json()
    assert out["by_rule"]["phone_use"]["dismissed_right"] == 1 and out["noisy"][0]["device_id"] == "d1"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    ("zone", "first", "local_times"),
    [
        # 00:30 BST / EDT is the evening before in the winter offset the range ends in
        (
            "Europe/London",
            date(2026, 10, 1),
            [
                (date(2026, 10, 15), 0, 30),
                (date(2026, 10, 25), 0, 30),
                (date(2026, 10, 25), 23, 30),
                (date(2026, 11, 15), 0, 30),
            ],
        ),
        ("America/New_York", date(2026, 10, 1), [(date(2026, 10, 15), 0, 30), (date(2026, 11, 15), 23, 30)]),
        # 23:30 AEST is the next morning in AEDT, which the range ends in
        ("Australia/Sydney", date(2026, 9, 1), [(date(2026, 9, 15), 23, 30), (date(2026, 10, 4), 1, 30)]),
        ("Asia/Kolkata", date(2026, 10, 1), [(date(2026, 10, 15), 0, 15), (date(2026, 11, 30), 23, 45)]),
    ],
)
def test_findings_per_day_are_counted_on_the_local_day_across_a_dst_change(
    console_store: Callable[[str], Store],
    backend: str,
    zone: str,
    first: date,
    local_times: list[tuple[date, int, int]],
) -> None:
    """The chart of a range that spans a change of offset (October in London, for a report
    asked in November): each finding is in the bar of the local day it was found on, and
    the chart has the days asked for, not one before them."""
    tz = ZoneInfo(zone)
    store = console_store(backend)
    desk = Desk("acme", "d1", "w1")
    for day, hour, minute in local_times:
        at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
        store_messages(store, desk.finding("phone_use", at), at.timestamp() + 60)
    last = date(2026, 11, 30)
    with store.transaction(write=False) as tx:
        rep = accuracy.report(tx, ("acme",), timefmt.day_start(first, tz), timefmt.day_end(last, tz), tz)
    assert (rep.days[0], rep.days[-1], len(rep.days)) == (first, last, (last - first).days + 1)
    bars = {d: n for d, (n, _) in zip(rep.days, rep.series["phone_use"], strict=True) if n}
    assert bars == dict(Counter(day for day, _, _ in local_times))


def test_review_trail_reopen_and_who_may_do_what(known: tuple[Store, dict[str, list[str]]]) -> None:
    store, ids = known
    target = ids["d2_phone"][2]
    w2 = User("w2", "worker", ("acme",), "w2")
    other = User("bob", "supervisor", ("globex",), None)
    with store.transaction() as tx:
        review.review(tx, SUP, target, "reopen", None, "", NOW + 10)
        review.review(tx, SUP, target, "dismiss", "other", "badge, not a phone", NOW + 20)
        review.contest(tx, w2, target, "it was my badge", NOW + 30)
        for who, action, reason, note, status in [
            (SUP, "dismiss", "other", "", 400),  # "other" needs a note
            (SUP, "dismiss", "bogus", "", 400),
            (SUP, "acknowledge", "misread_object", "", 400),  # only a dismissal takes a reason
            (SUP, "delete", None, "", 400),
            (w2, "acknowledge", None, "", 403),
            (other, "acknowledge", None, "", 404),  # not at bob's sites
        ]:
            with pytest.raises(ReviewRefused) as err:
                review.review(tx, who, target, action, reason, note, NOW)
            assert err.value.status == status
        with pytest.raises(ReviewRefused, match="only the worker"):
            review.contest(tx, SUP, target, "x", NOW)
        with pytest.raises(ReviewRefused) as err:
            review.contest(tx, User("w1", "worker", ("acme",), "w1"), target, "not mine", NOW)
        assert err.value.status == 404
    with store.transaction(write=False) as tx:
        ev = detail.find_event(tx, SUP, target, kept_from=KEPT_FROM)
        trail = detail.trail(tx, target)
    assert ev is not None and (ev["review_state"], ev["review_reason"], ev["review_note"]) == (
        "dismissed", "other", "badge, not a phone")  # fmt: skip
    assert [(t["action"], t["actor"], t["reason"]) for t in trail] == [
        ("acknowledge", "alice", None), ("reopen", "alice", None), ("dismiss", "alice", "other"),
        ("contest", "w2", None)]  # fmt: skip
    assert review.clean_note("  a\x1b[31mb\x00c\n ") == "a[31mbc"
    with pytest.raises(ReviewRefused):
        review.clean_note("x" * 501)


def test_event_detail_has_detections_scan_checks_and_device_history(console_store: Callable[[str], Store]) -> None:
    store = console_store("sqlite")
    desk = Desk("acme", "d1", "w1")
    msgs = desk.finding("phone_use", T0, photo="phone_01.jpg", others=("eating", "extra_person"))
    msgs += desk.finding("eating", T0 - timedelta(hours=1))
    store_messages(store, msgs, NOW)
    first = desk.sent[0]["event_id"]
    with store.transaction(write=False) as tx:
        ev = detail.find_event(tx, SUP, first, kept_from=KEPT_FROM)
        assert ev is not None
        scan = detail.scan_of(tx, "acme", "d1", ev["scan_id"])
        hist = detail.device_history(tx, SUP, "acme", "d1", kept_from=KEPT_FROM)
        assert detail.find_event(tx, User("w9", "worker", ("acme",), "w9"), first, kept_from=KEPT_FROM) is None
    assert ev["has_picture"] and ev["picture_size"][0] <= 320 and ev["picture_size"][1] <= 240
    assert [d["label"] for d in ev["detections"]] == ["person", "cell phone", "person"]
    assert ev["detections"][1]["box"] == pytest.approx([0.45, 0.473, 0.045, 0.07])  # x, y, w, h
    assert scan is not None and [c["rule"] for c in scan["checks"]] == ["phone_use", "eating", "extra_person"]
    assert [h["type"] for h in hist] == ["phone_use", "eating"]
    worker.annotate(ev, 20, NOW + 3 * 86400 + 60)
    # 16 whole days and 23:59 left: rounded up it said 17, and a picture two hours from its
    # deletion was "deleted in 1 day" to the worker who meant to contest it before then
    assert ev["days_left"] == 16 and ev["no_picture_why"] is None
    assert ev["deleted_ts"] == pytest.approx(ev["captured_ts"] + 20 * 86400)
    worker.annotate(ev, 20, ev["deleted_ts"] - 2 * 3600)
    assert ev["days_left"] == 0
    assert queue.public(ev)["picture_deleted_at"] == timefmt.iso_utc(ev["deleted_ts"])
    worker.annotate(hist[1], 20, NOW)
    assert hist[1]["days_left"] is None and "rules" in hist[1]["no_picture_why"]


def test_fleet_states_and_reasons(console_store: Callable[[str], Store]) -> None:
    store = console_store("sqlite")
    now = T0
    desks = {name: Desk("acme", name, "w") for name in ("ok", "paused", "clock", "noenrol", "camera", "backlog",
                                                        "off", "silent")}  # fmt: skip
    pause = {"reason": "fetch water", "minutes": 10, "started_at": rfc3339(now - timedelta(minutes=3)),
             "ends_at": rfc3339(now + timedelta(minutes=7)), "source": "mqtt"}  # fmt: skip
    msgs = [d.status() for d in desks.values()] + [desks["off"].status("offline")]
    msgs.append(desks["camera"].status("degraded", ["camera: no frame from /dev/video0"]))
    msgs += [
        desks["ok"].health(now),
        desks["paused"].health(now, paused=True, pause=pause),
        desks["clock"].health(now, clock_synced=False),
        desks["noenrol"].health(now, identity="not_enrolled"),
        desks["camera"].health(now, camera="failed: no frame from /dev/video0"),
        desks["backlog"].health(now, outbox={"depth": 412, "bytes": 10**6, "oldest_age_s": 2400.0, "evicted": {}}),
    ]
    gappy = desks["ok"]
    msgs += gappy.finding("eating", now) + gappy.finding("eating", now)
    gappy.seq += 2  # two events lost between the 2nd and the 3rd
    msgs += gappy.finding("eating", now)
    store_messages(store, msgs, NOW)
    with store.transaction(write=False) as tx:
        items = {d.device_id: d for d in fleet.devices(tx, SUP, NOW + 60)}
        assert missing_seqs(tx, "acme") == {("acme", "ok"): [(3, 4)]}  # the ingest's own account agrees
    texts = {k: [p.text for p in d.problems] for k, d in items.items()}
    assert texts["ok"] == ["2 events missing (seq gaps)"] and items["ok"].missing_events == 2
    assert texts["paused"] == ["paused: fetch water, 6 min left"] and items["paused"].level == "paused"
    assert items["paused"].pause == {"reason": "fetch water", "until": pytest.approx(NOW + 420), "seconds_left": 360}
    assert texts["clock"] == ["clock not synchronised"] and items["clock"].level == "attention"
    assert texts["noenrol"] == ["no worker enrolled"]
    assert texts["camera"] == ["camera: failed: no frame from /dev/video0"] and items["camera"].level == "fault"
    assert texts["backlog"] == ["outbox backlog: 412 waiting, oldest 40 min"]
    assert items["off"].level == "offline" and texts["off"][0].startswith("offline, last seen")
    assert items["silent"].level == "offline" and texts["silent"][0].startswith("not reporting")
    order = [d.device_id for d in fleet.sort_devices(list(items.values()), "state", False)]
    assert order[:2] == ["off", "silent"] and order[-1] == "ok"
    assert fleet.summary(list(items.values())) == {"offline": 2, "fault": 1, "paused": 1, "attention": 4, "online": 0}
