"""Collector storage on both backends: de-duplication, evidence checks, seq gaps, status, retention."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from deskwatch_collector.ingest import apply, missing_seqs, record_reject
from deskwatch_collector.retention import DAY, purge_evidence
from deskwatch_collector.store import Store
from deskwatch_collector.validate import Rejected, Validator
from deskwatch_dev.fleet import Outgoing, SimDevice, evidence_jpegs

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]
NOW = 1_800_000_000.0
AT_NOW = datetime.fromtimestamp(NOW, UTC)  # what a device reports as it happens (a photo older is past retention)


def store_all(store: Store, messages: list[Outgoing], now: float = NOW) -> list[str]:
    """What the subscriber does for one batch: validate, apply, record rejects; one commit."""
    validator = Validator()
    out = []
    with store.transaction() as tx:
        for m in messages:
            props = dict(m.properties.UserProperty) if m.properties and hasattr(m.properties, "UserProperty") else {}
            try:
                out.append(apply(tx, validator.check(m.topic, m.payload, props), now, now))
            except Rejected as exc:
                record_reject(tx, m.topic, exc.reason, exc.detail, m.payload, now)
                out.append(f"rejected:{exc.reason}")
    return out


def with_payload(m: Outgoing, **changes: object) -> Outgoing:
    payload = json.loads(m.payload)
    payload.update(changes)
    return Outgoing(m.topic, json.dumps(payload).encode(), m.qos, m.retain, m.properties, m.event_id)


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_evidence_and_scan_stored_once(
    store_factory: Callable[[str], Store], db_count: Callable[..., int], backend: str
) -> None:
    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    event, evidence, scan = dev.violation(finding_type="phone_use", now=AT_NOW)
    assert store_all(store, [event, evidence, scan]) == ["stored", "stored", "stored"]
    # The device re-sends after an outage: same event_id, replayed=true; nothing new is stored.
    again = with_payload(event, replayed=True)
    assert store_all(store, [again, evidence, scan]) == ["duplicate", "duplicate", "duplicate"]
    assert db_count(store, "events") == 1 and db_count(store, "scans") == 1
    with store.transaction(write=False) as tx:
        row = tx.one("SELECT state, sha256, data FROM evidence WHERE event_id = ?", (event.event_id,))
        ev = tx.one("SELECT type, worker_id, seq, replayed FROM events WHERE event_id = ?", (event.event_id,))
    assert row is not None and row[0] == "verified"
    assert row[1] == hashlib.sha256(bytes(row[2])).hexdigest() == json.loads(event.payload)["evidence"]["sha256"]
    assert ev == ("phone_use", "w-1", 1, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_evidence_before_its_event_is_verified_later_or_deleted(
    store_factory: Callable[[str], Store], db_count: Callable[..., int], backend: str
) -> None:
    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    event, evidence, _ = dev.violation(now=AT_NOW)
    # Shared subscriptions may hand the JPEG to this collector first.
    assert store_all(store, [evidence]) == ["stored"]
    with store.transaction(write=False) as tx:
        assert tx.one("SELECT state FROM evidence") == ("pending",)
    store_all(store, [event])
    with store.transaction(write=False) as tx:
        assert tx.one("SELECT state FROM evidence") == ("verified",)

    # A JPEG whose bytes do not match what its event declares never stays.
    event2, evidence2, _ = dev.violation(now=AT_NOW)
    other = next(j for j in evidence_jpegs() if j != evidence2.payload)
    swapped = Outgoing(evidence2.topic, other, 1, False, None)  # no sha256 user property to catch it early
    assert store_all(store, [swapped, event2]) == ["stored", "stored"]
    assert db_count(store, "evidence", "WHERE event_id = ?", (event2.event_id,)) == 0
    with store.transaction(write=False) as tx:
        assert tx.rows("SELECT event_id, reason FROM evidence_deletions") == [(event2.event_id, "sha256_mismatch")]
    # ... and when the event is already there, the mismatch is rejected outright.
    event3, evidence3, _ = dev.violation(now=AT_NOW)
    other3 = next(j for j in evidence_jpegs() if j != evidence3.payload)
    bad = Outgoing(evidence3.topic, other3, 1, False, None)
    assert store_all(store, [event3, bad]) == ["stored", "rejected:evidence_sha256"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_messages_are_rejected_and_recorded(
    store_factory: Callable[[str], Store], db_count: Callable[..., int], backend: str
) -> None:
    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    event, evidence, scan = dev.violation()
    spoof = SimDevice("acme", "desk-b", "w-2").violation(with_evidence=False)[0]
    outcomes = store_all(
        store,
        [
            with_payload(event, confidence=1.7),
            Outgoing(event.topic, b"{not json", 1, False, None),
            Outgoing(event.topic.replace("desk-a", "desk-b"), event.payload, 1, False, None),  # speaks for desk-a
            Outgoing("deskwatch/v1/acme/desk-a/evidence/not-a-uuid", evidence.payload, 1, False, None),
            Outgoing(evidence.topic, b"GIF89a....", 1, False, None),
            Outgoing(evidence.topic, evidence.payload, 1, False, _tampered(evidence)),
            with_payload(scan, outcome="maybe"),
            spoof,
        ],
    )
    assert outcomes == [
        "rejected:schema",
        "rejected:bad_json",
        "rejected:source_mismatch",
        "rejected:bad_topic",
        "rejected:evidence_not_jpeg",
        "rejected:evidence_sha256",
        "rejected:schema",
        "stored",
    ]
    with store.transaction(write=False) as tx:
        reasons = dict(tx.rows("SELECT reason, COUNT(*) FROM rejects GROUP BY reason"))
    assert reasons == {"schema": 2, "bad_json": 1, "source_mismatch": 1, "bad_topic": 1, "evidence_not_jpeg": 1,
                       "evidence_sha256": 1}  # fmt: skip
    assert db_count(store, "events") == 1


def test_a_site_device_or_event_id_with_a_final_newline_is_a_bad_topic() -> None:
    """Python's "$" matches before a final newline (so does the schemas' pattern under jsonschema):
    a device "acme\n/desk-a" speaking as such, or an evidence id no event ever has, was taken."""
    dev = SimDevice("acme", "desk-a", "w-1")
    event, evidence, _ = dev.violation()
    body = json.loads(event.payload)
    for topic, payload in (
        (event.topic.replace("acme", "acme\n"), json.dumps({**body, "site": "acme\n"}).encode()),
        (event.topic.replace("desk-a", "desk-a\n"), json.dumps({**body, "device_id": "desk-a\n"}).encode()),
        (evidence.topic + "\n", evidence.payload),
    ):
        with pytest.raises(Rejected) as caught:
            Validator().check(topic, payload)
        assert caught.value.reason == "bad_topic", topic


def _claiming(width: int, height: int, progressive: bool) -> bytes:
    """A small real JPEG whose frame header is changed to claim another size (a few hundred bytes)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 130, 140)).save(buf, "JPEG", progressive=progressive, quality=50)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_a_picture_claiming_more_than_a_thumbnail_is_refused_before_anyone_decodes_it() -> None:
    """The collector decodes no picture, but the desk window and the console's browsers do: a
    539-byte progressive JPEG claiming 13000x13000 took 512 MB to show as a 240x180 thumbnail."""
    dev = SimDevice("acme", "desk-a", "w-1")
    evidence = dev.violation()[1]
    for width, height, progressive in ((13000, 13000, True), (1281, 720, False), (320, 4000, False)):
        with pytest.raises(Rejected) as caught:
            Validator().check(evidence.topic, _claiming(width, height, progressive))
        assert caught.value.reason == "evidence_too_large" and f"{width}x{height}" in caught.value.detail
    # bytes between segments are skipped by libjpeg and Pillow alike (this still opens as 13000x13000)
    hidden = _claiming(13000, 13000, True).replace(b"\xff\xdb", b"junk\xff\xdb", 1)
    with pytest.raises(Rejected, match="evidence_too_large"):
        Validator().check(evidence.topic, hidden)
    for width, height in ((1280, 960), (320, 240)):
        assert Validator().check(evidence.topic, _claiming(width, height, False)).data is not None


def _tampered(m: Outgoing) -> object:
    from deskwatch_dev.fleet import _props

    return _props("image/jpeg", {"sha256": "0" * 64})


@pytest.mark.parametrize("backend", BACKENDS)
def test_seq_gaps_are_tracked_and_filled_by_late_arrivals(store_factory: Callable[[str], Store], backend: str) -> None:
    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    events = [dev.violation(with_evidence=False)[0] for _ in range(6)]  # seq 1..6
    store_all(store, [events[0], events[1], events[4]])  # 3 and 4 missing
    with store.transaction(write=False) as tx:
        assert missing_seqs(tx) == {("acme", "desk-a"): [(3, 4)]}
        assert tx.rows("SELECT after_seq, got_seq FROM seq_gaps") == [(2, 5)]
    store_all(store, [events[3]])  # 4 arrives late (replay)
    with store.transaction(write=False) as tx:
        assert missing_seqs(tx) == {("acme", "desk-a"): [(3, 3)]}
        assert tx.one("SELECT last_seq FROM devices") == (5,)
    store_all(store, [events[2], events[5]])
    with store.transaction(write=False) as tx:
        assert missing_seqs(tx) == {}
        assert tx.one("SELECT last_seq FROM devices") == (6,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_status_keeps_newest_session_and_health_is_latest(store_factory: Callable[[str], Store], backend: str) -> None:
    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    first = dev.status("online")  # session 1
    will = dev.status("offline")  # the Last Will of session 1
    second = dev.status("degraded", ["camera: not found"])  # session 2
    # They arrive as the device sends them: its 'since' is the real clock's, and one later than
    # the arrival (NOW, 2027-01-15) would be refused as a status from the future.
    arrived = dev.started.timestamp() + 1
    assert store_all(store, [first, second, will, dev.health()], arrived) == ["updated", "updated", "stale", "updated"]
    with store.transaction(write=False) as tx:
        state, session, reasons, health = tx.one("SELECT state, session, reasons, health FROM devices") or ()
    assert (state, session, json.loads(reasons)) == ("degraded", 2, ["camera: not found"])
    assert json.loads(health)["camera"] == "ok"


@pytest.mark.parametrize("backend", BACKENDS)
def test_evidence_purged_after_retention_and_each_deletion_recorded(
    store_factory: Callable[[str], Store], db_count: Callable[..., int], backend: str
) -> None:
    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    taken = [datetime.fromtimestamp(NOW - d * DAY, UTC) for d in (25, 19.5, 1)]
    for when in taken:
        event, evidence, _ = dev.violation(now=when)
        store_all(store, [event, evidence], now=when.timestamp() + 3600)  # arrived an hour after
    assert db_count(store, "evidence") == 3
    result = purge_evidence(store, 20, NOW)
    assert (result.expired, result.orphaned) == (1, 0)
    assert db_count(store, "evidence") == 2 and db_count(store, "events") == 3  # the event record stays
    result = purge_evidence(store, 7, NOW)  # an employer may keep less
    assert result.expired == 1
    with store.transaction(write=False) as tx:
        rows = tx.rows("SELECT reason, captured_ts FROM evidence_deletions ORDER BY captured_ts")
    assert [r[0] for r in rows] == ["retention", "retention"]
    assert [round((NOW - r[1]) / DAY, 1) for r in rows] == [25.0, 19.5]
    assert purge_evidence(store, 7, NOW).expired == 0  # idempotent
    with pytest.raises(ValueError, match="at most 20"):
        purge_evidence(store, 21, NOW)


def test_orphaned_pending_evidence_is_deleted_after_a_day(
    store_factory: Callable[[str], Store], db_count: Callable[..., int]
) -> None:
    store = store_factory("sqlite")
    _, evidence, _ = SimDevice("acme", "desk-a", "w-1").violation()
    store_all(store, [evidence], now=NOW)
    assert purge_evidence(store, 20, NOW + 3600).orphaned == 0
    assert purge_evidence(store, 20, NOW + DAY + 1).orphaned == 1
    assert db_count(store, "evidence_deletions", "WHERE reason = 'orphan'") == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_pending_evidence_beside_a_stored_event_is_settled(
    store_factory: Callable[[str], Store], db_count: Callable[..., int], backend: str
) -> None:
    # Two collectors racing leave a JPEG "pending" although its event committed at the same time.
    from deskwatch_collector.ingest import reconcile_pending

    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    good_event, good_jpeg, _ = dev.violation(now=AT_NOW)
    bad_event, bad_jpeg, _ = dev.violation(now=AT_NOW)
    store_all(store, [good_event, good_jpeg, bad_event, bad_jpeg])
    with store.transaction() as tx:
        tx.execute("UPDATE evidence SET state = 'pending'")
        tx.execute("UPDATE events SET evidence_sha256 = ? WHERE event_id = ?", ("f" * 64, bad_event.event_id))
    with store.transaction() as tx:
        assert reconcile_pending(tx, NOW) == (1, 1)
    with store.transaction(write=False) as tx:
        assert tx.rows("SELECT event_id, state FROM evidence") == [(good_event.event_id, "verified")]
        assert tx.rows("SELECT reason FROM evidence_deletions") == [("sha256_mismatch",)]


def test_a_device_clock_in_the_future_does_not_extend_retention(
    store_factory: Callable[[str], Store], db_count: Callable[..., int]
) -> None:
    store = store_factory("sqlite")
    dev = SimDevice("acme", "desk-a", "w-1")
    event, evidence, _ = dev.violation(now=datetime(2035, 1, 1, tzinfo=UTC))  # RTC years ahead
    store_all(store, [event, evidence], now=NOW)
    assert purge_evidence(store, 20, NOW + 21 * DAY).expired == 1
    assert db_count(store, "evidence") == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_poison_values_are_refused_at_parse_counted_kept_and_acknowledged(
    store_factory: Callable[[str], Store], backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    from deskwatch_collector import auth
    from deskwatch_collector.console import fleet
    from deskwatch_collector.intake import Inbound, Writer

    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    event = dev.violation(with_evidence=False)[0]
    health = dev.health()
    raw_health = json.loads(health.payload)
    raw_health["cpu_temp_c"] = float("nan")
    poison = {
        "nan_health": (health.topic, json.dumps(raw_health).encode()),  # json.dumps writes NaN
        "infinity": (event.topic, with_payload(event, confidence=float("inf")).payload),
        "huge_float": (event.topic, event.payload.replace(b'"confidence":', b'"confidence":1e400,"x":')),
        "month_13": (event.topic, with_payload(event, detected_at="2026-13-01T10:00:00Z").payload),
        "offset_99": (event.topic, with_payload(event, detected_at="2026-11-01T10:00:00+99:99").payload),
        "seq_2_63": (event.topic, with_payload(event, seq=2**63).payload),
        # an integer to JSON Schema (no fraction), a float to Python: it failed in the INSERT instead
        "seq_1e300": (event.topic, event.payload.replace(b'"seq":', b'"seq":1e300,"x":')),
        "session_1e19": (dev.prefix + "status", dev.status().payload.replace(b'"session":', b'"session":1e19,"x":')),
        "session_2_70": (dev.prefix + "status", with_payload(dev.status(), session=2**70).payload),
        "duplicate_key": (event.topic, b'{"seq": 1, "seq": 2}'),
    }
    acked: list[str] = []
    writer = Writer(store)
    batch = [Inbound(t, p, {}, NOW, lambda name=name: acked.append(name)) for name, (t, p) in poison.items()]
    writer.process(batch)
    assert sorted(acked) == sorted(poison)  # each is durably kept in rejects, so it is acknowledged
    counts = {k: v for k, v in writer.stats.snapshot().items() if k.startswith("rejected.")}
    assert counts == {"rejected.not_finite": 3, "rejected.bad_time": 2, "rejected.out_of_range": 4,
                      "rejected.bad_json": 1}  # fmt: skip
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text
    with store.transaction(write=False) as tx:
        kept = tx.rows("SELECT reason, raw FROM rejects ORDER BY id")
        assert len(kept) == len(poison)
        assert {bytes(raw) for _, raw in kept} == {p for _, p in poison.values()}  # raw kept for inspection
        assert tx.one("SELECT COUNT(*) FROM events") == (0,)
        devices = fleet.devices(tx, auth.User("s", "supervisor", ("acme",), None), NOW)
    json.dumps([d.as_json() for d in devices], allow_nan=False)  # the fleet view stays valid JSON


def _status(dev: SimDevice, state: str, session: int, since: str) -> Outgoing:
    return with_payload(dev.status(state), session=session, since=since)


def _device_state(store: Store) -> tuple[str, int]:
    with store.transaction(write=False) as tx:
        row = tx.one("SELECT state, session FROM devices")
    assert row is not None
    return str(row[0]), int(row[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_status_neither_pins_nor_flaps_and_follows_a_reprovisioned_device(
    store_factory: Callable[[str], Store], backend: str
) -> None:
    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    run1, run2, early = "2027-01-15T08:00:00.000Z", "2027-01-15T09:00:00.000Z", "1970-01-01T00:01:00.000Z"
    t = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    # A Last Will of an older connection, or of the previous run, arriving late does not flap it.
    store_all(store, [_status(dev, "online", 41, run2)], t + 3600)
    assert store_all(store, [_status(dev, "offline", 40, run2)], t + 3601) == ["stale"]
    assert store_all(store, [_status(dev, "offline", 40, run1)], t + 3602) == ["stale"]
    assert _device_state(store) == ("online", 41)
    # A status forged with a huge session wins at first, but cannot pin the device: the
    # device's next status, arriving well after it, is taken.
    store_all(store, [_status(dev, "online", 2**62, run2)], t + 3700)
    assert store_all(store, [_status(dev, "degraded", 42, run2)], t + 3710) == ["stale"]
    assert store_all(store, [_status(dev, "degraded", 42, run2)], t + 4400) == ["updated"]
    assert _device_state(store) == ("degraded", 42)
    # Re-provisioned: the counter starts again at 1, in a later run -> online at once.
    store_all(store, [_status(dev, "offline", 42, run2)], t + 5000)
    assert store_all(store, [_status(dev, "online", 1, "2027-01-15T10:00:00.000Z")], t + 7200) == ["updated"]
    assert _device_state(store) == ("online", 1)
    # Reflashed on a Pi without a real-time clock: counter 1 *and* a start time in 1970. It
    # arrives long after the stored status, so it is taken too.
    store_all(store, [_status(dev, "offline", 1, "2027-01-15T10:00:00.000Z")], t + 8000)
    assert store_all(store, [_status(dev, "online", 1, early)], t + 9000) == ["updated"]
    assert _device_state(store) == ("online", 1)
    # A start time in the future is refused (it would order before every later run).
    assert store_all(store, [_status(dev, "online", 2, "2030-01-01T00:00:00.000Z")], t + 9100) == ["rejected:bad_time"]


def test_orphan_evidence_has_a_quota_per_device(store_factory: Callable[[str], Store]) -> None:
    import uuid

    from deskwatch_collector.ingest import ORPHAN_MAX_PHOTOS

    store = store_factory("sqlite")
    noisy, quiet = SimDevice("acme", "desk-noisy", "w-1"), SimDevice("acme", "desk-quiet", "w-2")
    jpeg = b"\xff\xd8" + b"\0" * 50_000
    flood = [Outgoing(noisy.prefix + f"evidence/{uuid.uuid4()}", jpeg, 1, False, None) for _ in range(200)]
    outcomes = store_all(store, flood)
    assert outcomes.count("stored") == ORPHAN_MAX_PHOTOS
    assert outcomes.count("rejected:orphan_quota") == 200 - ORPHAN_MAX_PHOTOS
    with store.transaction(write=False) as tx:
        assert tx.one("SELECT COUNT(*), SUM(bytes) FROM evidence") == (ORPHAN_MAX_PHOTOS, ORPHAN_MAX_PHOTOS * 50_002)
        assert tx.one("SELECT COUNT(*) FROM rejects WHERE raw IS NOT NULL") == (0,)  # refused photos are not kept
    # Another device is not affected, and the noisy one's real photos still pair with their events.
    event, evidence, _ = quiet.violation(now=AT_NOW)
    assert store_all(store, [evidence, event]) == ["stored", "stored"]
    event, evidence, _ = noisy.violation(now=AT_NOW)
    assert store_all(store, [event, evidence]) == ["stored", "stored"]


def test_times_outside_1970_to_2099_are_refused_as_bad_time_naming_the_field(
    store_factory: Callable[[str], Store], caplog: pytest.LogCaptureFixture
) -> None:
    """'9999-12-31T23:59:59-01:00' is a real instant, but in year 10000 UTC: stored, it made
    every console page that shows it fail (newest first, the queue for good)."""
    from deskwatch_collector.intake import Inbound, Writer

    store = store_factory("sqlite")
    dev = SimDevice("acme", "desk-a", "w-1")
    event, scan = dev.violation(with_evidence=False)
    refused = [
        ("event detected_at", with_payload(event, detected_at="9999-12-31T23:59:59-01:00")),  # year 10000 in UTC
        ("event detected_at", with_payload(event, detected_at="0001-01-01T00:00:00+01:00")),  # year 0 in UTC
        ("event detected_at", with_payload(event, detected_at="1969-12-31T23:59:59.999Z")),
        ("scan started_at", with_payload(scan, started_at="2100-01-01T00:00:00.000Z")),
        ("status since", with_payload(dev.status(), since="0001-01-01T00:00:00+01:00")),
        ("health last_scan_at", with_payload(dev.health(), last_scan_at="9999-12-31T23:59:59-01:00")),
    ]
    acked: list[int] = []
    writer = Writer(store)
    writer.process(
        [Inbound(m.topic, m.payload, {}, NOW, lambda i=i: acked.append(i)) for i, (_, m) in enumerate(refused)]
    )
    assert sorted(acked) == list(range(len(refused)))  # kept in rejects, so acknowledged
    with store.transaction(write=False) as tx:
        rejects = tx.rows("SELECT reason, detail FROM rejects ORDER BY id")
        assert tx.one("SELECT COUNT(*) FROM events") == (0,) and tx.one("SELECT COUNT(*) FROM scans") == (0,)
    assert [r[0] for r in rejects] == ["bad_time"] * len(refused)
    # The detail names the field and what the device must fix.
    assert sorted(d.split(":")[0] for _, d in rejects) == sorted(f for f, _ in refused)
    assert all("1970" in d and "2099" in d for _, d in rejects), rejects
    assert "Traceback" not in caplog.text
    # The edges are stored: a Pi without a real-time clock starts at 1970-01-01T00:00:00Z.
    first, last = dev.violation(with_evidence=False)[0], dev.violation(with_evidence=False)[0]
    edges = [with_payload(first, detected_at="1970-01-01T00:00:00.000Z"),
             with_payload(last, detected_at="2099-12-31T23:59:59.999Z")]  # fmt: skip
    assert store_all(store, edges) == ["stored", "stored"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_no_database_can_store_is_refused_as_bad_text_on_both_backends(
    store_factory: Callable[[str], Store], db_count: Callable[..., int], backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON's escapes let U+0000 and a lone surrogate ("\\ud800") into a contract-valid
    payload. PostgreSQL cannot store U+0000 in a text column and neither backend can encode a
    lone surrogate: such an event was kept only as an internal_error (a bug, to the operator)
    and its photo later deleted as an orphan. It is a message the device got wrong: refused
    up front, the same on both backends, naming the field."""
    from deskwatch_collector.intake import Inbound, Writer

    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    event, evidence, scan = dev.violation(now=AT_NOW)
    bare = dev.violation(with_evidence=False)[0]
    detections = json.loads(event.payload)["detections"]
    detections[0]["label"] = "phone\udfff"
    refused = [
        ("event scan_id", with_payload(event, scan_id="x\u0000y")),
        ("event evidence_reason", with_payload(bare, evidence_reason="x\u0000y")),
        ("event detail", with_payload(event, detail="a\u0000b")),
        ("event detail", with_payload(event, detail="\ud800")),
        ("event detections/0/label", with_payload(event, detections=detections)),
        ("event policy", with_payload(event, policy={"profile": "full", "rule": "phone_use", "\ud800": 1})),
        ("scan scan_id", with_payload(scan, scan_id="s\u0000")),
        ("status version", with_payload(dev.status(), version="0.2\u0000")),
    ]
    acked: list[int] = []
    batch = [Inbound(m.topic, m.payload, {}, NOW, lambda i=i: acked.append(i)) for i, (_, m) in enumerate(refused)]
    # A topic only AMQP could carry (a routing key is any string): its reject must be storable too.
    batch.append(Inbound("deskwatch/v1/acme/desk\u0000a/event", bare.payload, {}, NOW, lambda: acked.append(-1)))
    writer = Writer(store)
    writer.process(batch)
    assert sorted(acked) == [-1, *range(len(refused))]  # each kept in rejects, so acknowledged
    with store.transaction(write=False) as tx:
        rejects = tx.rows("SELECT detail FROM rejects WHERE reason = 'bad_text'")
        assert tx.rows("SELECT topic FROM rejects WHERE reason <> 'bad_text'") == [
            ("deskwatch/v1/acme/desk\\x00a/event",)
        ]
    assert sorted(d.split(":")[0] for (d,) in rejects) == sorted(f for f, _ in refused)
    assert all("U+0000" in d or "surrogate" in d for (d,) in rejects), rejects
    assert db_count(store, "events") == 0 and db_count(store, "scans") == 0
    assert "internal_error" not in str(writer.stats.snapshot()) and "Traceback" not in caplog.text
    # The device's next, clean copy is stored, photo and all.
    assert store_all(store, [event, evidence]) == ["stored", "stored"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_photo_already_past_the_retention_is_not_kept_and_its_deletion_recorded(
    store_factory: Callable[[str], Store], db_count: Callable[..., int], backend: str
) -> None:
    """A device replaying its outbox after a long outage sends an event taken 20 days and an
    hour ago with its photo: the photo was stored as verified and served at once, until the
    next purge pass (every --purge-every, 10 minutes by default)."""
    from deskwatch_collector.intake import Inbound, Writer

    store = store_factory(backend)
    dev = SimDevice("acme", "desk-a", "w-1")
    taken = NOW - 20 * DAY - 3600
    event, photo, _ = dev.violation(now=datetime.fromtimestamp(taken, UTC))
    assert store_all(store, [with_payload(event, replayed=True), photo]) == ["stored", "expired"]
    # The photo first (shared subscriptions): held pending, then settled as expired by its event.
    late_event, late_photo, _ = dev.violation(now=datetime.fromtimestamp(taken, UTC))
    assert store_all(store, [late_photo]) == ["stored"]
    assert store_all(store, [late_event]) == ["stored"]
    recent_event, recent_photo, _ = dev.violation(now=datetime.fromtimestamp(NOW - 19 * DAY, UTC))
    assert store_all(store, [recent_event, recent_photo]) == ["stored", "stored"]
    with store.transaction(write=False) as tx:
        assert tx.rows("SELECT event_id FROM evidence") == [(recent_event.event_id,)]
        deleted = tx.rows("SELECT event_id, reason, captured_ts, bytes FROM evidence_deletions ORDER BY id")
    # Accounted for as the purge would have: which photo, when it was taken, how big.
    assert deleted == [(event.event_id, "retention", taken, len(photo.payload)),
                       (late_event.event_id, "retention", taken, len(late_photo.payload))]  # fmt: skip
    assert db_count(store, "events") == 3  # the findings themselves are kept
    # The retention the collector runs with (--retention-days), not only the 20-day maximum.
    week_event, week_photo, _ = dev.violation(now=datetime.fromtimestamp(NOW - 8 * DAY, UTC))
    writer = Writer(store, retention_days=7, wall=lambda: NOW)
    writer.process([Inbound(m.topic, m.payload, {}, NOW, lambda: None) for m in (week_event, week_photo)])
    assert writer.stats.snapshot()["evidence.expired"] == 1
    assert db_count(store, "evidence", "WHERE event_id = ?", (week_event.event_id,)) == 0
