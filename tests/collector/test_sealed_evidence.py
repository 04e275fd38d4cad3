"""Evidence sealed on the device to the collector's key: the broker and every subscriber see
ciphertext (MQTT 3.1.1 consumers included, from the payload alone); the collector opens
it, checks the sha256 and shows the photo; keys rotate without losing a photo."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from nacl.public import PrivateKey, SealedBox

from deskwatch.app import build_delivery, payload_source
from deskwatch.delivery.payloads import event_payload, scan_payload
from deskwatch.delivery.seal import Sealer
from deskwatch.domain import Box, Detection, Finding, ScanRecord, utcnow
from deskwatch.evidence.thumbnail import Evidence
from deskwatch_collector import auth
from deskwatch_collector.console import schema as console_schema
from deskwatch_collector.store import Store
from deskwatch_collector.subscriber import Subscriber
from deskwatch_collector.validate import Rejected, Validator, load_evidence_keys
from deskwatch_contract import ca
from deskwatch_contract.formats import new_id
from tests.support.console import thumbnail
from tests.support.mosquitto import Broker, Collector, device_config
from tests.support.web import ARTIFACTS, PASSWORD, ServerFactory, WebClient, sign_in, wait

EVENT_ID = "01a224ee-45fe-72be-b748-f6bbc5d6179c"


def keypair(tmp_path: Path) -> tuple[Path, str]:
    """A collector key pair made by the CA helper: (private key file, public key text)."""
    private, public, _ = ca.evidence_key(tmp_path / f"keys-{time.monotonic_ns()}")
    return private, public.read_text().strip()


def sealed_config(tmp_path: Path, broker: Broker, public: str) -> Any:
    return device_config(tmp_path, broker, extra=f"evidence: {{seal_to: '{public}'}}")


def scan_record() -> ScanRecord:
    return ScanRecord(scan_id=new_id(), trigger="schedule", started_at=utcnow(), finished_at=utcnow(), frames=5)


def violation(cfg: Any, jpeg: bytes, record: ScanRecord) -> tuple[dict[str, Any], bytes]:
    finding = Finding("phone_use", 0.9, 1, [Detection("cell phone", 0.8, Box(0.1, 0.1, 0.3, 0.3))])
    photo = Evidence(jpeg, 320, 240, hashlib.sha256(jpeg).hexdigest())
    return event_payload(payload_source(cfg), finding, record, photo, None), jpeg


@pytest.mark.broker
def test_the_broker_sees_ciphertext_and_the_collector_the_photo(
    tmp_path: Path, mosquitto: Broker, store_factory: Callable[[str], Store], start_collector: Callable[..., Subscriber],
    until: Callable[..., bool], console_server: ServerFactory, browser: Callable[[int], Any],
) -> None:  # fmt: skip
    private, public = keypair(tmp_path)
    jpeg = thumbnail("phone_01.jpg")[0]
    store = store_factory("sqlite")
    collector = start_collector(mosquitto, store)
    collector.writer.validator = Validator(load_evidence_keys([str(private)]))  # as --evidence-key gives it
    spy = Collector(mosquitto, "deskwatch/v1/#", protocol=mqtt.MQTTv311)  # anyone subscribed: a 3.1.1 consumer
    cfg = sealed_config(tmp_path, mosquitto, public)
    delivery = build_delivery(cfg, version="1.0", models={})
    delivery.start()
    try:
        record = scan_record()  # the scan's record as the daemon sends it, so the collector takes it too
        event_id = delivery.send_scan(scan_payload(payload_source(cfg), record), [violation(cfg, jpeg, record)])[0]
        assert spy.wait_for(lambda ms: any("/evidence/" in m.topic for m in ms))
        assert until(lambda: _evidence_state(store, event_id) == "verified")
    finally:
        delivery.stop(2)
        spy.close()
    event = json.loads(spy.on("/event")[0].payload)
    wire = spy.on("/evidence/" + event_id)[0].payload
    # What the broker (and its operator, and every subscriber) holds:
    assert not wire.startswith(b"\xff\xd8") and jpeg not in wire and len(wire) == len(jpeg) + 48
    assert hashlib.sha256(wire).hexdigest() != event["evidence"]["sha256"]  # a 1.0 consumer fails closed
    sealed = event["evidence"]["sealed"]
    assert sealed == {
        "alg": "x25519-xsalsa20poly1305-sealedbox",
        "key_id": Sealer.from_text(public).key_id,
        "bytes": len(wire),
    }
    # A 3.1.1 consumer with the key needs nothing but the payload to open and verify it:
    opened = SealedBox(PrivateKey(base64.b64decode(private.read_text()))).decrypt(wire)
    assert opened == jpeg and hashlib.sha256(opened).hexdigest() == event["evidence"]["sha256"]
    # At rest on the device, too, there is only ciphertext:
    outbox = b"".join(p.read_bytes() for p in tmp_path.glob("outbox.sqlite3*"))
    assert jpeg[:64] not in outbox
    # The collector stored the photo itself, verified, and serves it on the supervisor's console.
    console_schema.migrate(store)  # as `deskwatch-collector serve` does at start
    auth.add_user(store, "alice", PASSWORD, "supervisor", ["acme"], None)
    server = console_server(store)
    client = WebClient(server.url)
    assert client.login("alice") == 303
    status, headers, body = client.call(f"/evidence/{event_id}")
    assert status == 200 and body == jpeg and headers["content-type"] == "image/jpeg"
    _screenshot(browser(1100), server.url, event_id)
    (ARTIFACTS / "sealed-evidence-wire.txt").write_text(
        f"topic {spy.on('/evidence/' + event_id)[0].topic}\n{len(wire)} bytes, first 64 as the broker sees them:\n"
        f"{wire[:64].hex(' ')}\nthe JPEG on the device began: {jpeg[:16].hex(' ')}\n"
        f"event.evidence: {json.dumps(event['evidence'])}\n"
    )


def _evidence_state(store: Store, event_id: str) -> str | None:
    with store.transaction(write=False) as tx:
        row = tx.one("SELECT state FROM evidence WHERE event_id = ?", (event_id,))
    return None if row is None else str(row[0])


def _screenshot(driver: Any, url: str, event_id: str) -> None:
    """The event's page in the console shows the opened photo (saved for the issue note)."""
    sign_in(driver, url, "alice")
    driver.get(f"{url}/events/{event_id}")
    wait(
        lambda: driver.execute_script(
            "const i = document.querySelector('img[src=\"/evidence/' + arguments[0] + '\"]');"
            " return i && i.complete && i.naturalWidth",
            event_id,
        ),
        15,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "sealed-evidence-supervisor.png"))


def test_key_rotation_loses_no_photo(tmp_path: Path) -> None:
    """Rotation: the collector holds the old and the new key while devices move to the new
    one; evidence sealed to either opens; once the old key is dropped, evidence still sealed
    to it is refused and counted, never stored as garbage."""
    old_private, old_public = keypair(tmp_path)
    new_private, new_public = keypair(tmp_path)
    jpeg = thumbnail("eat_02.jpg")[0]
    topic = f"deskwatch/v1/acme/desk-a/evidence/{EVENT_ID}"
    before = Sealer.from_text(old_public).seal(jpeg)[0]  # still queued on a device that was offline
    after = Sealer.from_text(new_public).seal(jpeg)[0]
    assert Sealer.from_text(old_public).key_id != Sealer.from_text(new_public).key_id

    only_old = Validator(load_evidence_keys([str(old_private)]))
    both = Validator(load_evidence_keys([str(new_private), str(old_private)]))
    only_new = Validator(load_evidence_keys([str(new_private)]))
    digest = hashlib.sha256(jpeg).hexdigest()
    assert only_old.check(topic, before).sha256 == digest
    for wire in (before, after):
        msg = both.check(topic, wire)
        assert msg.data == jpeg and msg.sha256 == digest
    assert only_new.check(topic, after).data == jpeg
    with pytest.raises(Rejected) as refused:
        only_new.check(topic, before, {"sealed-key-id": Sealer.from_text(old_public).key_id})
    assert refused.value.reason == "evidence_sealed_unknown_key"
    with pytest.raises(Rejected) as nokey:
        Validator().check(topic, after)
    assert nokey.value.reason == "evidence_not_jpeg"  # a collector without keys does not store ciphertext
    assert Validator().check(topic, jpeg).data == jpeg  # unsealed evidence from a 1.0 device still works


def test_a_device_without_a_key_may_not_send_photos_off_the_machine(write_config: Callable[..., Path]) -> None:
    from deskwatch.config import ConfigError, load_config

    remote = "mqtt: {host: broker.example.com, tls: {enabled: true}}"
    with pytest.raises(ConfigError, match=r"evidence\.seal_to"):
        load_config(write_config(remote))
    assert load_config(write_config(remote + "\nevidence: {allow_unsealed: true}")).evidence.allow_unsealed
    with pytest.raises(ConfigError, match="32 bytes"):
        load_config(write_config(remote + "\nevidence: {seal_to: 'c2hvcnQ='}"))
    zeros = base64.b64encode(bytes(32)).decode()
    with pytest.raises(ConfigError, match="not a usable X25519 public key"):
        load_config(write_config(remote + f"\nevidence: {{seal_to: '{zeros}'}}"))


def test_a_thumbnail_that_cannot_be_sealed_costs_the_photo_not_the_event(
    write_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deskwatch.config import load_config

    _, public = keypair(tmp_path)
    cfg = load_config(write_config(f"evidence: {{seal_to: '{public}'}}"))
    delivery = build_delivery(cfg, version="t", models={})
    assert delivery.sealer is not None

    def broken(thumbnail: bytes) -> tuple[bytes, dict[str, Any]]:
        raise RuntimeError("libsodium said no")

    monkeypatch.setattr(Sealer, "seal", lambda self, thumbnail: broken(thumbnail))
    [event_id] = delivery.send_scan({"scan_id": "s"}, [violation(cfg, b"\xff\xd8jpeg", scan_record())])
    rows = delivery.outbox.pending()
    assert [r.kind for r in rows] == ["event", "scan"]  # never the JPEG in the clear
    event = json.loads(rows[0].payload)
    assert event["event_id"] == event_id and event["evidence"] is None and event["evidence_reason"] == "seal_failed"
    delivery.outbox.close()
