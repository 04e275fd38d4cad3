"""Remote jobs on the device: intake, config changes with rollback, model hot swap, software."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from deskwatch.jobs.agent import JobAgent, active_models_dir
from deskwatch.jobs.executor import Services, run_queued
from deskwatch.jobs.model_check import model_selftest
from deskwatch.vision.config import VisionConfig
from deskwatch_collector.jobs import make_job
from deskwatch_contract.jobs import ENVELOPE_SCHEMA
from deskwatch_contract.jsonutil import dumps_bytes
from deskwatch_contract.signing import generate_key, seal
from tests.support.common import REPO
from tests.support.faultfs import FaultFs

MODELS = REPO / "models"
# the daemon's clock in these tests; root's side (run_queued) checks expiry on the real one,
# so the jobs are issued now (a fixed day made every job expired a week after it)
NOW = datetime.now(UTC).replace(microsecond=0)


class Systemd(Services):
    """The daemon's unit as the executor sees it: READY after a restart, or failing."""

    def __init__(self, healthy: list[bool]) -> None:
        self.healthy = healthy  # one answer per restart
        self.restarts = 0
        self.t = 0.0

    def restart(self, unit: str) -> None:
        self.restarts += 1

    def state(self, unit: str) -> dict[str, str]:
        ok = self.healthy[min(self.restarts, len(self.healthy)) - 1]
        if ok:
            return {"ActiveState": "active", "SubState": "running", "MainPID": str(self.restarts)}
        return {"ActiveState": "activating", "SubState": "auto-restart", "Result": "exit-code", "ExecMainStatus": "78"}

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def monotonic(self) -> float:
        return self.t


class Device:
    def __init__(
        self, root: Path, public: bytes, *, models_dir: Path | None = None, checks: Any = None, site: str = "acme"
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.state = root / "state"
        self.state.mkdir(mode=0o700)
        self.keys = root / "keys"
        self.keys.mkdir()
        (self.keys / "fleet.pub").write_bytes(public)
        self.config = root / "config.yaml"
        self.config.write_text(
            f"device: {{id: desk-1, site: {site}, worker_id: w-1}}\nstate_dir: {self.state}\n"
            "mqtt: {host: 127.0.0.1, tls: {enabled: false}}\n"
            f"camera: {{backend: replay, source: {REPO / 'demo/frames'}}}\n"
            "schedule: {mode: interval, interval_seconds: 300}\n"
        )
        self.config.chmod(0o640)
        self.sent: list[dict[str, Any]] = []
        self.swapped: list[Path] = []
        self.record: dict[str, Any] = {}
        self.agent = JobAgent(
            site=site,
            device_id="desk-1",
            version="0.2.0",
            state_dir=self.state,
            publish=self.sent.append,
            models_dir=models_dir or MODELS,
            model_check=checks,
            swap=self.swapped.append,
            keys_dir=self.keys,
            now=lambda: NOW,
            update_record=lambda: self.record,
        )

    def statuses(self) -> list[tuple[str, str]]:
        return [(p["status"], p["step"]) for p in self.sent]


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    return generate_key()


def envelope(private: bytes, **kw: Any) -> bytes:
    kind = kw.pop("kind", "config")
    kw.setdefault("devices", ["acme/desk-1"])
    doc = make_job(kw.pop("job_id", "job-1"), kind, now=kw.pop("now", NOW), **kw)
    return dumps_bytes(seal(doc, private, ENVELOPE_SCHEMA))


def test_only_signed_current_jobs_for_this_device_are_taken(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    device = Device(tmp_path, keys[1])
    change = {"schedule.interval_seconds": 600}
    device.agent.handle_notify(envelope(generate_key()[0], config_set=change))
    device.agent.handle_notify(envelope(keys[0], config_set=change, now=NOW - timedelta(days=8), job_id="old"))
    device.agent.handle_notify(envelope(keys[0], config_set=change, devices=["acme/desk-2"], job_id="other"))
    device.agent.handle_notify(b'{"schema": "deskwatch.job.signed/1", "key_id": ')
    tampered = json.loads(envelope(keys[0], config_set=change, job_id="t"))
    tampered["document"] = tampered["document"][:-4] + "AAA="
    device.agent.handle_notify(dumps_bytes(tampered))
    details = [(p["status"], p["detail"]) for p in device.sent]
    assert [d[0] for d in details] == ["rejected"] * 5
    assert "unknown key" in details[0][1] and "expired" in details[1][1]
    assert "not addressed to this device" in details[2][1] and "not valid JSON" in details[3][1]
    assert "does not verify" in details[4][1]
    assert not (device.state / "jobs/queue").exists()


def test_a_config_job_is_checked_like_check_config_applied_and_reported(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    device = Device(tmp_path, keys[1])
    device.agent.handle_notify(envelope(keys[0], config_set={"schedule.interval_seconds": 600}))
    assert device.statuses() == [("received", "verify"), ("queued", "queued")]
    systemd = Systemd([True])
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=systemd, settle=5)
    assert outcome.status == "succeeded" and systemd.restarts == 1
    assert yaml.safe_load(device.config.read_text())["schedule"]["interval_seconds"] == 600
    assert device.config.stat().st_mode & 0o777 == 0o640
    device.agent.tick()
    assert device.statuses()[-1] == ("succeeded", "applied")
    device.agent.handle_notify(envelope(keys[0], config_set={"schedule.interval_seconds": 600}))  # retained again
    assert len(device.sent) == 3  # already done: not run twice


def test_a_change_check_config_refuses_changes_nothing(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    device = Device(tmp_path, keys[1])
    before = device.config.read_text()
    device.agent.handle_notify(envelope(keys[0], config_set={"schedule.interval_seconds": 2}))
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]))
    assert outcome.status == "rejected" and "schedule.interval_seconds = 2" in outcome.detail
    assert device.config.read_text() == before
    assert not list(device.config.parent.glob("*.job-staged"))


def test_a_daemon_that_does_not_come_back_rolls_the_config_back(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    device = Device(tmp_path, keys[1])
    before = device.config.read_text()
    device.agent.handle_notify(envelope(keys[0], config_set={"schedule.interval_seconds": 900}))
    systemd = Systemd([False, True])  # the new config's daemon exits; the old one comes back
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=systemd, settle=5)
    assert (outcome.status, outcome.rolled_back, systemd.restarts) == ("failed", True, 2)
    assert "exited with status 78" in outcome.detail and "previous config is back" in outcome.detail
    assert device.config.read_text() == before


def test_the_root_side_verifies_again(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """A queue file the daemon (or anyone with its uid) wrote is not trusted: only the signature is."""
    device = Device(tmp_path, keys[1])
    queue = device.state / "jobs/queue"
    queue.mkdir(parents=True)
    forged = json.loads(envelope(generate_key()[0], config_set={"schedule.interval_seconds": 900}))
    (queue / "job-1.json").write_text(json.dumps(forged))
    before = device.config.read_text()
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]))
    assert outcome.status == "rejected" and "unknown key" in outcome.detail
    assert device.config.read_text() == before


def model_job(
    private: bytes, tmp_path: Path, blob: bytes, file: str, job_id: str = "model-1", served: bytes | None = None
) -> bytes:
    """A signed model job for ``blob``; the file behind its file:// URL holds ``served`` (default: blob).
    The download code is the same for http(s)."""
    path = tmp_path / f"{job_id}.tflite"
    path.write_bytes(blob if served is None else served)
    artifact = {"url": f"file://{path}", "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob), "file": file}
    return envelope(private, kind="model", artifact=artifact, job_id=job_id)


@pytest.mark.skipif(not (MODELS / "manifest.yaml").exists(), reason="models/ not built")
def test_a_model_job_selftests_the_new_model_then_swaps(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    vision = VisionConfig()
    device = Device(tmp_path, keys[1], checks=lambda new_dir, file: model_selftest(vision, MODELS, new_dir, file))
    blob = (MODELS / "face_detection_short_range.tflite").read_bytes()
    device.agent.handle_notify(model_job(keys[0], tmp_path, blob, "face_detection_short_range.tflite"))
    device.agent.join()
    assert device.statuses()[-1] == ("succeeded", "swapped"), device.sent
    current = device.state / "models/current"
    assert device.swapped == [current] and active_models_dir(device.state, MODELS) == current
    assert (current / "face_detection_short_range.tflite").read_bytes() == blob


@pytest.mark.skipif(not (MODELS / "manifest.yaml").exists(), reason="models/ not built")
def test_a_model_that_fails_its_selftest_keeps_the_old_one(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    vision = VisionConfig()
    device = Device(tmp_path, keys[1], checks=lambda new_dir, file: model_selftest(vision, MODELS, new_dir, file))
    # the full-range face model in place of the short-range one: 192x192 input where 128x128 is decoded
    wrong = (MODELS / "face_detection_full_range.tflite").read_bytes()
    device.agent.handle_notify(model_job(keys[0], tmp_path, wrong, "face_detection_short_range.tflite", "model-wrong"))
    device.agent.join()
    last = device.sent[-1]
    assert (last["status"], last["step"], last["rolled_back"]) == ("failed", "selftest", True)
    assert "differs from the current" in last["detail"]
    garbage = b"\0not a flatbuffer" * 64
    device.agent.handle_notify(
        model_job(keys[0], tmp_path, garbage, "face_detection_short_range.tflite", "model-garbage")
    )
    device.agent.join()
    assert device.sent[-1]["status"] == "failed" and device.swapped == []
    assert active_models_dir(device.state, MODELS) == MODELS
    assert not list((device.state / "models").glob("job-*"))


def test_a_download_that_is_not_the_signed_artifact_is_refused(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    device = Device(tmp_path, keys[1], models_dir=tmp_path / "models")
    shutil.copytree(MODELS, tmp_path / "models", ignore=shutil.ignore_patterns("*.tflite"))
    device.agent.handle_notify(
        model_job(keys[0], tmp_path, b"good", "face_detection_short_range.tflite", served=b"evil")
    )
    device.agent.join()
    assert device.sent[-1]["status"] == "failed" and "not the artifact the job names" in device.sent[-1]["detail"]


def test_a_software_job_reports_after_the_reboot(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    device = Device(tmp_path, keys[1])
    bundle = tmp_path / "update.bundle"
    bundle.write_bytes(b"bundle bytes")
    artifact = {
        "url": f"file://{bundle}",
        "sha256": hashlib.sha256(b"bundle bytes").hexdigest(),
        "bytes": 12,
        "version": "0.3.0",
    }
    device.agent.handle_notify(envelope(keys[0], kind="software", artifact=artifact, job_id="sw-1"))
    installed: list[tuple[bytes, str]] = []
    [outcome] = run_queued(
        device.state,
        device.config,
        keys_dir=device.keys,
        services=Systemd([True]),
        install=lambda bundle, job: installed.append((bundle.read(), job.job_id)),
    )
    assert installed == [(b"bundle bytes", "sw-1")] and outcome.status == "in_progress"
    device.agent.tick()
    assert device.statuses()[-1] == ("in_progress", "rebooting")
    sent = len(device.sent)
    # the trial boot: the collector still retains the job (no final status yet) and delivers it again
    device.record = {"state": "trial", "job_id": "sw-1"}
    device.agent.handle_notify(envelope(keys[0], kind="software", artifact=artifact, job_id="sw-1"))
    device.agent.tick()
    assert len(device.sent) == sent and not (device.state / "jobs/queue/sw-1.json").exists()  # not run again
    device.record = {"state": "committed", "job_id": "sw-1", "reason": "healthy"}
    device.agent.tick()
    device.agent.handle_notify(envelope(keys[0], kind="software", artifact=artifact, job_id="sw-1"))
    device.agent.tick()
    assert device.statuses()[sent:] == [("succeeded", "health check")]  # one final report: committed


def test_a_rolled_back_software_update_is_reported_once(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    device = Device(tmp_path, keys[1])
    device.record = {"state": "rolled_back", "job_id": "sw-1", "reason": "deskwatch.service exited before READY"}
    device.agent.tick()
    last = device.sent[-1]
    assert (last["status"], last["rolled_back"], last["kind"]) == ("failed", True, "software")
    device.agent.tick()
    assert device.sent[-1] is last  # reported once


@pytest.mark.broker
def test_the_daemons_mqtt_client_takes_a_retained_job_and_reports(
    tmp_path: Path, keys: tuple[bytes, bytes], write_config: Any, mosquitto: Any
) -> None:
    """Over a real Mosquitto: the job was retained before the device connected (it was
    offline); the delivery subscribes jobs/notify, and the progress leaves through the outbox."""
    import paho.mqtt.publish as publish

    from deskwatch.app import build_delivery
    from deskwatch.config import load_config
    from tests.support.mosquitto import Collector

    path = write_config(f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, tls: {{enabled: false}}}}")
    cfg = load_config(path)
    prefix = f"deskwatch/v1/{cfg.device.site}/{cfg.device.id}/"
    raw = envelope(
        keys[0],
        config_set={"schedule.interval_seconds": 60},
        devices=[f"{cfg.device.site}/{cfg.device.id}"],
        now=datetime.now(UTC),
    )
    publish.single(prefix + "jobs/notify", raw, qos=1, retain=True, hostname="127.0.0.1", port=mosquitto.port)
    progress = Collector(mosquitto, prefix + "jobs/progress")
    device = Device(tmp_path / "dev", keys[1], site=cfg.device.site)
    delivery = build_delivery(cfg, models={})
    device.agent.publish = delivery.send_job_progress
    delivery.on_job(device.agent.handle_notify)
    delivery.start()
    try:
        assert progress.wait_for(lambda got: len(got) >= 2, 15), progress.messages
    finally:
        delivery.stop()
        progress.close()
    sent = [json.loads(m.payload) for m in progress.messages]
    assert [(p["status"], p["job_id"]) for p in sent] == [("received", "job-1"), ("queued", "job-1")]
    assert (tmp_path / "dev/state/jobs/queue/job-1.json").exists()


def test_root_never_writes_through_a_link_the_service_user_planted(tmp_path: Path) -> None:
    """done/ and the download directory belong to the daemon's user: a link at the temporary
    name (``done/<id>.tmp -> /etc/shadow``) is replaced, the file it points at untouched."""
    from deskwatch.jobs.download import fetch
    from deskwatch.jobs.executor import Outcome, write_outcome
    from deskwatch.system.files import write_atomically
    from deskwatch_contract.jobs import Artifact

    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    victim.chmod(0o600)
    before = victim.stat()
    done = tmp_path / "state/jobs/done"
    done.mkdir(parents=True)
    (done / "evil.tmp").symlink_to(victim)
    write_outcome(done, Outcome("evil", "config", "failed", "verify", "x"))
    assert json.loads((done / "evil.json").read_text())["job_id"] == "evil"

    (tmp_path / "seen.json").symlink_to(victim)  # the final name too: rename replaces the link
    write_atomically(tmp_path / "seen.json", b"{}", 0o644, tmp=tmp_path / "seen.tmp")
    assert not (tmp_path / "seen.json").is_symlink()

    blob = tmp_path / "update.src"
    blob.write_bytes(b"bundle bytes")
    dest = tmp_path / "state/jobs/sw-1.bundle"
    (tmp_path / "state/jobs/sw-1.bundle.part").symlink_to(victim)
    fetch(Artifact(f"file://{blob}", hashlib.sha256(b"bundle bytes").hexdigest(), 12), dest)
    assert dest.read_bytes() == b"bundle bytes"
    after = victim.stat()
    assert victim.read_text() == "root:secret\n"
    assert (after.st_uid, after.st_mode, after.st_mtime_ns) == (before.st_uid, before.st_mode, before.st_mtime_ns)


def test_root_never_follows_a_directory_the_service_user_swapped_for_a_link(tmp_path: Path) -> None:
    """The service user owns <state_dir>/jobs: replacing done/ (or the download's directory)
    with a link to /etc must not make root write, rename or delete there."""
    import os

    from deskwatch.jobs.download import fetch
    from deskwatch.jobs.executor import Outcome, write_outcome
    from deskwatch.system.files import UnsafePath, fsync_dir, remove, write_atomically
    from deskwatch_contract.jobs import Artifact

    nobody = 65534
    etc = tmp_path / "etc"  # what root owns
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0\n")
    jobs = tmp_path / "state/jobs"  # what the service user owns
    jobs.mkdir(parents=True)
    os.chown(jobs, nobody, nobody)
    (jobs / "done").symlink_to(etc)
    os.lchown(jobs / "done", nobody, nobody)

    with pytest.raises(UnsafePath, match="link in a directory others can change"):
        write_outcome(jobs / "done", Outcome("evil", "config", "failed", "verify", "x"))
    with pytest.raises(UnsafePath):
        write_atomically(jobs / "done" / "passwd", b"owned\n")
    with pytest.raises(UnsafePath):
        fsync_dir(jobs / "done")
    with pytest.raises(UnsafePath):
        remove(jobs / "done" / "passwd")
    blob = tmp_path / "update.src"
    blob.write_bytes(b"bundle bytes")
    with pytest.raises(UnsafePath):
        fetch(Artifact(f"file://{blob}", hashlib.sha256(b"bundle bytes").hexdigest(), 12), jobs / "done" / "x.bundle")
    assert sorted(p.name for p in etc.iterdir()) == ["passwd"]
    assert (etc / "passwd").read_text() == "root:x:0:0\n"

    # a link root itself could have made (in a directory only root can write) is followed
    os.chown(jobs, 0, 0)
    jobs.chmod(0o755)
    write_outcome(jobs / "done", Outcome("fine", "config", "done", "applied", "ok"))
    assert json.loads((etc / "fine.json").read_text())["job_id"] == "fine"


def test_root_takes_only_regular_files_from_the_queue_and_never_a_queue_swapped_for_a_link(
    tmp_path: Path, keys: tuple[bytes, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    """The queue is the service user's: a link or a FIFO planted as <id>.json is a rejected
    job (no hang, the file a link points at untouched), and a queue replaced by a link to a
    directory of *.json files runs nothing and deletes nothing there."""
    import os
    import threading

    from deskwatch.system.files import UnsafePath

    device = Device(tmp_path / "dev", keys[1])
    queue = device.state / "jobs/queue"
    queue.mkdir(parents=True)
    victim = tmp_path / "settings.json"
    victim.write_text('{"keep": true}')
    (queue / "link.json").symlink_to(victim)
    os.mkfifo(queue / "fifo.json")
    result: list[Any] = []
    runner = threading.Thread(
        target=lambda: result.append(
            run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]))
        )
    )
    runner.start()
    runner.join(20)
    assert not runner.is_alive(), "run-queued hung on a FIFO in the queue"
    outcomes = {o.job_id: o for o in result[0]}
    assert {k: (o.status, o.step) for k, o in outcomes.items()} == {
        "link": ("rejected", "verify"),
        "fifo": ("rejected", "verify"),
    }
    assert "not a regular file" in outcomes["fifo"].detail
    assert victim.read_text() == '{"keep": true}' and sorted(os.listdir(queue)) == []

    elsewhere = tmp_path / "etc-like"
    elsewhere.mkdir()
    (elsewhere / "a.json").write_text("{}")
    queue.rmdir()
    queue.symlink_to(elsewhere)
    os.chown(queue.parent, 65534, 65534)  # jobs/ belongs to the service user
    with pytest.raises(UnsafePath):
        run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]))
    assert sorted(os.listdir(elsewhere)) == ["a.json"]
    from deskwatch.cli import main  # what the root service prints: what is wrong and what to do, exit 1

    assert main(["jobs", "--config", str(device.config), "run-queued"]) == 1
    err = capsys.readouterr().err
    assert "is a link in a directory others can change" in err and "remove the link" in err
    assert "Traceback" not in err and sorted(os.listdir(elsewhere)) == ["a.json"]


def test_a_model_job_delivered_again_while_it_runs_is_not_started_twice(
    tmp_path: Path, keys: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconnect during a long download delivers the retained job again: one run, not two."""
    import threading

    import deskwatch.jobs.agent as agent_module

    models = tmp_path / "models"
    models.mkdir()
    (models / "a.tflite").write_bytes(b"old a")
    (models / "manifest.yaml").write_text(yaml.safe_dump({"models": {"a": {"file": "a.tflite", "sha256": "0" * 64}}}))
    device = Device(tmp_path / "dev", keys[1], models_dir=models)
    started, release = threading.Event(), threading.Event()
    fetches: list[Path] = []

    def slow_fetch(art: Any, dest: Path, **kw: Any) -> Path:
        fetches.append(dest)
        started.set()
        release.wait(10)
        dest.write_bytes(b"new a")
        return dest

    monkeypatch.setattr(agent_module, "fetch", slow_fetch)
    raw = model_job(keys[0], tmp_path, b"new a", "a.tflite")
    device.agent.handle_notify(raw)
    assert started.wait(10)
    device.agent.handle_notify(raw)  # while the first is downloading
    release.set()
    device.agent.join()
    assert len(fetches) == 1
    assert device.statuses().count(("received", "verify")) == 1
    assert device.statuses()[-1] == ("succeeded", "swapped"), device.sent
    assert (device.state / "models/current/a.tflite").read_bytes() == b"new a"


def small_models(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, blob in files.items():
        (directory / name).write_bytes(blob)
        entries[name.split(".")[0]] = {"file": name, "sha256": hashlib.sha256(blob).hexdigest()}
    (directory / "manifest.yaml").write_text(yaml.safe_dump({"models": entries}))
    return directory


def test_models_a_model_job_built_on_give_way_to_a_software_update_that_replaced_them(
    tmp_path: Path, keys: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """models/current links the untouched files to the installed ones; an update that changes
    one of those makes current's manifest wrong: the installed models are used, not a refusal."""
    installed = small_models(tmp_path / "installed", {"a.tflite": b"a v1", "b.tflite": b"b v1"})
    device = Device(tmp_path / "dev", keys[1], models_dir=installed)
    device.agent.handle_notify(model_job(keys[0], tmp_path, b"a v2", "a.tflite"))
    device.agent.join()
    current = device.state / "models/current"
    assert device.statuses()[-1] == ("succeeded", "swapped"), device.sent
    assert active_models_dir(device.state, installed) == current
    small_models(installed, {"a.tflite": b"a v1", "b.tflite": b"b v3"})  # the software update
    with caplog.at_level("WARNING"):
        assert active_models_dir(device.state, installed) == installed
    assert "a software update replaced the models a model job had built on" in caplog.text
    small_models(installed, {"a.tflite": b"a v3", "b.tflite": b"b v1"})  # only the job's own file changed
    assert active_models_dir(device.state, installed) == current
    (installed / "b.tflite").unlink()
    assert active_models_dir(device.state, installed) == installed


def test_a_model_jobs_directory_is_on_disk_before_current_points_at_it(
    tmp_path: Path, keys: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut right after the swap must find the manifest, links and model written."""
    import os

    installed = small_models(tmp_path / "installed", {"a.tflite": b"a v1", "b.tflite": b"b v1"})
    device = Device(tmp_path / "dev", keys[1], models_dir=installed)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        where = kw.get("dst_dir_fd")  # a name in a directory opened without following links
        events.append(("replace", str(dst) if where is None else os.readlink(f"/proc/self/fd/{where}") + f"/{dst}"))
        real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    device.agent.handle_notify(model_job(keys[0], tmp_path, b"a v2", "a.tflite"))
    device.agent.join()
    assert device.statuses()[-1] == ("succeeded", "swapped"), device.sent
    base = str(device.state / "models")
    staging = f"{base}/job-model-1"
    swap = events.index(("replace", f"{base}/current"))
    before, after = events[:swap], events[swap + 1 :]
    assert ("replace", f"{staging}/manifest.yaml") in before
    manifest_synced = [i for i, e in enumerate(before) if e[0] == "fsync" and e[1].endswith("manifest.yaml.tmp")]
    assert manifest_synced and ("fsync", staging) in before[manifest_synced[0] :]
    assert ("fsync", base) in after


class PowerCut(BaseException):
    """The device loses power: nothing after this point runs."""


class CutDuringHealthCheck(Systemd):
    def sleep(self, seconds: float) -> None:
        raise PowerCut


def test_a_power_cut_during_the_health_check_restores_the_previous_config_at_boot(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """Running the job again at boot would make the new (maybe bad) config .previous: rollback
    would restore the bad one. The job is instead reported failed with the old config back."""
    device = Device(tmp_path, keys[1])
    before = device.config.read_text()
    raw = envelope(keys[0], config_set={"schedule.interval_seconds": 900})
    device.agent.handle_notify(raw)
    with pytest.raises(PowerCut):
        run_queued(device.state, device.config, keys_dir=device.keys, services=CutDuringHealthCheck([True]))
    assert "900" in device.config.read_text()
    [marker] = (device.state / "jobs/queue").iterdir()
    assert marker.name == "job-1.running" and marker.stat().st_mode & 0o777 == 0o600  # root's own
    device.agent.handle_notify(raw)  # the collector still retains it: not queued again
    assert not (device.state / "jobs/queue/job-1.json").exists()
    systemd = Systemd([True])
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=systemd)  # the boot
    assert (outcome.status, outcome.step, outcome.rolled_back) == ("failed", "interrupted", True)
    assert device.config.read_text() == before and systemd.restarts == 1
    assert not list((device.state / "jobs/queue").iterdir())
    device.agent.tick()
    assert device.statuses()[-1] == ("failed", "interrupted")
    assert run_queued(device.state, device.config, keys_dir=device.keys, services=systemd) == []


def test_a_running_marker_the_service_user_planted_does_not_roll_a_config_back(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """<id>.running tells the root side to restore .previous: only the job runner's own
    (root's, 0600) marker counts; the daemon's user naming the last config job's id does not."""
    import os

    device = Device(tmp_path, keys[1])
    device.agent.handle_notify(envelope(keys[0], config_set={"schedule.interval_seconds": 900}))
    [done] = run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]))
    assert done.status == "succeeded" and "900" in device.config.read_text()
    planted = device.state / "jobs/queue/job-1.running"
    planted.write_text("")
    os.chown(planted, 65534, 65534)
    systemd = Systemd([True])
    assert run_queued(device.state, device.config, keys_dir=device.keys, services=systemd) == []
    assert "900" in device.config.read_text() and systemd.restarts == 0
    assert not planted.exists()


@pytest.mark.parametrize("where", ["stage", "swap_in"])
def test_a_config_change_that_cannot_be_written_fails_instead_of_retrying_forever(
    tmp_path: Path, keys: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from deskwatch.jobs import config_change

    def broken(*args: Any) -> Any:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(config_change, where, broken)
    device = Device(tmp_path, keys[1])
    before = device.config.read_text()
    device.agent.handle_notify(envelope(keys[0], config_set={"schedule.interval_seconds": 900}))
    systemd = Systemd([True])
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=systemd)
    assert outcome.status == "failed" and "Read-only file system" in outcome.detail
    assert device.config.read_text() == before and systemd.restarts == 0
    assert not list((device.state / "jobs/queue").iterdir())  # deskwatch-jobs.path does not start it again


def _swap_every_file(jobs_dir: Path, evil: bytes, stop: Any, swapped: Any) -> None:
    """The daemon's user (a process of its own, uid nobody): whatever root names in
    <state_dir>/jobs while it downloads is replaced with an older release, signed all the same."""
    import os
    import stat
    import time

    os.chdir(jobs_dir)
    os.setgid(65534)
    os.setuid(65534)
    done: set[str] = set()
    while not stop.is_set():
        for name in os.listdir("."):
            if name in done or name.startswith(".evil"):
                continue
            try:
                if not stat.S_ISREG(os.lstat(name).st_mode):
                    continue
                with open(".evil", "wb") as out:
                    out.write(evil)
                os.replace(".evil", name)
            except OSError:
                continue
            done.add(name)
            swapped.set()
        time.sleep(0.001)


def test_root_installs_the_bundle_it_hashed_not_what_the_service_user_puts_at_its_name(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """The download of a software job happens in <state_dir>/jobs, a directory the daemon's
    user owns: it can rename another signed (older) bundle over any name root uses there.
    What root installs is the file it downloaded and hashed, whatever happens to the names."""
    import http.server
    import multiprocessing
    import os
    import threading

    from deskwatch.update.bundle import write_bundle
    from deskwatch.update.install import install
    from deskwatch.update.slots import read_state
    from tests.appliance.test_update_ab import card, make_bundle

    release = generate_key()
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    good = make_bundle(tmp_path / "new", release[0], version="0.9.1").read_bytes()
    (tmp_path / "old/boot.img").write_bytes(b"OLD 0.3.0 boot " * 100)
    (tmp_path / "old/root.img").write_bytes(b"OLD 0.3.0 root " * 100)
    write_bundle(
        tmp_path / "old/update-0.3.0.bundle",
        version="0.3.0",
        boot_image=tmp_path / "old/boot.img",
        root_image=tmp_path / "old/root.img",
        private_pem=release[0],
    )
    evil = (tmp_path / "old/update-0.3.0.bundle").read_bytes()
    ctx = multiprocessing.get_context("fork")
    stop, swapped = ctx.Event(), ctx.Event()

    class Server(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(good)))
            self.end_headers()
            self.wfile.write(good[: len(good) // 2])
            self.wfile.flush()
            swapped.wait(2.0)  # the rest once the service user has had its go
            self.wfile.write(good[len(good) // 2 :])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    device = Device(tmp_path / "dev", keys[1])
    system = card(tmp_path / "sys", release)
    artifact = {
        "url": f"http://127.0.0.1:{server.server_port}/update-0.9.1.bundle",
        "sha256": hashlib.sha256(good).hexdigest(),
        "bytes": len(good),
        "version": "0.9.1",
    }
    device.agent.handle_notify(envelope(keys[0], kind="software", artifact=artifact, job_id="sw-091"))
    jobs = device.state / "jobs"
    os.chown(jobs, 65534, 65534)  # as on the device: the daemon's user owns it
    attacker = ctx.Process(target=_swap_every_file, args=(jobs, evil, stop, swapped))
    attacker.start()
    try:
        [outcome] = run_queued(
            device.state,
            device.config,
            keys_dir=device.keys,
            services=Systemd([True]),
            install=lambda bundle, job: install(system, bundle, job_id=job.job_id),
        )
    finally:
        stop.set()
        attacker.join(10)
        server.shutdown()
    assert outcome.status == "in_progress", outcome
    assert read_state(system.autoboot_dir)["version"] == "0.9.1"
    assert system.device(6).read_bytes() == b"ext4 root image " * 5000  # 0.9.1's, not the old release
    assert sorted(p.name for p in jobs.iterdir() if p.is_file()) == []  # nothing of root's left by name


def test_root_runs_a_job_once_and_only_for_this_device(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """The queue is the daemon's user's: it can put back an old signed envelope (a config
    change a later job reverted) or one addressed to another desk. Root keeps its own record
    of the jobs it ran and reads who this device is from the config itself."""
    import os

    device = Device(tmp_path, keys[1])
    queue = device.state / "jobs/queue"

    def interval() -> int:
        return int(yaml.safe_load(device.config.read_text())["schedule"]["interval_seconds"])

    job_a = envelope(keys[0], job_id="cfg-a", config_set={"schedule.interval_seconds": 600})
    job_b = envelope(keys[0], job_id="cfg-b", config_set={"schedule.interval_seconds": 300})
    for raw in (job_a, job_b):
        device.agent.handle_notify(raw)
        [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]), settle=1)
        assert outcome.status == "succeeded"
        device.agent.tick()
    assert interval() == 300
    record = device.config.parent / "jobs-run.json"
    assert sorted(json.loads(record.read_text())) == ["cfg-a", "cfg-b"] and record.stat().st_mode & 0o777 == 0o600

    (queue / "cfg-a.json").write_bytes(job_a)  # the service user puts the old job back
    systemd = Systemd([True])
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=systemd, settle=1)
    assert (outcome.status, outcome.step) == ("rejected", "verify") and "already ran" in outcome.detail
    assert interval() == 300 and systemd.restarts == 0 and not os.listdir(queue)

    other = envelope(
        keys[0], job_id="cfg-other", devices=["acme/desk-2"], config_set={"schedule.interval_seconds": 900}
    )
    (queue / "cfg-other.json").write_bytes(other)
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=systemd, settle=1)
    assert (outcome.status, outcome.step) == ("rejected", "verify") and "not addressed to this device" in outcome.detail
    assert interval() == 300 and systemd.restarts == 0
    assert "cfg-other" not in json.loads(record.read_text())


def test_a_software_job_installs_an_older_bundle_only_when_it_says_so(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """A signed job for an older release (0.3.0 on a device running 0.9.0) is refused unless
    its document allows the downgrade, a field the collector signs."""
    from deskwatch.update.install import install
    from deskwatch.update.slots import read_state
    from tests.appliance.test_update_ab import card, make_bundle

    release = generate_key()
    system = card(tmp_path / "sys", release)
    old = make_bundle(tmp_path, release[0], version="0.3.0")
    artifact = {
        "url": f"file://{old}",
        "sha256": hashlib.sha256(old.read_bytes()).hexdigest(),
        "bytes": old.stat().st_size,
        "version": "0.3.0",
    }
    device = Device(tmp_path / "dev", keys[1])

    def run(job_id: str, **extra: Any) -> Any:
        raw = envelope(keys[0], kind="software", artifact={**artifact, **extra}, job_id=job_id)
        device.agent.handle_notify(raw)
        [outcome] = run_queued(
            device.state,
            device.config,
            keys_dir=device.keys,
            services=Systemd([True]),
            install=lambda bundle, job: install(
                system, bundle, job_id=job.job_id, expect_version=job.artifact.version,
                allow_downgrade=job.artifact.allow_downgrade,
            ),
        )  # fmt: skip
        return outcome

    outcome = run("sw-old")
    assert (outcome.status, outcome.step) == ("failed", "install"), outcome
    assert "older than the running 0.9.0" in outcome.detail and "allow_downgrade" in outcome.detail
    assert system.device(6).read_bytes() == b"old slot" and read_state(system.autoboot_dir) == {}
    outcome = run("sw-old-allowed", allow_downgrade=True)
    assert outcome.status == "in_progress" and read_state(system.autoboot_dir)["version"] == "0.3.0"


def test_no_job_runs_when_roots_record_of_jobs_run_could_be_rewritten(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """A record the daemon's user could write (or replace) would let it erase a job's run."""
    device = Device(tmp_path / "dev", keys[1])
    before = device.config.read_text()
    device.config.parent.chmod(0o777)
    device.agent.handle_notify(envelope(keys[0], config_set={"schedule.interval_seconds": 900}))
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]))
    assert (outcome.status, outcome.step) == ("failed", "record") and "may be written by others" in outcome.detail
    assert device.config.read_text() == before
    device.config.parent.chmod(0o755)
    (device.config.parent / "jobs-run.json").write_text("{not json")
    device.agent.handle_notify(envelope(keys[0], config_set={"schedule.interval_seconds": 900}, job_id="job-2"))
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]))
    assert outcome.status == "failed" and "remove it to start the record afresh" in outcome.detail
    assert device.config.read_text() == before


def test_a_job_for_one_sites_desk_is_not_taken_by_a_desk_of_the_same_name_elsewhere(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """Device ids are unique within a site only: a job names its devices as site/device, and
    a document naming a bare device id (which desk-1?) is refused by the daemon and by root."""
    from deskwatch_contract.jobs import JOB_SCHEMA

    change = {"schedule.interval_seconds": 600}
    acme = Device(tmp_path / "acme", keys[1])
    beta = Device(tmp_path / "beta", keys[1], site="beta")
    raw = envelope(keys[0], job_id="cfg-x", devices=["acme/desk-1"], config_set=change)
    beta.agent.handle_notify(raw)
    assert [(p["status"], p["detail"]) for p in beta.sent] == [("rejected", "not addressed to this device")]
    acme.agent.handle_notify(raw)
    assert acme.statuses() == [("received", "verify"), ("queued", "queued")]
    (beta.state / "jobs/queue").mkdir(parents=True)
    (beta.state / "jobs/queue/cfg-x.json").write_bytes(raw)  # the root side checks for itself
    before = beta.config.read_text()
    [outcome] = run_queued(beta.state, beta.config, keys_dir=beta.keys, services=Systemd([True]))
    assert outcome.status == "rejected" and "not addressed to this device (beta/desk-1)" in outcome.detail
    assert beta.config.read_text() == before

    bare = {
        "schema": JOB_SCHEMA,
        "job_id": "cfg-bare",
        "kind": "config",
        "targets": {"devices": ["desk-1"]},  # what the collector signed before the site was named
        "issued_at": "2026-11-29T10:00:00Z",
        "expires_at": "2026-12-06T10:00:00Z",
        "config": {"set": change},
    }
    raw = dumps_bytes(seal(bare, keys[0], ENVELOPE_SCHEMA))
    acme.agent.handle_notify(raw)
    assert acme.sent[-1]["status"] == "rejected" and "site/device" in acme.sent[-1]["detail"]
    (acme.state / "jobs/queue/cfg-bare.json").write_bytes(raw)
    outcomes = run_queued(acme.state, acme.config, keys_dir=acme.keys, services=Systemd([True]), settle=1)
    assert {o.job_id: o.status for o in outcomes} == {"cfg-x": "succeeded", "cfg-bare": "rejected"}
    assert "site/device" in outcomes[-1].detail


class Dripping:
    """An HTTP server that sends its answer one byte at a time, each just inside a read
    timeout: in the body, or already in the status line and headers."""

    def __init__(self, body: bytes, *, headers_too: bool, pause: float = 0.3) -> None:
        import socket
        import threading

        self.body, self.headers_too, self.pause = body, headers_too, pause
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import contextlib

        with contextlib.suppress(OSError):
            conn, _ = self.server.accept()
            with conn:
                conn.recv(4096)
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\n\r\n".encode()
                if not self.headers_too:
                    conn.sendall(head)
                for b in (head if self.headers_too else b"") + self.body:
                    if self.stop.wait(self.pause):
                        return
                    conn.sendall(bytes([b]))

    def close(self) -> None:
        self.stop.set()
        self.server.close()


@pytest.mark.parametrize("headers_too", [False, True])
def test_a_download_ends_at_its_deadline_however_slowly_the_server_sends(tmp_path: Path, headers_too: bool) -> None:
    """The read timeout is per read: a server (or anyone on the path of an http:// URL) that
    sends a byte just inside it would hold root's job runner for bytes x timeout. The whole
    download has a deadline from the signed size at a minimum rate, with a floor."""
    import time

    from deskwatch.jobs.download import DownloadFailed, fetch
    from deskwatch_contract.jobs import Artifact

    body = b"x" * 40
    server = Dripping(body, headers_too=headers_too)
    artifact = Artifact(f"http://127.0.0.1:{server.port}/b", hashlib.sha256(body).hexdigest(), len(body))
    t0 = time.monotonic()
    try:
        with pytest.raises(DownloadFailed, match=r"not downloaded within 1 s"):
            fetch(artifact, tmp_path / "out", timeout=1.0, floor=1.0, min_rate=1024.0)
    finally:
        server.close()
    assert time.monotonic() - t0 < 3.0
    assert not list(tmp_path.iterdir())  # no .part left


def test_a_software_job_cut_off_ends_failed_instead_of_running_again(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    """systemd's time limit (or a power cut) ends a run in the middle of a software job: the
    next run reports it failed instead of starting it again and again (deskwatch-jobs.path
    restarts the service while its queue file is there). If the install got as far as the
    A/B record, the record has the job's word and nothing is reported twice."""
    import os

    device = Device(tmp_path, keys[1])
    bundle = tmp_path / "update.bundle"
    bundle.write_bytes(b"bundle bytes")
    artifact = {"url": f"file://{bundle}", "sha256": hashlib.sha256(b"bundle bytes").hexdigest(), "bytes": 12}

    def killed(bundle: Any, job: Any) -> None:
        raise PowerCut

    queue = device.state / "jobs/queue"
    installs: list[str] = []

    def cut_off_then_run_again(job_id: str, record: dict[str, Any]) -> list[Any]:
        raw = envelope(keys[0], kind="software", artifact={**artifact, "version": "0.3.0"}, job_id=job_id)
        device.agent.handle_notify(raw)
        with pytest.raises(PowerCut):
            run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]), install=killed)
        [marker] = os.listdir(queue)
        assert marker == f"{job_id}.running" and (queue / marker).stat().st_mode & 0o777 == 0o600
        device.agent.handle_notify(raw)  # the retained copy again: not queued a second time
        assert os.listdir(queue) == [marker]
        outcomes = run_queued(
            device.state,
            device.config,
            keys_dir=device.keys,
            services=Systemd([True]),
            install=lambda bundle, job: installs.append(job.job_id),
            update_record=lambda: record,
        )
        assert installs == [] and os.listdir(queue) == []
        return outcomes

    [outcome] = cut_off_then_run_again("sw-1", {})
    assert (outcome.kind, outcome.status, outcome.step) == ("software", "failed", "interrupted")
    assert "no slot was armed" in outcome.detail
    # installed and rebooting when it was cut off: the A/B record reports it after the trial boot
    assert cut_off_then_run_again("sw-2", {"job_id": "sw-2", "state": "trying"}) == []


@pytest.mark.parametrize(
    ("field", "value"), [("issued_at", "0001-01-01T00:00:00+01:00"), ("expires_at", "9999-12-31T23:59:59-01:00")]
)
def test_a_signed_time_out_of_range_is_a_rejected_job_not_a_crash(
    tmp_path: Path, keys: tuple[bytes, bytes], field: str, value: str
) -> None:
    """A time that leaves datetime's range in UTC: the daemon answers rejected naming the
    field, and root rejects it too instead of leaving it queued (restarted for ever)."""
    import re

    from deskwatch_contract.jobs import JOB_SCHEMA, JobInvalid, parse_document

    doc = {
        "schema": JOB_SCHEMA,
        "job_id": "j1",
        "kind": "config",
        "targets": {"fleet": True},
        "issued_at": "2026-11-29T10:00:00Z",
        "expires_at": "2026-12-06T10:00:00Z",
        "config": {"set": {"schedule.interval_seconds": 600}},
        field: value,
    }
    with pytest.raises(JobInvalid, match=re.escape(f"{field} = '{value}' is out of range")):
        parse_document(doc)
    raw = dumps_bytes(seal(doc, keys[0], ENVELOPE_SCHEMA))
    device = Device(tmp_path, keys[1])
    device.agent.handle_notify(raw)
    assert [(p["status"], p["job_id"]) for p in device.sent] == [("rejected", "j1")]
    assert field in device.sent[0]["detail"] and "out of range" in device.sent[0]["detail"]
    queue = device.state / "jobs/queue"
    queue.mkdir(parents=True)
    (queue / "j1.json").write_bytes(raw)
    before = device.config.read_text()
    [outcome] = run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]))
    assert outcome.status == "rejected" and field in outcome.detail
    assert not list(queue.iterdir()) and device.config.read_text() == before


@pytest.mark.parametrize("fails", ["publish", "fsync"])
def test_a_failure_after_the_model_swap_keeps_the_models_current_points_to(
    tmp_path: Path, keys: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """Once models/current names the new directory, the job is done: a progress message the
    outbox cannot take (a full disk) or a directory sync that fails must not delete the
    directory current points to (and with it an earlier model job's model)."""
    import os

    import deskwatch.jobs.agent as agent_module

    installed = small_models(tmp_path / "installed", {"a.tflite": b"a v1", "b.tflite": b"b v1"})
    device = Device(tmp_path / "dev", keys[1], models_dir=installed)
    device.agent.handle_notify(model_job(keys[0], tmp_path, b"a v2", "a.tflite", job_id="job-a"))
    device.agent.join()
    assert device.statuses()[-1] == ("succeeded", "swapped"), device.sent
    sent = device.sent

    def publish(payload: dict[str, Any]) -> None:
        if fails == "publish" and payload["job_id"] == "job-b" and payload["status"] == "succeeded":
            raise OSError(28, "No space left on device")
        sent.append(payload)

    real_fsync_dir = agent_module.fsync_dir

    def fsync_dir(path: Path) -> None:
        if fails == "fsync" and path == device.state / "models":
            raise OSError(5, "Input/output error")
        real_fsync_dir(path)

    device.agent.publish = publish
    monkeypatch.setattr(agent_module, "fsync_dir", fsync_dir)
    device.agent.handle_notify(model_job(keys[0], tmp_path, b"b v2", "b.tflite", job_id="job-b"))
    device.agent.join()
    current = device.state / "models/current"
    assert os.readlink(current) == "job-job-b" and current.is_dir()
    assert (current / "a.tflite").read_bytes() == b"a v2" and (current / "b.tflite").read_bytes() == b"b v2"
    assert active_models_dir(device.state, installed) == current and device.swapped[-1] == current
    assert not [p for p in sent if p["job_id"] == "job-b" and p["status"] == "failed"]
    if fails == "fsync":
        assert sent[-1]["status"] == "succeeded" and sent[-1]["job_id"] == "job-b"


def test_jobs_status_reads_the_daemons_seen_file_without_trusting_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sudo deskwatch jobs status` reads <state_dir>/jobs/seen.json, which the daemon's user
    writes: a FIFO in its place held root's command until someone wrote to it, a link to
    /dev/zero read until memory ran out and a deeply nested document was a traceback; each
    is now a reason with what to do, the queue still listed."""
    import os
    import threading
    import time

    from deskwatch.cli import main

    state = tmp_path / "state"
    jobs = state / "jobs"
    (jobs / "queue").mkdir(parents=True)
    (jobs / "queue" / "job-1.json").write_text("{}")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "device": {"id": "d", "site": "s", "worker_id": "w-1"},
                "mqtt": {"host": "localhost"},
                "state_dir": str(state),
            }
        )
    )
    seen = jobs / "seen.json"
    argv = ["jobs", "--config", str(config), "status"]

    seen.write_text(json.dumps({"job-0": "succeeded"}))
    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["results"] == {"job-0": "succeeded"} and shown["queued"] == ["job-1"]

    seen.unlink()
    os.mkfifo(seen)
    unblock = threading.Timer(10, lambda: os.close(os.open(seen, os.O_WRONLY)))  # the old code's reader waits
    unblock.start()
    t0 = time.monotonic()
    try:
        code = main(argv)
    finally:
        unblock.cancel()
    out, err = capsys.readouterr()
    assert time.monotonic() - t0 < 5, "root's command waited on the FIFO"
    assert code == 1 and json.loads(out)["queued"] == ["job-1"]
    assert f"the last results cannot be shown: {seen} is not a regular file" in err and f"rm {seen}" in err

    seen.unlink()
    seen.symlink_to("/dev/zero")
    assert main(argv) == 1
    assert f"{seen} is a symbolic link, not a file" in capsys.readouterr().err

    seen.unlink()
    seen.write_text("[" * 100_000 + "]" * 100_000)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{seen} is not the JSON the daemon writes (RecursionError)" in err and "Traceback" not in err


def test_job_outcomes_on_a_full_disk_are_reported_once_and_cost_the_daemon_nothing(
    keys: tuple[bytes, bytes], fault_fs: FaultFs, caplog: pytest.LogCaptureFixture
) -> None:
    """A config job ran; before the daemon reported it the card filled (the job's own download,
    the journal). Writing the job down as done failed: the outcome was taken for an unreadable
    file and deleted, so the collector never heard how the job ended; a finished software
    update's report raised out of the daemon's main-loop tick ('internal error in run', exit 70,
    and again at every start while the card stayed full). Each outcome is now reported once,
    what the disk cannot take is kept in memory and written once it can, and a queue that
    refuses a report keeps it for a later tick."""
    import sqlite3

    device = Device(fault_fs.tmpfs(4) / "root", keys[1])
    device.agent.handle_notify(envelope(keys[0], config_set={"schedule.interval_seconds": 600}))
    run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]), settle=5)
    device.record = {"state": "rolled_back", "job_id": "sw-1", "reason": "deskwatch.service exited before READY"}
    fault_fs.fill()
    device.agent.tick()
    device.agent.tick()
    assert device.statuses()[2:] == [("succeeded", "applied"), ("failed", "health check")]  # each once
    said = [r.getMessage() for r in caplog.records if "could not write down" in r.getMessage()]
    assert len(said) == 1 and "is full" in said[0], said
    fault_fs.free()
    device.agent.tick()  # written down now
    assert set(json.loads((device.state / "jobs" / "seen.json").read_text())) == {"job-1", "sw-1"}

    refused: list[int] = []

    def full_queue(payload: dict[str, Any]) -> None:
        refused.append(1)
        raise sqlite3.OperationalError("database or disk is full")

    device.agent.handle_notify(envelope(keys[0], config_set={"schedule.interval_seconds": 900}, job_id="job-2"))
    run_queued(device.state, device.config, keys_dir=device.keys, services=Systemd([True]), settle=5)
    device.agent.publish = full_queue
    device.agent.tick()  # the queue refuses the report: the outcome file stays for a later tick
    assert refused and list(device.agent.done_dir.glob("*.json"))
    device.record = {"state": "committed", "job_id": "sw-2", "reason": "healthy"}
    device.agent.tick()  # the update's report is refused too: not taken for made
    device.agent.publish = device.sent.append
    device.agent.tick()
    assert device.statuses()[-2:] == [("succeeded", "applied"), ("succeeded", "health check")]
    assert not list(device.agent.done_dir.glob("*.json"))


def _free_bytes(path: Path) -> int:
    import os

    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _run_software_job(device: Device, keys: tuple[bytes, bytes], url: str, data: bytes) -> tuple[Any, list[str]]:
    """The software job through the daemon's intake and root's runner; (outcome, installs)."""
    artifact = {"url": url, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "version": "0.9.1"}
    device.agent.handle_notify(envelope(keys[0], kind="software", artifact=artifact, job_id="sw-big"))
    installs: list[str] = []
    [outcome] = run_queued(
        device.state,
        device.config,
        keys_dir=device.keys,
        services=Systemd([True]),
        install=lambda bundle, job: installs.append(job.job_id),
    )
    device.agent.tick()  # the daemon reports root's outcome to the collector
    return outcome, installs


def test_a_software_update_larger_than_the_free_space_is_refused_before_its_download(
    tmp_path: Path, keys: tuple[bytes, bytes], fault_fs: FaultFs
) -> None:
    """The bundle (about 450 MB on a real image) is downloaded into the data partition: on one
    too small (the emulator's 256 MiB) every update failed at the download with a bare
    'No space left on device' after filling the disk the daemon queues its events on. The
    signed size is checked against the free space first: the job fails naming both and what
    to do, nothing is written, nothing installed, and the collector hears why."""
    device = Device(fault_fs.tmpfs(16) / "root", keys[1])
    data = bytes(range(256)) * (20 * 4096)  # 20 MiB
    bundle = tmp_path / "update-0.9.1.bundle"
    bundle.write_bytes(data)
    before = _free_bytes(fault_fs.mnt)
    outcome, installs = _run_software_job(device, keys, f"file://{bundle}", data)
    assert (outcome.status, outcome.step) == ("failed", "download") and installs == []
    assert f"not enough free space in {device.state / 'jobs'} for the download" in outcome.detail, outcome.detail
    assert f"{before / 2**20:.1f} MiB free, 52.0 MiB needed" in outcome.detail, outcome.detail
    assert "give the data partition more room" in outcome.detail and "send the job again" in outcome.detail
    assert _free_bytes(fault_fs.mnt) >= before - 64 * 1024  # the job's own small files; none of the bundle
    assert device.sent[-1]["status"] == "failed" and device.sent[-1]["step"] == "download"
    assert device.sent[-1]["detail"] == outcome.detail[:500]


def test_a_disk_that_fills_during_the_download_fails_the_job_and_keeps_nothing_of_it(
    tmp_path: Path, keys: tuple[bytes, bytes], fault_fs: FaultFs
) -> None:
    """There was room when the download started, then the disk filled (the daemon's own
    writes, another file): the job fails the same clear way, and what had been downloaded is
    gone again (the data partition has its space back once the other file is removed)."""
    import http.server
    import threading

    device = Device(fault_fs.tmpfs(48) / "root", keys[1])
    data = bytes(range(256)) * (4 * 4096)  # 4 MiB: 36 MiB with the headroom, the disk has 48

    class Server(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            fault_fs.fill()  # something else takes the rest of the disk
            self.wfile.write(data[len(data) // 2 :])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before = _free_bytes(fault_fs.mnt)
    try:
        outcome, installs = _run_software_job(device, keys, f"http://127.0.0.1:{server.server_port}/u.bundle", data)
    finally:
        server.shutdown()
    assert (outcome.status, outcome.step) == ("failed", "download") and installs == []
    assert f"{device.state / 'jobs'} filled up during the download" in outcome.detail, outcome.detail
    assert f"removed again; {before / 2**20:.1f} MiB was free when it started), 36.0 MiB needed" in outcome.detail
    assert device.sent[-1]["status"] == "failed" and device.sent[-1]["detail"] == outcome.detail[:500]
    fault_fs.free()
    assert _free_bytes(fault_fs.mnt) >= before - 64 * 1024  # the partial download took nothing with it
