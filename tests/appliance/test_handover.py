"""A desk handed to another worker (an employee leaves; the technician provisions the appliance
again for the next one, or edits device.worker_id): nothing of the previous worker is told
about the new one, or shown to them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deskwatch.app import Daemon, Parts
from deskwatch.audit import AuditLog
from deskwatch.camera.fake import FakeCamera
from deskwatch.config import load_config
from tests.support.fakes import RecordingDelivery, ScriptedVision, SilentNotifier


def daemon(cfg_path: Path, clock: Any, delivery: RecordingDelivery | None = None) -> Daemon:
    cfg = load_config(str(cfg_path))
    return Daemon(cfg, clock=clock, parts=Parts(camera=FakeCamera(), vision=ScriptedVision(),
                                                delivery=delivery or RecordingDelivery(), notifier=SilentNotifier()))  # fmt: skip


def handed_over(write_config: Any, worker: str = "w-2", site: str = "site-a") -> Path:
    return write_config(f"device: {{worker_id: {worker}, site: {site}}}", name=f"config-{worker}-{site}.yaml")


def test_the_previous_workers_pause_is_not_reported_as_the_new_workers_overrun(write_config: Any, clock: Any) -> None:
    """Alice paused, then left; the next morning the desk is Bob's. The pause was restored from
    the trail and its overrun went out as a pause_overrun with worker_id w-2 - an accusation
    against Bob, carrying Alice's reason."""
    alice = daemon(write_config(), clock)
    alice.handle_command("pause", {"reason": "doctor appointment for my son", "minutes": 30}, source="local")
    alice.audit.close()
    clock.advance(3 * 3600)
    delivery = RecordingDelivery()
    bob = daemon(handed_over(write_config), clock, delivery)
    assert bob.policy.paused is None
    bob._check_pause()
    clock.advance(600)
    bob._check_pause()
    assert delivery.events == []
    assert bob.handover is not None and bob.handover.previous.worker_id == "w-1"
    entries = bob.audit.recent(10)
    changed = [e for e in entries if e.kind == "worker_changed"]
    assert len(changed) == 1 and changed[0].data["to_worker"] == "w-2"
    assert "doctor" not in json.dumps(changed[0].data)  # when the pause ended, not why
    bob.audit.close()


def test_the_same_worker_keeps_the_pause_across_a_restart(write_config: Any, clock: Any) -> None:
    path = write_config()
    first = daemon(path, clock)
    first.handle_command("pause", {"reason": "fetch water", "minutes": 5}, source="local")
    first.audit.close()
    again = daemon(path, clock)
    assert again.handover is None and again.policy.paused is not None
    again.audit.close()


def test_a_move_to_another_site_is_a_hand_over_too(write_config: Any, clock: Any) -> None:
    first = daemon(write_config(), clock)
    first.handle_command("pause", {"reason": "fetch water", "minutes": 5}, source="local")
    first.audit.close()
    moved = daemon(handed_over(write_config, "w-1", "site-b"), clock)
    assert moved.policy.paused is None and moved.handover is not None
    moved.audit.close()
    log = AuditLog.for_state_dir(moved.cfg.state_dir)
    assert [e.kind for e in log.recent(5)].count("worker_changed") == 1
    log.close()


def test_history_shows_the_new_worker_nothing_of_the_previous_one(write_config: Any, clock: Any, capsys: Any) -> None:
    """'deskwatch history' showed Bob Alice's scans, findings and pause reasons of the last 20
    days; the trail keeps them for the audit, and history now starts at the hand-over."""
    from deskwatch.cli import main
    from deskwatch.domain import Finding, ScanRecord

    alice = daemon(write_config(), clock)
    alice.audit.record_scan(ScanRecord("s-alice", "schedule", clock.now(), clock.now(), frames=5,
                                       findings=[Finding("phone_use", 0.9, 1, detail="phone at the ear")]))  # fmt: skip
    alice.handle_command("pause", {"reason": "doctor appointment for my son", "minutes": 30}, source="local")
    alice.audit.close()
    bob_config = handed_over(write_config)
    # provisioned for Bob, the daemon not started yet: none of it is Bob's
    assert main(["history", "--config", str(bob_config)]) == 0
    out = capsys.readouterr().out
    assert "doctor" not in out and "phone_use" not in out and "Paused now" not in out
    assert "handed over to worker w-2" in out
    clock.advance(3 * 3600)
    bob = daemon(bob_config, clock)
    bob.audit.record_scan(ScanRecord("s-bob", "schedule", clock.now(), clock.now(), frames=5))
    bob.audit.close()
    assert main(["history", "--config", str(bob_config), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in rows] == ["scan", "worker_changed"] and rows[0]["scan_id"] == "s-bob"
    assert "doctor" not in json.dumps(rows)
    assert main(["history", "--config", str(bob_config)]) == 0
    out = capsys.readouterr().out
    assert "doctor" not in out and "phone_use" not in out and "handed over to worker w-2" in out
    # the trail itself keeps Alice's entries for the audit (retention), out of Bob's view
    log = AuditLog.for_state_dir(bob.cfg.state_dir)
    assert {e.data.get("scan_id") for e in log.recent(10) if e.kind == "scan"} == {"s-alice", "s-bob"}
    log.close()


def test_the_previous_workers_face_templates_are_deleted(write_config: Any, clock: Any) -> None:
    """Alice's templates stayed on the device after she left: biometric data of a person the
    device no longer checks. Bob's, enrolled before the daemon's restart, stay."""
    import numpy as np

    from deskwatch.vision.identity import save_templates, template_path

    alice = daemon(write_config(), clock)
    alice.audit.close()
    state = alice.cfg.state_dir
    for worker in ("w-1", "w-2"):
        save_templates(state, worker, np.ones((3, 128)), backend="tflite", model_sha256="0" * 64)
    bob = daemon(handed_over(write_config), clock)
    assert not template_path(state, "w-1").exists() and template_path(state, "w-2").exists()
    changed = [e for e in bob.audit.recent(5) if e.kind == "worker_changed"]
    assert changed[0].data["templates_deleted"] == ["w-1"]
    bob.audit.close()


def test_a_worker_id_handed_to_a_new_person_is_taken_over_as_another_worker(
    write_config: Any, clock: Any, capsys: Any
) -> None:
    """w-1 passed from Alice to Bob (the collector's users add ... --new-holder) and the desk kept
    device.worker_id w-1: the device knew no change, checked Bob against Alice's templates (an
    unknown face: unrecognized_person) and showed him her history and her pause. 'deskwatch
    new-holder' now records the change; Bob is enrolled, and the next start takes it over."""
    import numpy as np

    from deskwatch.cli import main
    from deskwatch.vision.identity import save_templates, template_path

    path = write_config()
    alice = daemon(path, clock)
    alice.handle_command("pause", {"reason": "doctor appointment for my son", "minutes": 30}, source="local")
    alice.audit.close()
    state = alice.cfg.state_dir
    save_templates(state, "w-1", np.ones((3, 128)), backend="tflite", model_sha256="0" * 64)
    assert main(["new-holder", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "deskwatch enroll --worker w-1 --consent" in out
    assert not template_path(state, "w-1").exists()  # Alice's: gone at once
    assert main(["history", "--config", str(path)]) == 0
    assert "doctor" not in capsys.readouterr().out
    save_templates(state, "w-1", np.full((3, 128), 2.0), backend="tflite", model_sha256="0" * 64)  # Bob enrolled
    clock.advance(3 * 3600)
    delivery = RecordingDelivery()
    bob = daemon(path, clock, delivery)
    assert bob.handover is not None and bob.policy.paused is None
    bob._check_pause()
    assert delivery.events == []
    assert template_path(state, "w-1").exists()  # Bob's stays
    bob.audit.close()
    again = daemon(path, clock)  # taken once
    assert again.handover is None
    again.audit.close()
    assert main(["history", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "doctor" not in out and "handed over to worker w-1" in out


def queue_for_alice(state: str) -> str:
    from deskwatch.delivery.outbox import Outbox

    event_id = "01a224ee-45fe-72be-b748-f6bbc5d61791"
    box = Outbox(state, max_bytes=10**6, max_messages=100, max_age_days=20)
    box.put_event({"event_id": event_id, "site": "site-a", "worker_id": "w-1", "type": "phone_use"}, b"\xff\xd8jpeg")
    box.put("scan", "scan", {"site": "site-a", "scan_id": "s-alice"})
    box.close()
    return event_id


def real_delivery_daemon(cfg_path: Path, clock: Any) -> Daemon:
    cfg = load_config(str(cfg_path))
    return Daemon(
        cfg, clock=clock, parts=Parts(camera=FakeCamera(), vision=ScriptedVision(), notifier=SilentNotifier())
    )


def test_a_device_moved_to_another_site_drops_what_it_queued_at_the_old_one(write_config: Any, clock: Any) -> None:
    """Moved from site-a to site-b with Alice's findings still queued: they went out under
    site-b's topics naming site-a, the new site's collector refused them (source_mismatch),
    the device took the broker's PUBACK for delivery, and they were lost there without a
    count. Now they are dropped before anything is sent, counted in health, audited."""
    from deskwatch.delivery.outbox import dropped_event_ids

    alice = real_delivery_daemon(write_config(), clock)
    alice.audit.close()
    alice.delivery.outbox.close()
    event_id = queue_for_alice(alice.cfg.state_dir)
    moved = real_delivery_daemon(handed_over(write_config, "w-2", "site-b"), clock)
    outbox = moved.delivery.outbox
    assert outbox.depth == 0
    assert outbox.stats()["lost"]["events"] == 1
    assert dropped_event_ids(moved.cfg.state_dir)[event_id] == {"event": "site_changed", "evidence": "site_changed"}
    dropped = [e for e in moved.audit.recent(5) if e.kind == "queue_dropped"]
    assert dropped[0].data == {"from_site": "site-a", "to_site": "site-b", "event": 1, "evidence": 1, "scan": 1}
    moved.audit.close()
    outbox.close()


def test_another_worker_at_the_same_site_sends_the_previous_ones_queue_as_recorded(
    write_config: Any, clock: Any
) -> None:
    alice = real_delivery_daemon(write_config(), clock)
    alice.audit.close()
    alice.delivery.outbox.close()
    queue_for_alice(alice.cfg.state_dir)
    bob = real_delivery_daemon(handed_over(write_config), clock)
    events = [m for m in bob.delivery.outbox.pending() if m.kind == "event"]
    assert [json.loads(m.payload)["worker_id"] for m in events] == ["w-1"]  # never relabelled
    assert bob.delivery.outbox.depth == 3
    bob.audit.close()
    bob.delivery.outbox.close()
