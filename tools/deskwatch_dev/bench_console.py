"""How fast the console's API answers with many stored events (a development benchmark).

    PYTHONPATH=tools .venv/bin/python -m deskwatch_dev.bench_console [--events 100000] [--json]
    make bench-console

Starts a throwaway PostgreSQL 15 (or uses ``--db``), fills it with ``--events`` findings
over ``--devices`` desks at ``--sites`` sites and ``--days`` days (review states, reasons,
contests, pictures for the last 20 days, one scan record each, in the rows' real shapes),
runs the collector's web server (hypercorn + the console) on loopback, signs in and
times ``/api/queue`` (first page, next older page, page back: random filters over view,
rule, device, worker, date; accounts with one site and with all sites) and
``/api/accuracy`` (7, 30 or 60 days), and ``/api/devices`` (the fleet with its noisy
rules of 30 days). Prints p50/p95/max per request kind.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlencode

HELP = "time the console's /api with many stored events on PostgreSQL"
RULES = (("phone_use", 0.30), ("away_from_desk", 0.25), ("extra_person", 0.10), ("unrecognized_person", 0.05),
         ("eating", 0.10), ("idle_input", 0.10), ("low_light", 0.05), ("camera_obstructed", 0.03),
         ("pause_overrun", 0.02))  # fmt: skip
WRONG = ("false_detection", "wrong_person", "misread_object", "camera_problem")
NO_PICTURE = ("idle_input", "low_light", "camera_obstructed", "pause_overrun")
PASSWORD = "bench password 1"
DAY = 86400.0


def _rule(rng: random.Random) -> str:
    x, acc = rng.random(), 0.0
    for rule, share in RULES:
        acc += share
        if x < acc:
            return rule
    return RULES[-1][0]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def fill(store: Any, events: int, devices: int, sites: int, days: int, now: float, seed: int = 1) -> None:
    """Bulk-insert findings as the collector stores them (the console reads nothing else)."""
    from deskwatch_contract.jsonutil import dumps

    rng = random.Random(seed)
    noisy = {rng.randrange(devices) for _ in range(max(1, devices // 50))}
    seqs: dict[int, int] = {}
    rows, pictures, scans = [], [], []
    for _ in range(events):
        d = rng.randrange(devices)
        site, dev, worker = f"site-{d % sites:02d}", f"desk-{d:05d}", f"w-{d:05d}"
        ts = now - rng.random() * days * DAY
        rule = _rule(rng)
        state, reason, by, at = "open", None, None, None
        if rng.random() > (0.9 if now - ts < DAY else 0.1):
            wrong_share = 0.7 if d in noisy and rule == "phone_use" else 0.12
            r = rng.random()
            if r < wrong_share:
                state, reason = "dismissed", rng.choice(WRONG)
            elif r < wrong_share + 0.08:
                state, reason = "dismissed", rng.choice(("allowed", "duplicate"))
            else:
                state = "acknowledged"
            by, at = f"sup-{d % sites}", ts + rng.random() * DAY
        contested = rng.random() < 0.06
        seqs[d] = seqs.get(d, 0) + 1
        event_id, scan_id = str(uuid.UUID(int=rng.getrandbits(128), version=4)), str(uuid.uuid4())
        sha = None if rule in NO_PICTURE else f"{rng.getrandbits(256):064x}"
        payload = {
            "schema": "deskwatch.event/1", "site": site, "device_id": dev, "event_id": event_id, "seq": seqs[d],
            "type": rule, "scan_id": scan_id, "detected_at": _iso(ts), "worker_id": worker,
            "confidence": round(rng.uniform(0.5, 0.99), 3),
            "detections": [{"label": "person", "score": 0.9, "box": [0.2, 0.1, 0.8, 1.0]},
                           {"label": "cell phone", "score": 0.81, "box": [0.4, 0.5, 0.5, 0.62]}],
            "detail": f"{rule} in 4 of 5 frames", "policy": {"profile": "full", "rule": rule},
            "evidence": {"sha256": sha, "bytes": 19000, "width": 320, "height": 240} if sha else None,
            "evidence_reason": None if sha else "rule", "replayed": False,
        }  # fmt: skip
        rows.append((event_id, site, dev, worker, rule, scan_id, seqs[d], payload["detected_at"], ts,
                     payload["confidence"], 0, sha, payload["evidence_reason"], dumps(payload), ts + 1, ts + 1,
                     state, None, by, at, "not me" if contested else None, worker if contested else None,
                     ts + 3600 if contested else None, reason))  # fmt: skip
        if sha and now - ts < 20 * DAY:
            pictures.append((event_id, site, dev, sha, 100, b"\xff\xd8" + b"\0" * 98, "verified", ts, ts + 1))
        checks = [{"rule": r, "outcome": "violation" if r == rule else "pass", "reason": ""} for r, _ in RULES]
        scans.append((site, dev, scan_id, "schedule", payload["detected_at"], payload["detected_at"], "violation",
                      rule, 0, dumps({"checks": checks, "persons": 1, "bystanders": 0, "frames": 5}), ts + 1))  # fmt: skip
    with store.transaction() as tx:
        tx.executemany(
            "INSERT INTO events (event_id, site, device_id, worker_id, type, scan_id, seq, detected_at, detected_ts,"
            " confidence, replayed, evidence_sha256, evidence_reason, payload, received_at, stored_at, review_state,"
            " review_note, reviewed_by, reviewed_at, contest_note, contested_by, contested_at, review_reason)"
            " VALUES (" + ", ".join("?" * 24) + ")",
            rows,
        )
        tx.executemany(
            "INSERT INTO evidence (event_id, site, device_id, sha256, bytes, data, state, captured_ts, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            pictures,
        )
        tx.executemany(
            "INSERT INTO scans (site, device_id, scan_id, trigger, started_at, finished_at, outcome, findings,"
            " replayed, payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            scans,
        )
        tx.executemany(
            "INSERT INTO devices (site, device_id, state, version, profile, last_seq, last_event_at)"
            " VALUES (?, ?, 'online', '0.2.0', 'full', ?, ?)",
            [(f"site-{d % sites:02d}", f"desk-{d:05d}", seqs.get(d, 0), now) for d in range(devices)],
        )


class Session:
    def __init__(self, base: str, user: str) -> None:
        import http.cookiejar
        import urllib.request

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a: Any, **k: Any) -> None:
                return None

        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect
        )
        form = urlencode({"username": user, "password": PASSWORD}).encode()
        try:
            self.opener.open(base + "/login", form, timeout=30)
        except urllib.error.HTTPError as exc:
            if exc.code != 303:
                raise SystemExit(f"bench_console: sign-in as {user} answered {exc.code}") from None

    def get(self, path: str) -> tuple[float, dict[str, Any]]:
        t = time.perf_counter()
        with self.opener.open(self.base + path, timeout=60) as resp:
            body = resp.read()
        return (time.perf_counter() - t) * 1000.0, json.loads(body)


def measure(
    base: str, sites: int, devices: int, now: float, pages: int, reports: int, seed: int = 11
) -> dict[str, list[float]]:
    rng = random.Random(seed)
    every, one = Session(base, "bench-all"), Session(base, "bench-one")
    times: dict[str, list[float]] = {}

    def timed(name: str, session: Session, path: str) -> dict[str, Any]:
        ms, body = session.get(path)
        times.setdefault(name, []).append(ms)
        return body

    for _ in range(pages):
        who = every if rng.random() < 0.5 else one
        q: list[tuple[str, str]] = [("view", rng.choice(("open", "all", "dismissed", "contested", "acknowledged")))]
        r = rng.random()
        if r < 0.3:
            q.append(("type", _rule(rng)))
        elif r < 0.45:
            q.append(("device", f"desk-{rng.randrange(devices):05d}"))
        elif r < 0.55:
            q.append(("worker", f"w-{rng.randrange(devices):05d}"))
        if rng.random() < 0.4:
            q.append(("from", time.strftime("%Y-%m-%d", time.gmtime(now - rng.choice((1, 7, 30)) * DAY))))
        qs = urlencode(q)
        first = timed("queue page", who, f"/api/queue?{qs}")
        if first["older"]:
            older = timed("queue older", who, f"/api/queue?{qs}&before={first['older']}")
            if older["newer"]:
                back = timed("queue back", who, f"/api/queue?{qs}&after={older['newer']}")
                assert [e["event_id"] for e in back["events"]] == [e["event_id"] for e in first["events"]]
    for _ in range(reports):
        who = every if rng.random() < 0.5 else one
        since = time.strftime("%Y-%m-%d", time.gmtime(now - rng.choice((7, 30, 60)) * DAY))
        timed("accuracy report", who, f"/api/accuracy?from={since}")
    for _ in range(max(1, reports // 4)):
        timed("fleet", every if rng.random() < 0.5 else one, "/api/devices")
    return times


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, xs in times.items():
        xs = sorted(xs)
        out[name] = {"n": len(xs), "p50_ms": round(statistics.median(xs), 1),
                     "p95_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.95))], 1), "max_ms": round(xs[-1], 1)}  # fmt: skip
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from deskwatch_collector import auth
    from deskwatch_collector.console import schema
    from deskwatch_collector.console.routes import ConsoleSettings, console_routes
    from deskwatch_collector.store import open_store
    from deskwatch_collector.web import SupervisorServer
    from deskwatch_dev.devservers import TempPostgres

    pg = TempPostgres().start() if args.db is None else None
    server = None
    try:
        dsn = args.db or pg.create_database("console_bench")  # type: ignore[union-attr]
        store = open_store(dsn, pool_size=8)
        schema.migrate(store)
        now = time.time()
        t = time.perf_counter()
        fill(store, args.events, args.devices, args.sites, args.days, now)
        filled = time.perf_counter() - t
        all_sites = [f"site-{i:02d}" for i in range(args.sites)]
        auth.add_user(store, "bench-all", PASSWORD, "supervisor", all_sites, None)
        auth.add_user(store, "bench-one", PASSWORD, "supervisor", all_sites[:1], None)
        if store.backend == "postgresql":
            import psycopg

            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        server = SupervisorServer(("127.0.0.1", 0), store, extra_routes=console_routes(ConsoleSettings()))
        server.start()
        times = measure(server.url, args.sites, args.devices, now, args.pages, args.reports)
        return {"events": args.events, "devices": args.devices, "sites": args.sites, "days": args.days,
                "backend": store.backend, "fill_seconds": round(filled, 1), "requests": summary(times)}  # fmt: skip
    finally:
        if server is not None:
            server.stop()
        if pg is not None:
            pg.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=100_000, help="stored findings (default 100000)")
    parser.add_argument("--devices", type=int, default=1000, help="desks (default 1000)")
    parser.add_argument("--sites", type=int, default=5, help="sites (default 5)")
    parser.add_argument("--days", type=int, default=60, help="spread over this many days (default 60)")
    parser.add_argument("--pages", type=int, default=200, help="filtered queues to page through (default 200)")
    parser.add_argument("--reports", type=int, default=60, help="accuracy reports (default 60)")
    parser.add_argument("--db", default=None, help="use this database instead of a throwaway PostgreSQL 15")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_console", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['events']} events, {result['devices']} devices, {result['sites']} sites, {result['days']} days "
          f"on {result['backend']} (filled in {result['fill_seconds']} s)")  # fmt: skip
    for name, s in result["requests"].items():
        print(
            f"  {name:<16} n={s['n']:<4} p50 {s['p50_ms']:7.1f} ms  p95 {s['p95_ms']:7.1f} ms  max {s['max_ms']:7.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
