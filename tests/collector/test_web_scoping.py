"""No route shows an account what it may not see: every route the running app has is
walked as a worker, as a supervisor of another site and without a session.

The routes come from the app itself (``app.routes``), so a route added later without
scoping fails here without anyone listing it. Each path parameter is filled with every
identifier of its kind the database holds (the worker's own, a neighbour's at the same
site, another site's); routes without parameters are also asked with the query strings
that widen a filter (``worker=``, ``device=``, ``site=``, ``view=all``); POSTs carry a
JSON body that a review or a contest would accept.

What may not appear is planted as distinctive text: other workers' ids, devices, event
ids, details and contest notes, other sites' names and device versions, every
supervisor's note (on the worker's own findings too), other pictures' bytes, password
hashes. An answer may repeat what the request itself sent (an error naming a bad
parameter is not a leak); JSON must name no other worker or site and, for a worker, carry
no supervisors' notes, trail or device history. And no walk may change what another
account's rows hold.
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from deskwatch_collector import auth
from deskwatch_collector.console import review
from deskwatch_collector.intake import IntakeHealth
from deskwatch_collector.store import Store
from deskwatch_collector.web import SupervisorServer
from tests.support.console import T0, Desk, store_messages, thumbnail
from tests.support.web import ARTIFACTS, PASSWORD, ServerFactory, WebClient

SITE, FAR_SITE = "site-a-m3", "farsite-z5"
STREAM_READ_SECONDS = 2.0  # a response that never ends (a stream) is read this long, then judged
POST_BODY = {"action": "acknowledge", "note": "route walk"}


@dataclass
class Planted:
    """The database's contents as distinctive text, by whom they belong to."""

    desks: dict[str, Desk]  # own, neighbour (same site), far (another site)
    findings: dict[str, list[dict[str, Any]]]  # each worker's events (the neighbour's include a shift at own's desk)
    notes: dict[str, list[str]]  # supervisors' notes on each worker's findings
    contests: dict[str, list[str]]  # each worker's contest notes
    photos: dict[str, list[bytes]]  # the pictures sent with each worker's findings
    versions: dict[str, str]  # each device's software version (fleet data)

    def events(self, key: str) -> list[str]:
        return [e["event_id"] for e in self.findings[key]]

    def belonging_to(self, key: str) -> dict[str | bytes, str]:
        """Every marker of one desk and its worker (ids, events, notes, pictures, version)."""
        desk = self.desks[key]
        out: dict[str | bytes, str] = {
            desk.worker_id: f"{key}'s worker id",
            desk.device_id: f"{key}'s device",
            self.versions[key]: f"{key}'s device version",
        }
        for event in self.findings[key]:
            out[event["event_id"]] = f"{key}'s event id"
            out[event["detail"]] = f"{key}'s finding detail"
        out.update({note: f"a supervisor's note on {key}'s finding" for note in self.notes[key]})
        out.update({note: f"{key}'s contest note" for note in self.contests[key]})
        out.update({photo: f"{key}'s picture" for photo in self.photos[key]})
        return out


@dataclass
class Viewer:
    name: str
    username: str | None  # None: no session
    forbidden: dict[str | bytes, str]  # marker -> what it is
    allowed: dict[str, set[str]]  # JSON key -> the values this account may see (worker_id, site)
    hidden_keys: tuple[str, ...] = ()  # JSON keys this account must never get
    must_see: tuple[str | bytes, ...] = ()  # own data that some route must show (the walk is not vacuous)


@dataclass
class Walk:
    problems: list[str] = field(default_factory=list)
    seen: set[str | bytes] = field(default_factory=set)
    answers: dict[str, set[int]] = field(default_factory=dict)  # route template -> statuses


# -- the data --------------------------------------------------------------------------------------
def plant(store: Store) -> Planted:
    desks = {
        "own": Desk(SITE, "desk-own-k7", "wk-own-k7"),
        "neighbour": Desk(SITE, "desk-nb-q2", "wk-nb-q2"),
        "far": Desk(FAR_SITE, "desk-far-z5", "wk-far-z5"),
    }
    # The neighbour also works a shift at own's desk: findings on own's device that are not
    # own's (the device's history, say, must not show them to own).
    shift = Desk(SITE, desks["own"].device_id, desks["neighbour"].worker_id, seq=100)
    pictures = {"own": "phone_01.jpg", "neighbour": "eat_02.jpg", "far": "multi_03.jpg"}
    versions = {key: f"0.2.0-build-{desk.device_id}" for key, desk in desks.items()}
    msgs = []
    for key, desk in desks.items():
        for n, rule in enumerate(("phone_use", "eating", "extra_person")):
            at = T0.replace(hour=9 + n)
            msgs += desk.finding(rule, at, photo=pictures[key] if n < 2 else None, detail=f"detail-{key}-{n}-x4")
        msgs += [desk.status(version=versions[key]), desk.health(T0)]
    for n in range(2):
        msgs += shift.finding(
            "away_from_desk", T0.replace(hour=13 + n), photo="empty_04.jpg", detail=f"detail-shift-{n}-x4"
        )
    store_messages(store, msgs, T0.timestamp() + 3600)
    for name, role, sites, worker in [
        ("wk-own-k7", "worker", [SITE], "wk-own-k7"),
        ("wk-nb-q2", "worker", [SITE], "wk-nb-q2"),
        ("boss-both", "supervisor", [SITE, FAR_SITE], None),
        ("boss-far", "supervisor", [FAR_SITE], None),
    ]:
        auth.add_user(store, name, PASSWORD, role, sites, worker)
    findings = {key: list(desk.sent) for key, desk in desks.items()}
    findings["neighbour"] += shift.sent
    photos = {key: [thumbnail(name)[0]] for key, name in pictures.items()}
    photos["neighbour"].append(thumbnail("empty_04.jpg")[0])
    boss = auth.User("boss-both", "supervisor", (SITE, FAR_SITE), None)
    notes: dict[str, list[str]] = {key: [] for key in desks}
    contests: dict[str, list[str]] = {key: [] for key in desks}
    with store.transaction() as tx:
        for key, desk in desks.items():
            worker = auth.User(desk.worker_id, "worker", (desk.site,), desk.worker_id)
            for n, event in enumerate(findings[key]):
                if n % 3 == 2:
                    continue  # left open, no contest
                contests[key].append(f"contest-by-{key}-{n}-r8")
                review.contest(tx, worker, event["event_id"], contests[key][-1], T0.timestamp() + 4000)
                action, reason = ("dismiss", "other") if n % 3 == 0 else ("acknowledge", None)
                notes[key].append(f"supnote-{key}-{n}-v6")
                review.review(tx, boss, event["event_id"], action, reason, notes[key][-1], T0.timestamp() + 5000)
    return Planted(desks, findings, notes, contests, photos, versions)


def viewers(p: Planted) -> list[Viewer]:
    everyone = {**p.belonging_to("own"), **p.belonging_to("neighbour"), **p.belonging_to("far")}
    hashes: dict[str | bytes, str] = {"scrypt$": "a password hash"}
    secrets: dict[str | bytes, str] = {**hashes, "boss-far": "another account's name"}
    own = p.desks["own"]
    return [
        Viewer(
            "no session",
            None,
            {**everyone, SITE: "a site's name", FAR_SITE: "a site's name", "boss-both": "an account", **secrets},
            {"worker_id": set(), "site": set()},
            ("review_note", "trail", "history"),
        ),
        Viewer(
            "worker",
            own.worker_id,
            {
                **p.belonging_to("neighbour"),
                **p.belonging_to("far"),
                **{note: "a supervisor's note on the worker's own finding" for note in p.notes["own"]},
                FAR_SITE: "another site's name",
                **secrets,
            },
            {"worker_id": {own.worker_id}, "site": {SITE}},
            ("review_note", "trail", "history"),
            must_see=(*p.events("own"), *p.photos["own"], *p.contests["own"]),
        ),
        Viewer(
            "supervisor of another site",
            "boss-far",
            {**p.belonging_to("own"), **p.belonging_to("neighbour"), SITE: "another site's name", **hashes},
            {"worker_id": {p.desks["far"].worker_id}, "site": {FAR_SITE}},
            must_see=(*p.events("far"), *p.notes["far"], *p.photos["far"]),
        ),
    ]


# -- the walk ----------------------------------------------------------------------------------
def requests_for(route: BaseRoute, p: Planted) -> Iterator[tuple[str, str, str]]:
    """``(template, method, path)`` for every request the walk makes of ``route``."""
    if isinstance(route, Mount) and isinstance(route.app, StaticFiles):
        for directory in route.app.all_directories:
            for file in sorted(Path(directory).rglob("*")):
                if file.is_file():
                    yield route.path, "GET", f"{route.path}/{file.relative_to(directory).as_posix()}"
        return
    if isinstance(route, Mount):
        for sub in route.routes:
            for template, method, path in requests_for(sub, p):
                yield route.path + template, method, route.path + path
        return
    if not isinstance(route, Route):
        raise AssertionError(f"the walk does not know {route!r}: teach it, so the route is checked")
    pools = {
        "event": [e for key in p.desks for e in p.events(key)],
        "site": [SITE, FAR_SITE],
        "device": [d.device_id for d in p.desks.values()],
        "worker": [d.worker_id for d in p.desks.values()],
    }
    everything = [v for pool in pools.values() for v in pool]
    names = [name for name, _ in (m.groups() for m in re.finditer(r"\{(\w+)(:\w+)?\}", route.path))]
    fills: list[dict[str, str]] = [{}]
    for name in names:
        pool = next((values for kind, values in pools.items() if kind in name), everything)
        fills = [{**f, name: v} for f in fills for v in pool]
    widen = [""] + ["?view=all"] + [f"?view=all&{k}={v}" for k in ("worker", "device", "site") for v in pools[k]]
    for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
        for f in fills:
            path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m, f=f: urllib.parse.quote(f[m.group(1)], safe=""), route.path)
            for query in widen if not names and method == "GET" else [""]:
                yield route.path, method, path + query


def fetch(client: WebClient, method: str, path: str) -> tuple[int, dict[str, str], bytes, bytes]:
    """``(status, headers, body, what was sent)``; a body that does not end is read for a while."""
    sent = json.dumps(POST_BODY).encode() if method == "POST" else b""
    req = urllib.request.Request(client.base + path, data=sent or None, method=method)
    if sent:
        req.add_header("Content-Type", "application/json")
    try:
        response = client.opener.open(req, timeout=STREAM_READ_SECONDS)
    except urllib.error.HTTPError as e:
        response = e
    chunks, deadline = [], time.monotonic() + STREAM_READ_SECONDS
    try:
        while time.monotonic() < deadline and (chunk := response.read1(65536)):
            chunks.append(chunk)
    except TimeoutError:
        pass  # a stream: judge what it sent so far
    finally:
        response.close()
    headers = {k.lower(): v for k, v in response.headers.items()}
    return response.status, headers, b"".join(chunks), path.encode() + sent


def judge(viewer: Viewer, what: str, status: int, headers: dict[str, str], body: bytes, sent: bytes) -> list[str]:
    problems = [f"{what} -> {status}: the server failed"] if status >= 500 else []
    shown = body + headers.get("location", "").encode()
    for marker, meaning in viewer.forbidden.items():
        raw = marker if isinstance(marker, bytes) else marker.encode()
        if raw in shown and raw not in sent:
            problems.append(f"{what} -> {status} shows {meaning} ({marker[:24]!r})")
    if headers.get("content-type", "").startswith("application/json"):
        problems += [f"{what} -> {status}: {p}" for p in json_problems(viewer, json.loads(body), sent.decode())]
    return problems


def json_problems(viewer: Viewer, data: Any, sent: str) -> Iterator[str]:
    if isinstance(data, list):
        for item in data:
            yield from json_problems(viewer, item, sent)
    elif isinstance(data, dict):
        for key, value in data.items():
            if key in viewer.hidden_keys:
                yield f"has {key!r}"
            elif key in viewer.allowed and value is not None and value not in viewer.allowed[key] and value not in sent:
                yield f"names {key} {value!r}"
            else:
                yield from json_problems(viewer, value, sent)


def walk(server: SupervisorServer, store: Store, viewer: Viewer, p: Planted) -> Walk:
    app = server.guard.app
    assert isinstance(app, Starlette)
    client, done = WebClient(server.url), Walk()
    for route in app.routes:
        asked = list(requests_for(route, p))
        assert asked, f"the walk makes no request of {route!r}"
        for template, method, path in asked:
            if viewer.username and auth.session_user(store, client.session, time.time()) is None:
                assert client.login(viewer.username) == 303  # again, after /logout
            status, headers, body, sent = fetch(client, method, path)
            done.answers.setdefault(f"{method} {template}", set()).add(status)
            done.problems += judge(viewer, f"{viewer.name}: {method} {path}", status, headers, body, sent)
            if status < 300:
                done.seen.update(m for m in viewer.must_see if (m if isinstance(m, bytes) else m.encode()) in body)
    return done


def rows_of(store: Store, site: str, worker: str | None = None) -> list[tuple[Any, ...]]:
    """What a walk must not change: the events (review, contest) and their trail."""
    where, params = "e.site = ?", [site]
    if worker:
        where, params = where + " AND e.worker_id = ?", [site, worker]
    with store.transaction(write=False) as tx:
        events = tx.rows(
            "SELECT e.event_id, e.review_state, e.review_reason, e.review_note, e.reviewed_by, e.reviewed_at,"
            f" e.contest_note, e.contested_at FROM events e WHERE {where} ORDER BY e.event_id",
            params,
        )
        trail = tx.rows(
            "SELECT r.event_id, r.action, r.note, r.actor, r.at FROM review_log r"
            f" JOIN events e ON e.event_id = r.event_id WHERE {where} ORDER BY r.id",
            params,
        )
    return [*events, *trail]


def on_planting_day() -> float:
    """The console's clock: the afternoon the findings were planted. On the real clock the
    pictures would pass the 20-day retention (and stop being served) 20 days after T0."""
    return T0.timestamp() + 8 * 3600


# -- the tests -----------------------------------------------------------------------------------
@pytest.fixture
def planted(console_store: Callable[[str], Store], console_server: ServerFactory) -> tuple[SupervisorServer, Planted]:
    store = console_store("sqlite")
    p = plant(store)
    health = IntakeHealth()
    health.broker_connected = True  # /healthz answers 200, as on a working collector
    return console_server(store, health=health.snapshot, wall=on_planting_day), p


def test_every_route_shows_each_account_only_its_own(planted: tuple[SupervisorServer, Planted]) -> None:
    server, p = planted
    store = server.store
    others = {"worker": [(SITE, p.desks["neighbour"].worker_id), (FAR_SITE, None)],
              "supervisor of another site": [(SITE, None)], "no session": [(SITE, None), (FAR_SITE, None)]}  # fmt: skip
    report, problems = [], []
    for viewer in viewers(p):
        before = [rows_of(store, *o) for o in others[viewer.name]]
        done = walk(server, store, viewer, p)
        problems += done.problems
        assert [rows_of(store, *o) for o in others[viewer.name]] == before, f"{viewer.name} changed others' rows"
        missing = [
            m if isinstance(m, str) else f"{len(m)} bytes of picture" for m in viewer.must_see if m not in done.seen
        ]
        assert not missing, f"{viewer.name}: no route showed {missing} (is the walk signed in?)"
        report += [f"{viewer.name:28} {what:45} {sorted(codes)}" for what, codes in sorted(done.answers.items())]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "route-walk.txt").write_text("\n".join([*report, "", f"{len(problems)} problems", *problems]) + "\n")
    assert not problems, "\n".join(problems[:40])


def test_the_walk_catches_a_route_without_scoping(
    console_store: Callable[[str], Store], console_server: ServerFactory
) -> None:
    """A console route added without scoping by worker (here: the events of the account's
    sites, notes and all, as the first landing's ``/api/events`` gave a worker) fails the
    walk by itself, on the neighbour's findings and on the supervisors' notes."""
    from starlette.requests import Request
    from starlette.responses import Response

    from deskwatch_collector.auth import User
    from deskwatch_collector.console.view import View

    def unscoped(view: View, request: Request, user: User) -> Response:
        marks = ", ".join("?" for _ in user.sites)
        with view.store(request).transaction(write=False) as tx:
            rows = tx.rows(f"SELECT event_id, review_note FROM events WHERE site IN ({marks})", list(user.sites))
        return view.json({"events": [{"event_id": e, "review_note": n} for e, n in rows]})

    store = console_store("sqlite")
    p = plant(store)
    server = console_server(store, wall=on_planting_day)
    app = server.guard.app
    assert isinstance(app, Starlette)
    app.router.routes.append(View().route("/api/added-later", unscoped))
    worker = next(v for v in viewers(p) if v.name == "worker")
    problems = walk(server, store, worker, p).problems
    assert problems and all("/api/added-later" in line for line in problems), problems
    assert any("neighbour's event id" in line for line in problems)
    assert any("'review_note'" in line for line in problems)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_worker_id_handed_to_a_new_employee_shows_neither_holder_the_others_findings(
    backend: str, console_store: Callable[[str], Store], console_server: ServerFactory,
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """Alice held w-1 at acme; Bob takes it over a day ago (``users add ... --new-holder``).
    Bob sees, pictures and contests only what was found since; an account Alice kept sees
    nothing found since; w-1 at another site (another person) is not affected."""
    from deskwatch_collector.cli import main

    store = console_store(backend)
    now = datetime.now(UTC).replace(microsecond=0)
    handover = now - timedelta(days=1)
    acme, globex = Desk("acme", "desk-a", "w-1"), Desk("globex", "desk-g", "w-1")
    alice_old = acme.finding("phone_use", now - timedelta(days=3), photo="phone_01.jpg", detail="alice-3d")
    alice_last = acme.finding("eating", handover - timedelta(minutes=1), detail="alice-last")
    bob_first = acme.finding("phone_use", handover + timedelta(minutes=1), photo="phone_01.jpg", detail="bob-1")
    carol = globex.finding("eating", now - timedelta(days=2), detail="carol-globex")
    store_messages(store, alice_old + alice_last + bob_first + carol, now.timestamp())
    names = {ev["event_id"]: ev["detail"] for ev in acme.sent + globex.sent}
    auth.add_user(store, "alice", PASSWORD, "worker", ["acme"], "w-1")
    auth.add_user(store, "carol", PASSWORD, "worker", ["globex"], "w-1")
    with store.transaction() as tx:  # their accounts were made before the findings
        tx.execute("UPDATE users SET created_at = ?", ((now - timedelta(days=10)).timestamp(),))
    db = request.getfixturevalue("postgres_dsn") if backend == "postgresql" else str(store.path)  # type: ignore[attr-defined]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))  # the admin's action, as the docs give it
    assert main(["users", "add", "bob", "--db", db, "--role", "worker", "--worker-id", "w-1", "--site", "acme",
                 "--new-holder", "--holder-since", handover.isoformat()]) == 0  # fmt: skip
    server = console_server(store)

    def seen(user: str) -> set[str]:
        client = WebClient(server.url)
        assert client.login(user) == 303
        status, body = client.get_json("/api/me/findings?limit=200")
        assert status == 200
        return {names[e["event_id"]] for e in body["events"]}

    assert seen("bob") == {"bob-1"}
    assert seen("alice") == {"alice-3d", "alice-last"}  # an account the previous holder kept
    assert seen("carol") == {"carol-globex"}  # w-1 at globex is someone else: untouched
    bob = WebClient(server.url)
    bob.login("bob")
    old = alice_old[0][1]
    event_id = json.loads(old)["event_id"]
    for path in (f"/events/{event_id}", f"/api/events/{event_id}", f"/evidence/{event_id}"):
        status, _, body = bob.call(path)
        assert status == 404 and b"alice-3d" not in body, path
    status, _ = bob.post_json(f"/api/events/{event_id}/contest", {"note": "not me"})
    assert status == 404
    with store.transaction(write=False) as tx:
        assert tx.one("SELECT contested_at FROM events WHERE event_id = ?", (event_id,)) == (None,)
    mine = json.loads(bob_first[0][1])["event_id"]
    assert bob.call(f"/evidence/{mine}")[0] == 200
