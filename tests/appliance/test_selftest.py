"""deskwatch selftest against a real Mosquitto (mutual TLS, fleet ACL) and a replay camera on real photos."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deskwatch.cli import main
from deskwatch.system import clock, health
from deskwatch.technician import selftest
from deskwatch.technician.selftest import FAIL, PASS, WARN, CheckResult, SelftestRun, render_table, run_selftest
from tests.support.common import PHOTOS, REPO
from tests.support.mosquitto import Broker, MakeBroker, Pki, fleet_acl
from tests.support.service import ServiceUser

SELFTEST_ACL = "topic write deskwatch/v1/acme-support/desk-0042/selftest\n"
MODELS_READY = (REPO / "models" / "manifest.yaml").exists()
# The tests below that are not about the daemon's user check as whoever runs them.
AS_ME = ["--service-user", pwd.getpwuid(os.geteuid()).pw_name]


def write_config(tmp_path: Path, broker: Broker, pki: Pki, *, photo: str = "single_04.jpg", extra: str = "") -> Path:
    crt, key = pki.client("acme-support/desk-0042")
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"""
device: {{id: desk-0042, site: acme-support, worker_id: w-1187}}
state_dir: {state}
camera: {{backend: replay, source: {PHOTOS / photo}}}
mqtt:
  host: 127.0.0.1
  port: {broker.port}
  protocol: "5"
  tls: {{ca_file: {pki.ca_crt}, cert_file: {crt}, key_file: {key}}}
{extra}
"""
    )
    cfg.chmod(0o640)
    return cfg


def rows(out: str) -> dict[str, str]:
    data = json.loads(out)
    return {c["check"]: c["status"] for c in data["checks"]}


@pytest.fixture
def broker(make_broker: MakeBroker, pki: Pki) -> Broker:
    acl = fleet_acl(pki)  # the ACL the project generates
    assert SELFTEST_ACL in acl, "the fleet ACL must let devices run the selftest"
    return make_broker(mutual=True, acl=acl)


@pytest.mark.broker
def test_selftest_passes_on_a_provisioned_desk(tmp_path: Path, broker: Broker, pki: Pki, capsys: Any) -> None:
    cfg = write_config(tmp_path, broker, pki)
    skip = ["--skip", "clock"] + ([] if MODELS_READY else ["--skip", "models", "--skip", "framing"])
    snap = tmp_path / "aim.jpg"
    code = main(["selftest", "--config", str(cfg), "--json", "--snapshot", str(snap), *skip, *AS_ME])
    out, err = capsys.readouterr()
    result = rows(out)
    assert result["camera"] == PASS
    assert result["light"] == PASS
    assert result["broker"] == PASS
    assert result["disk"] in (PASS, WARN)
    assert result["permissions"] == PASS
    assert "[1/" in err and "checking camera" in err  # progress while it runs
    assert code == (1 if FAIL in result.values() else 0)
    from PIL import Image

    with Image.open(snap) as im:
        assert im.format == "JPEG" and im.size == (480, 270)
    assert snap.stat().st_mode & 0o777 == 0o600


@pytest.mark.broker
def test_broker_acl_denial_is_a_fail_with_remedy(
    tmp_path: Path, make_broker: MakeBroker, pki: Pki, capsys: Any
) -> None:
    strict = make_broker(mutual=True, acl=fleet_acl(pki).replace(SELFTEST_ACL, ""))  # an ACL that forgot it
    cfg = write_config(tmp_path, strict, pki)
    code = main(["selftest", "--config", str(cfg), "--skip", "clock", "--skip", "models", "--skip", "framing", *AS_ME])
    out = capsys.readouterr().out
    assert code == 1
    line = next(ln for ln in out.splitlines() if ln.startswith("broker"))
    assert "FAIL" in line and "Not authorized" in line
    assert "-> the broker ACL must let this device write" in out


@pytest.mark.broker
def test_unreachable_broker_and_dark_camera(tmp_path: Path, broker: Broker, pki: Pki, capsys: Any) -> None:
    from PIL import Image

    dark = tmp_path / "dark.jpg"
    Image.open(PHOTOS / "single_04.jpg").point(lambda v: v // 12).save(dark)
    cfg = write_config(tmp_path, broker, pki, photo=str(dark))
    broker.stop()
    code = main(
        ["selftest", "--config", str(cfg), "--json", "--skip", "clock", "--skip", "models", "--skip", "framing", *AS_ME]
    )
    data = json.loads(capsys.readouterr().out)
    by = {c["check"]: c for c in data["checks"]}
    assert code == 1 and data["ok"] is False
    assert by["broker"]["status"] == FAIL and "refused" in by["broker"]["detail"]
    assert by["light"]["status"] == FAIL and "too dark" in by["light"]["detail"]
    assert by["light"]["remedy"]
    # the worker can see that the camera was used outside a scan
    assert main(["history", "--config", str(cfg)]) == 0
    assert "technician's selftest used the camera" in capsys.readouterr().out


def test_missing_camera_source_fails_with_remedy(tmp_path: Path) -> None:
    from deskwatch.config import load_config_text

    cfg = load_config_text(
        f"device: {{id: d, site: s, worker_id: w}}\nstate_dir: {tmp_path}\n"
        "camera: {backend: v4l2, source: /dev/video99, open_timeout_seconds: 1}\n"
    )
    run = run_selftest(cfg, checks={"camera": selftest.check_camera, "light": selftest.check_light})
    cam, light = run.results
    assert cam.status == FAIL and cam.remedy
    assert light.status == WARN and "camera failed" in light.detail


def test_a_camera_that_fails_after_opening_is_still_in_the_workers_history(tmp_path: Path, capsys: Any) -> None:
    """The camera check switches the camera on, gets a frame, and the camera fails (a USB
    webcam unplugged, a frame the driver cannot deliver): the row is a FAIL, and the camera use
    used to go unrecorded - only a whole burst was."""
    from deskwatch.audit import AuditLog
    from deskwatch.config import load_config_text

    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(PHOTOS / "single_04.jpg", frames / "a.jpg")
    (frames / "b.jpg").write_bytes(b"\xff\xd8 the second frame never comes")
    cfg = load_config_text(
        f"device: {{id: d, site: s, worker_id: w}}\nstate_dir: {tmp_path / 'state'}\n"
        f"camera: {{backend: replay, source: {frames}}}\n"
    )
    (cam,) = run_selftest(cfg, checks={"camera": selftest.check_camera}).results
    assert cam.status == FAIL and "b.jpg" in cam.detail
    trail = AuditLog.for_state_dir(cfg.state_dir)
    (used,) = [e for e in trail.recent(10) if e.kind == "selftest_capture"]
    trail.close()
    assert used.data["frames"] == 1 and "b.jpg" in used.data["failed"]
    config = tmp_path / "config.yaml"
    config.write_text(f"device: {{id: d, site: s, worker_id: w}}\nstate_dir: {tmp_path / 'state'}\n")
    assert main(["history", "--config", str(config)]) == 0
    assert "technician's selftest used the camera (1 frames; then the camera failed:" in capsys.readouterr().out


def test_secret_permissions(tmp_path: Path) -> None:
    from deskwatch.config import load_config_text

    key = tmp_path / "device.key"
    key.write_text("k")
    key.chmod(0o600)
    (tmp_path / "templates").mkdir(mode=0o700)
    tpl = tmp_path / "templates" / "w.npy"
    tpl.write_text("x")
    tpl.chmod(0o600)
    tmp_path.chmod(0o700)
    cfg = load_config_text(
        f"device: {{id: d, site: s, worker_id: w}}\nstate_dir: {tmp_path}\n"
        f"mqtt: {{tls: {{cert_file: {key}, key_file: {key}}}}}\n"
    )
    run = SelftestRun(cfg)
    assert selftest.check_permissions(run)[0].status == PASS
    tpl.chmod(0o644)
    row = selftest.check_permissions(run)[0]
    assert row.status == FAIL and "chmod 600" in row.detail + row.remedy


def test_clock_row_follows_the_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(clock, "TIMESYNCD_FLAG", tmp_path / "no-flag")
    monkeypatch.setattr(clock, "timedatectl_synchronised", lambda: None)
    monkeypatch.setattr(clock, "kernel_clock_synchronised", lambda: (False, "kernel NTP state 5"))
    assert selftest.check_clock(None)[0].status == FAIL  # type: ignore[arg-type]
    monkeypatch.setattr(clock, "timedatectl_synchronised", lambda: True)
    assert selftest.check_clock(None)[0].status == PASS  # type: ignore[arg-type]
    synced, detail = clock.kernel_clock_synchronised()  # the real syscall answers something
    assert synced in (True, False, None) and detail


@pytest.mark.parametrize("kernel", [True, False, None])
def test_health_and_selftest_agree_on_the_clock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kernel) -> None:
    """One answer for the health topic and the technician (they used to disagree on STA_UNSYNC)."""
    monkeypatch.setattr(clock, "TIMESYNCD_FLAG", tmp_path / "no-flag")
    monkeypatch.setattr(clock, "TIMESYNCD", (tmp_path / "no-timesyncd",))  # a host without timesyncd
    monkeypatch.setattr(clock, "timedatectl_synchronised", lambda: None)
    monkeypatch.setattr(clock, "kernel_clock_synchronised", lambda: (kernel, "kernel NTP state"))
    row = selftest.check_clock(None)[0]  # type: ignore[arg-type]
    assert health.clock_synchronised() is kernel
    assert row.status == {True: PASS, False: FAIL, None: WARN}[kernel]
    (tmp_path / "no-flag").touch()  # timesyncd says synchronised: both follow it
    assert health.clock_synchronised() is True and selftest.check_clock(None)[0].status == PASS  # type: ignore[arg-type]


def test_a_crashing_check_is_a_fail_not_a_traceback() -> None:
    def boom(run: SelftestRun) -> list[CheckResult]:
        raise RuntimeError("bug")

    run = run_selftest(None, checks={"x": boom, "y": lambda r: [CheckResult("y", PASS, "fine")]})  # type: ignore[arg-type]
    assert [(r.name, r.status) for r in run.results] == [("x", FAIL), ("y", PASS)]
    table = render_table(run.results)
    assert "-> report this with the log" in table
    assert table.splitlines()[-1] == "FAIL: 1 passed, 0 warnings, 1 failed"


def test_unknown_skip_is_usage_error(capsys: Any) -> None:
    assert main(["selftest", "--skip", "nope"]) == 2
    assert "unknown check" in capsys.readouterr().err


def test_bad_config_exits_78(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("device: {id: 'bad id'}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "deskwatch", "selftest", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ},
    )
    assert proc.returncode == 78 and "Traceback" not in proc.stderr


def test_framing_rows() -> None:
    import dataclasses

    from deskwatch.config import load_config_text
    from deskwatch.domain import Box, Detection, Face, FrameAnalysis, LightReading

    cfg = load_config_text("device: {id: d, site: s, worker_id: w}\npolicy: {desk_zone: [0.2, 0.0, 0.8, 1.0]}\n")
    light = LightReading(120.0, 50.0, 0.02, 8.0, False, False)
    seat = Detection("person", 0.8, Box(0.3, 0.2, 0.7, 1.0))
    face = Face(Box(0.4, 0.25, 0.55, 0.45), 0.9)
    empty = FrameAnalysis(0, light, [], [])
    worker = FrameAnalysis(1, light, [seat], [face])
    run = SelftestRun(cfg)
    run.analyses = [worker]
    assert selftest.check_framing(run)[0].status == PASS
    # a burst that starts on an empty desk: judged on every frame, not on the middle one
    run.analyses = [empty, empty, worker]
    row = selftest.check_framing(run)[0]
    assert row.status == PASS, row
    assert row.detail.startswith(
        "worker in the desk zone with a face in 1 of 3 frames (frame 1: nobody; frame 2: nobody"
    )
    run.analyses = [empty, FrameAnalysis(1, light, [seat, Detection("person", 0.7, Box(0.45, 0.1, 0.75, 0.9))], [face])]
    assert selftest.check_framing(run)[0].detail.startswith("more than one person in the desk zone in frame 2")
    run.analyses = [FrameAnalysis(0, light, [Detection("person", 0.8, Box(0.85, 0.2, 1.0, 1.0))], [])]
    row = selftest.check_framing(run)[0]
    assert row.status == WARN and "nobody in the desk zone in any of 1 frames (frame 1: 0 of 1" in row.detail
    # a face looking at the camera outside the desk zone (a poster on the wall, unframed): every
    # scan would report extra_person; the technician hears it now. Framed all round, it is a
    # picture on the wall and the worker's row passes.
    poster = Face(Box(0.03, 0.1, 0.12, 0.24), 0.85, facing=0.9)
    run.analyses = [FrameAnalysis(0, light, [seat], [face, poster])]
    row = selftest.check_framing(run)[0]
    assert row.status == WARN and row.detail.startswith("somebody besides the worker close to the camera or facing it")
    assert "poster" in row.remedy
    run.analyses = [FrameAnalysis(0, light, [seat], [face, dataclasses.replace(poster, framed=True)])]
    assert selftest.check_framing(run)[0].status == PASS


def test_liveness_rows() -> None:
    """The worker's face taken for a picture (a door frame round the head, a noisy sensor)
    is a WARN with what to do, before any scan accuses them."""
    import dataclasses

    from deskwatch.config import load_config_text
    from deskwatch.domain import Box, Face, FrameAnalysis, LightReading

    cfg = load_config_text("device: {id: d, site: s, worker_id: w}\n")
    light = LightReading(120.0, 50.0, 0.02, 8.0, False, False)
    live = Face(Box(0.4, 0.25, 0.55, 0.45), 0.9, live=True)
    picture = dataclasses.replace(live, live=False, spoof_cues="moire 1.62, straight edges on 4 side(s) of the face")
    small = dataclasses.replace(live, live=None)  # under min_face_px: not judged
    run = SelftestRun(cfg)
    assert selftest.check_liveness(run)[0].status == WARN  # no analysed frame
    run.analyses = [FrameAnalysis(0, light, [], []), FrameAnalysis(1, light, [], [live])]
    row = selftest.check_liveness(run)[0]
    assert row.status == PASS and row.detail == "1 face(s) in 1 of 2 frames judged live"
    run.analyses = [FrameAnalysis(0, light, [], [live]), FrameAnalysis(1, light, [], [picture])]
    row = selftest.check_liveness(run)[0]
    assert row.status == WARN and row.detail.startswith(
        "a face in frame 2 was taken for a picture of a face (moire 1.62"
    )
    assert "door, window or picture frame" in row.remedy
    run.analyses = [FrameAnalysis(0, light, [], [small])]
    row = selftest.check_liveness(run)[0]
    assert row.status == WARN and row.detail.startswith("no face of at least 60 px in any of 1 frames")
    off = SelftestRun(
        load_config_text("device: {id: d, site: s, worker_id: w}\nvision: {liveness: {enabled: false}}\n")
    )
    assert selftest.check_liveness(off)[0].status == PASS


@pytest.mark.broker
@pytest.mark.skipif(not MODELS_READY, reason="models/ not built")
def test_a_burst_that_starts_on_an_empty_desk_and_the_models_the_daemon_loads(
    tmp_path: Path, broker: Broker, pki: Pki, capsys: Any
) -> None:
    """The replay burst is: empty desk, then the worker sits down. Framing is judged on every
    frame; the model rows name what the daemon's own vision stage loads (with the default
    config: NanoDet int8 on LiteRT, BlazeFace *full* range, the phone stage's pose model and
    CenterNet, and the face mesh and embedder of the TFLite identity backend)."""
    burst = tmp_path / "burst"
    burst.mkdir()
    for name, photo in (
        ("1-empty.jpg", "empty_04.jpg"),
        ("2-worker.jpg", "single_01.jpg"),
        ("3-worker.jpg", "single_01.jpg"),
    ):
        (burst / name).write_bytes((PHOTOS / photo).read_bytes())
    cfg = write_config(tmp_path, broker, pki, photo="placeholder")
    cfg.write_text(cfg.read_text().replace(str(PHOTOS / "placeholder"), str(burst)))
    code = main(["selftest", "--config", str(cfg), "--skip", "clock", *AS_ME])
    out, _err = capsys.readouterr()
    print(out)
    lines = out.splitlines()
    assert lines[0].startswith("deskwatch selftest  20") and lines[0].endswith(" UTC")
    assert lines[1].startswith("device acme-support/desk-0042 (worker w-1187)  serial ")
    assert lines[2].startswith("deskwatch ") and " host " in lines[2] and " ip " in lines[2]
    assert (
        lines[3].startswith(f"checked as {AS_ME[1]} (uid {os.geteuid()}; groups ") and "the daemon's user" in lines[3]
    )
    table = {line.split()[1]: line for line in lines if line.startswith("model ")}
    from deskwatch.app import build_vision
    from deskwatch.config import load_config

    vision = build_vision(load_config(cfg))
    try:
        loaded = set(vision.model_hashes())
    finally:
        vision.close()
    assert {"nanodet_g416_int8.tflite", "face_detection_full_range.tflite"} <= loaded  # not short range
    assert {"face_landmark.tflite", "face_embedder_dlib_resnet.tflite"} <= loaded  # identity: tflite backend
    assert {
        "centernet_mb3_384_person_phone_food.tflite",
        "pose_landmark_full_pruned.tflite",
    } <= loaded  # the phone stage
    assert not loaded & {"nanodet_g416_fp32.tflite", "face_detection_short_range.tflite"}
    for file, line in table.items():
        assert ("in use" in line and "not in use" not in line) == (file in loaded), line
    framing = next(line for line in lines if line.startswith("framing"))
    assert "PASS" in framing and "frame 1: nobody" in framing and "in 2 of 3 frames" in framing, framing
    liveness = next(line for line in lines if line.startswith("liveness"))
    assert "PASS" in liveness and "judged live" in liveness, liveness  # single_01's worker, a live face
    assert code == 0 or "FAIL" in out


# -- `sudo deskwatch selftest`: the daemon's rights, not root's ------------------------------------
ONLY_FILES = ["--skip", "clock", "--skip", "camera", "--skip", "light", "--skip", "models"]
ONLY_FILES += ["--skip", "framing", "--skip", "liveness"]  # left: disk, permissions, broker


def appliance_files(user: ServiceUser, pki: Pki, port: int) -> Path:
    """/etc/deskwatch and /var/lib/deskwatch as the image lays them out (tmpfiles.d, provision):
    the directory 0750 root:deskwatch, config.yaml 0640 root:deskwatch, the certificates 0644,
    the key 0600 deskwatch, the state directory 0700 deskwatch."""
    etc = user.base / "etc"
    etc.mkdir(mode=0o750)
    os.chown(etc, 0, user.gid)
    crt, key = pki.client("acme-support/desk-0042")
    for src, name, mode, owner in (
        (pki.ca_crt, "ca.crt", 0o644, 0),
        (crt, "device.crt", 0o644, 0),
        (key, "device.key", 0o600, user.uid),
    ):
        shutil.copy(src, etc / name)
        os.chmod(etc / name, mode)
        os.chown(etc / name, owner, user.gid)
    state = user.base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, user.uid, user.gid)
    cfg = etc / "config.yaml"
    cfg.write_text(
        f"""device: {{id: desk-0042, site: acme-support, worker_id: w-1187}}
state_dir: {state}
camera: {{backend: replay, source: {PHOTOS / "single_04.jpg"}}}
mqtt:
  host: 127.0.0.1
  port: {port}
  protocol: "5"
  tls: {{ca_file: {etc / "ca.crt"}, cert_file: {etc / "device.crt"}, key_file: {etc / "device.key"}}}
"""
    )
    cfg.chmod(0o640)
    os.chown(cfg, 0, user.gid)
    return cfg


@pytest.mark.broker
@pytest.mark.parametrize("root_only", ["nothing", "config", "certificate"])
def test_sudo_selftest_checks_with_the_daemons_rights_not_roots(
    root_only: str, deskwatch_user: ServiceUser, pki: Pki, broker: Broker, capsys: Any
) -> None:
    """`sudo deskwatch selftest` (the README's Pi section) runs the checks as the daemon's user
    with the groups its unit gives it: a config or a certificate only root can read (written
    with a 077 umask, `install -m 600`) is a failure, as it is for the daemon, not a PASS."""
    import paho.mqtt.client  # noqa: F401  the child, as nobody, cannot read this interpreter's library

    cfg = appliance_files(deskwatch_user, pki, broker.port)
    if root_only == "config":
        os.chown(cfg, 0, 0)
        cfg.chmod(0o600)
    if root_only == "certificate":
        (cfg.parent / "device.crt").chmod(0o600)
    code = main(["selftest", "--config", str(cfg), *ONLY_FILES])
    out, err = capsys.readouterr()
    assert [argv[3:5] for argv in deskwatch_user.children] == [["selftest", "--config"]], "the checks ran as root"
    assert grp.getgrnam("video").gr_gid in deskwatch_user.child_groups[0]  # SupplementaryGroups=video: the camera
    assert "running the checks as deskwatch (uid 65534; groups" in err
    if root_only != "nothing":  # the daemon would exit 78 and never be restarted
        assert code == 78, out + err
        assert "the daemon's user deskwatch cannot load" in err and "Traceback" not in err
        if root_only == "config":
            assert f"{cfg}: (file): cannot read the config file: [Errno 13] Permission denied" in err
        else:
            assert f"mqtt.tls.cert_file = '{cfg.parent / 'device.crt'}': file is not readable by this user" in err
        return
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[3].startswith("checked as deskwatch (uid 65534; groups ") and lines[3].endswith(", the daemon's user")
    rows = {line.split()[0]: line for line in lines[5:] if line and not line.startswith(("-", " "))}
    assert "PASS" in rows["permissions"] and "PASS" in rows["broker"], out


def test_the_permissions_row_judges_the_files_for_the_daemons_user(deskwatch_user: ServiceUser, pki: Pki) -> None:
    """Whoever runs the check (here root, in-process): the config, the certificates, the key
    and the directories above them are judged for the daemon's uid and groups."""
    from deskwatch.config import load_config

    cfg = appliance_files(deskwatch_user, pki, 8883)
    etc = cfg.parent

    def row() -> CheckResult:
        return selftest.check_permissions(SelftestRun(load_config(cfg), str(cfg)))[0]

    os.chown(cfg, 0, 0)
    cfg.chmod(0o600)  # root's alone
    (etc / "ca.crt").chmod(0o600)
    found = row()
    assert found.status == FAIL, found
    text = found.detail + "; " + found.remedy
    assert f"deskwatch cannot read {cfg} (mode 0600, owner root:root) (config file)" in text
    assert f"run: chown root:nogroup {cfg} && chmod 640 {cfg}" in text
    assert f"deskwatch cannot read {etc / 'ca.crt'}" in text and "(mqtt.tls.ca_file)" in text
    cfg.chmod(0o640)
    os.chown(cfg, 0, deskwatch_user.gid)
    (etc / "ca.crt").chmod(0o644)
    assert row().status == PASS, row()
    assert "the daemon's user deskwatch can open what it needs" in row().detail
    os.chown(etc, 0, 0)  # /etc/deskwatch 0750 root:root: nothing inside can be reached
    text = row().detail + row().remedy
    assert f"deskwatch cannot enter {etc} (mode 0750, owner root:root)" in text
    assert f"chgrp nogroup {etc} && chmod 750 {etc}" in text


def test_sudo_selftest_says_what_it_cannot_do_as_the_daemons_user(
    deskwatch_user: ServiceUser, pki: Pki, capsys: Any
) -> None:
    """A snapshot folder the daemon's user may not write, or no such user: said before any
    camera is opened, never a run as root."""
    cfg = appliance_files(deskwatch_user, pki, 8883)
    private = deskwatch_user.base / "root-only"
    private.mkdir(mode=0o700)
    assert main(["selftest", "--config", str(cfg), "--snapshot", str(private / "aim.jpg")]) == 2
    err = capsys.readouterr().err
    assert f"no snapshot can be written to {private / 'aim.jpg'}: the checks run as deskwatch" in err
    assert f"deskwatch cannot write into {private} (mode 0700, owner root:root)" in err and "/tmp/aim.jpg" in err
    assert main(["selftest", "--config", str(cfg), "--service-user", "no-such-user-here"]) == 1
    assert "there is no user 'no-such-user-here'" in capsys.readouterr().err
    assert deskwatch_user.children == []


# -- root's files in the state directory ----------------------------------------------------------
def as_user(user: ServiceUser, fn: Any) -> Any:
    """``fn()`` with the service user's effective ids (and back to root's)."""
    os.setegid(user.gid)
    os.seteuid(user.uid)
    try:
        return fn()
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_a_selftest_as_root_leaves_the_daemon_an_audit_trail_it_can_use(deskwatch_user: ServiceUser) -> None:
    """The first camera burst of a `sudo deskwatch selftest` on a fresh state directory (after
    `provision --skip-selftest`) creates the audit trail: it must be the daemon's, or the daemon
    cannot open it (DatabaseUnavailable, exit 69, the unit gives up after 5 starts)."""
    from deskwatch.audit import AuditLog
    from deskwatch.config import load_config_text
    from deskwatch.domain import utcnow

    state = deskwatch_user.base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, deskwatch_user.uid, deskwatch_user.gid)  # StateDirectory=: the service user's
    cfg = load_config_text(f"device: {{id: d, site: s, worker_id: w}}\nstate_dir: {state}\n")
    held = AuditLog.for_state_dir(str(state))  # root holds it open: its -wal and -shm exist now
    try:
        selftest.record_camera_use(cfg, "selftest", {"frames": 3})
        owners = {p.name: p.stat().st_uid for p in state.iterdir()}
    finally:
        held.close()
    assert owners and set(owners.values()) == {deskwatch_user.uid}, owners

    def daemon_writes() -> None:
        audit = AuditLog.for_state_dir(str(state))
        try:
            audit.record_event("scan_test", utcnow(), {})
        finally:
            audit.close()

    as_user(deskwatch_user, daemon_writes)


def test_the_permissions_row_fails_on_root_files_in_the_state_directory(deskwatch_user: ServiceUser, pki: Pki) -> None:
    """A file in the state directory that is not the daemon's (root ran a deskwatch command
    there) is a FAIL naming it and the chown that gives the directory back."""
    from deskwatch.config import load_config

    cfg = appliance_files(deskwatch_user, pki, 8883)
    state = deskwatch_user.base / "state"
    for d in (state / "templates", state / "models", state / "models" / "current"):
        d.mkdir(mode=0o700)
        os.chown(d, deskwatch_user.uid, deskwatch_user.gid)
    link = state / "models" / "current" / "manifest.yaml"
    os.symlink(REPO / "models" / "manifest.yaml", link)  # a model job links the installed files (root's)
    os.lchown(link, deskwatch_user.uid, deskwatch_user.gid)
    run = SelftestRun(load_config(cfg), str(cfg))
    assert selftest.check_permissions(run)[0].status == PASS
    stray = state / "templates" / "w-1187.npz"
    stray.write_bytes(b"x")
    stray.chmod(0o600)  # root's, as `sudo deskwatch enroll` would have left it before it chowned
    row = selftest.check_permissions(run)[0]
    assert row.status == FAIL, row
    text = row.detail + "; " + row.remedy
    assert f"{stray} is owned by root, not by the daemon's user deskwatch" in text
    assert f"run: chown -R deskwatch: {state}" in text


# -- what the broker's ACL lets the device do ------------------------------------------------------
READS = "cmd/pause, cmd/resume, cmd/scan, activity, jobs/notify, reviews"
NOT_PROBED = "status, event, evidence/+, scan, health, cmd/result, jobs/progress"


@pytest.mark.broker
def test_the_broker_row_says_which_topics_it_checked(tmp_path: Path, broker: Broker, pki: Pki) -> None:
    """With the fleet ACL: PASS, naming what was checked (the publish on selftest, a subscription
    to every topic the daemon reads) and what was not (a probe there would reach consumers)."""
    from deskwatch.config import load_config

    row = selftest.check_broker(SelftestRun(load_config(write_config(tmp_path, broker, pki))))[0]
    assert row.status == PASS, row
    assert f"publish accepted on selftest; subscribe granted on {READS}" in row.detail
    assert f"not probed (a message there would reach consumers): {NOT_PROBED}" in row.detail


@pytest.mark.broker
def test_a_topic_the_device_may_not_read_is_a_broker_fail(
    tmp_path: Path, make_nats: Any, pki: Pki, capsys: Any
) -> None:
    """NATS (a supported engine, MQTT 3.1.1) refuses a subscription its authorization does not
    allow: an ACL without `reviews` (rendered before the topic existed) is a FAIL naming it,
    where the daemon would never hear how its findings were reviewed."""
    pki.client("acme-support/desk-0042")
    allowed = pki.acl("nats")
    reviews = '"deskwatch.v1.acme-support.desk-0042.reviews", '
    assert reviews in allowed
    nats = make_nats(pki=pki, authorization=allowed.replace(reviews, ""))
    cfg = write_config(tmp_path, nats, pki)  # type: ignore[arg-type]  # only its port is used
    cfg.write_text(cfg.read_text().replace('protocol: "5"', 'protocol: "3.1.1"'))
    code = main(["selftest", "--config", str(cfg), *ONLY_FILES, *AS_ME])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("broker"))
    assert code == 1 and "FAIL" in line, out
    assert (
        "refused this device the subscription to reviews (Unspecified error) under deskwatch/v1/acme-support/desk-0042/"
        in line
    )
    assert "-> the broker ACL must let this device read" in out


@pytest.mark.broker
def test_with_protocol_auto_a_broker_that_speaks_only_3_1_1_is_reached_as_the_daemon_reaches_it(
    tmp_path: Path, make_nats: Any, pki: Pki
) -> None:
    """The default `mqtt.protocol: auto` against NATS (MQTT 3.1.1 only, mutual TLS, the ACL
    deskwatch-ca renders): the daemon falls back to 3.1.1 and works, so the broker row does too
    and WARNs that 3.1.1 cannot report ACL denials, instead of a FAIL the daemon never sees."""
    from deskwatch.config import load_config

    pki.client("acme-support/desk-0042")
    nats = make_nats(pki=pki, authorization=pki.acl("nats"))
    cfg = write_config(tmp_path, nats, pki)  # type: ignore[arg-type]  # only its port is used
    cfg.write_text(cfg.read_text().replace('  protocol: "5"\n', ""))
    loaded = load_config(cfg)
    assert loaded.mqtt.protocol == "auto"
    row = selftest.check_broker(SelftestRun(loaded))[0]
    assert row.status == WARN, row
    assert row.detail.startswith(
        f"mutual TLS to 127.0.0.1:{nats.port}, MQTT 3.1.1 (broker 127.0.0.1:{nats.port} refused MQTT 5"
    )
    assert row.detail.endswith("; MQTT 3.1.1 cannot report ACL denials") and row.remedy == "prefer mqtt.protocol 5"


def test_with_protocol_auto_a_broker_that_drops_an_mqtt5_connect_is_tried_with_3_1_1(tmp_path: Path) -> None:
    """Some 3.1.1-only brokers close the socket on an MQTT 5 CONNECT without a word: the probe
    tries 3.1.1 next, as the daemon does, and says the broker closed the connection (no wait
    for a CONNACK that never comes)."""
    import socket
    import threading
    import time

    from deskwatch.config import load_config_text

    server = socket.create_server(("127.0.0.1", 0))
    levels: list[int] = []

    def serve() -> None:
        for _ in range(2):
            conn, _addr = server.accept()
            with conn:
                packet = conn.recv(64)  # CONNECT: fixed header, then the protocol name "MQTT" and its level
                levels.append(packet[packet.index(b"MQTT") + 4])

    threading.Thread(target=serve, daemon=True).start()
    cfg = load_config_text(
        f"device: {{id: desk-0042, site: acme-support, worker_id: w-1187}}\nstate_dir: {tmp_path}\n"
        f"mqtt: {{host: 127.0.0.1, port: {server.getsockname()[1]}, tls: {{enabled: false}}}}\n"
    )
    t0 = time.monotonic()
    row = selftest.check_broker(SelftestRun(cfg), timeout=10)[0]
    server.close()
    assert time.monotonic() - t0 < 5 and levels == [5, 4], levels  # MQTT 5, then 3.1.1
    assert row.status == FAIL and "closed the connection before accepting it" in row.detail, row


@pytest.mark.skipif(not MODELS_READY, reason="models/ not built")
def test_the_models_remedy_names_what_to_do_where_the_bad_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged file in the model job's directory (<state_dir>/models/current): remove that
    directory or send the job again. A damaged installed model: reinstall the software the way
    the image does it. Never a command that does not exist."""
    import shutil as sh

    from deskwatch.config import load_config_text

    state = tmp_path / "state"
    current = state / "models" / "current"
    current.mkdir(parents=True)
    models = REPO / "models"
    sh.copy(models / "manifest.yaml", current / "manifest.yaml")
    for f in models.iterdir():
        if f.suffix in (".tflite", ".txt") and f.name != "face_detection_full_range.tflite":
            (current / f.name).symlink_to(f)
    broken = current / "face_detection_full_range.tflite"
    broken.write_bytes((models / broken.name).read_bytes()[:1000])  # a bad write
    cfg = load_config_text(f"device: {{id: d, site: s, worker_id: w}}\nstate_dir: {state}\n")
    row = selftest.check_models(SelftestRun(cfg))[0]
    assert row.status == FAIL and str(broken) in row.detail, row
    assert row.remedy.startswith(f"it is the last model job's copy: remove {current}"), row.remedy
    assert "send the model job again" in row.remedy and "deskwatch-models" not in row.detail + row.remedy

    installed = tmp_path / "installed"  # the package's own models, one of them damaged
    sh.copytree(models, installed, ignore=sh.ignore_patterns("*.py", "__pycache__"))
    (installed / broken.name).write_bytes(b"\0" * 1000)
    monkeypatch.setenv("DESKWATCH_MODELS_DIR", str(installed))
    sh.rmtree(current)
    row = selftest.check_models(SelftestRun(cfg))[0]
    assert row.status == FAIL and str(installed / broken.name) in row.detail, row
    assert "reinstall" in row.remedy and "sudo deskwatch update install BUNDLE" in row.remedy, row.remedy
    assert "deskwatch-models" not in row.detail + row.remedy


def test_the_light_row_warns_of_a_lamp_in_an_unlit_room(tmp_path: Path) -> None:
    """A bright lamp in a corner keeps the mean brightness at 48 while 81 % of the picture is
    dark: the technician aiming the camera is told, since a frame like that with nobody seen in
    it counts as too dark to check (vision.light.nobody_dark_fraction)."""
    from datetime import UTC, datetime

    import numpy as np

    from deskwatch.config import load_config_text
    from deskwatch.domain import Frame

    cfg = load_config_text(f"device: {{id: d, site: s, worker_id: w}}\nstate_dir: {tmp_path}\n")
    rng = np.random.default_rng(0)
    room = rng.normal(12, 4, (480, 640, 3)).clip(0, 255).astype(np.uint8)  # an unlit room
    room[:, 160:200] = 60  # a door frame: structure, not a blank wall
    room[:170, :270] = 235  # the lamp
    run = SelftestRun(cfg, frames=[Frame(room, datetime.now(UTC), 0)])
    (light,) = selftest.check_light(run)
    assert light.status == WARN and "most of the picture is dark" in light.detail, light
    assert "too dark to check" in light.remedy
    run = SelftestRun(cfg, frames=[Frame(np.full((480, 640, 3), 120, np.uint8) + room // 4, datetime.now(UTC), 0)])
    assert selftest.check_light(run)[0].status == PASS


def test_the_light_row_warns_of_a_misted_lens(tmp_path: Path) -> None:
    """A photo of a desk through a misted lens keeps its brightness and contrast: the light row
    passed it. The technician is now told to clean the lens or check the focus."""
    from datetime import UTC, datetime

    from deskwatch.config import load_config_text
    from deskwatch.domain import Frame
    from tests.appliance.test_light import blurred, load

    cfg = load_config_text(f"device: {{id: d, site: s, worker_id: w}}\nstate_dir: {tmp_path}\n")
    desk = load(PHOTOS / "single_01.jpg")
    (light,) = selftest.check_light(SelftestRun(cfg, frames=[Frame(blurred(desk, 20), datetime.now(UTC), 0)]))
    assert light.status == WARN and "blurred" in light.detail and "clean the lens" in light.remedy, light
    assert selftest.check_light(SelftestRun(cfg, frames=[Frame(desk, datetime.now(UTC), 0)]))[0].status == PASS


def test_orientation_rows() -> None:
    from deskwatch.config import load_config_text

    cfg = load_config_text("device: {id: d, site: s, worker_id: w}\ncamera: {rotation: 90}\n")
    run = SelftestRun(cfg, face_turns={0: 0.0, 90: 0.91, 180: 0.0, 270: 0.0})
    row = selftest.check_orientation(run)[0]
    assert row.status == WARN and "turned 90° clockwise" in row.detail
    assert "set camera.rotation: 180" in row.remedy  # on top of the 90 already configured
    run.face_turns = {0: 0.93, 90: 0.0, 180: 0.6, 270: 0.0}
    assert selftest.check_orientation(run)[0].status == PASS
    run.face_turns = {0: 0.0, 90: 0.0, 180: 0.0, 270: 0.0}
    row = selftest.check_orientation(run)[0]
    assert row.status == WARN and row.detail.startswith("not checked: no face in view")
    assert selftest.check_orientation(SelftestRun(cfg))[0].detail == "not checked (no analysed frame)"


@pytest.mark.skipif(not MODELS_READY, reason="models/ not built")
@pytest.mark.parametrize("photo", ["single_01.jpg", "face_03.jpg"])
def test_the_selftest_tells_an_upside_down_camera_and_the_rotation_that_rights_it(tmp_path: Path, photo: str) -> None:
    """A camera module mounted upside down: the orientation row names camera.rotation: 180;
    with it set, the same camera's picture is upright and the row passes."""
    from PIL import Image

    from deskwatch.config import load_config_text

    mounted = tmp_path / "mounted.png"
    Image.open(PHOTOS / photo).rotate(180).save(mounted)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    checks = {n: selftest.CHECKS[n] for n in ("camera", "models", "orientation")}
    rows = {}
    for rotation in (0, 180):
        cfg = load_config_text(
            f"device: {{id: d, site: s, worker_id: w}}\nstate_dir: {state}\n"
            f"camera: {{backend: replay, source: {mounted}, rotation: {rotation}, burst_frames: 3}}\n"
        )
        rows[rotation] = run_selftest(cfg, checks=checks).results[-1]
    assert rows[0].name == "orientation" and rows[0].status == WARN, rows[0]
    assert "turned 180° clockwise" in rows[0].detail and "set camera.rotation: 180" in rows[0].remedy
    assert rows[180].status == PASS and rows[180].detail.startswith("upright"), rows[180]


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="a Python the daemon's user may run")
def test_the_daemons_users_child_gets_no_terminal_and_no_python_of_its_home(capfd: Any) -> None:
    """`sudo deskwatch selftest` (and models verify) run a child as the daemon's user: with
    root's terminal as its stderr and controlling terminal, and the per-user site directory in
    its home (the state directory, that user's; the image's venv shares the system's
    site-packages), a usercustomize.py left there ran in it and pushed keystrokes into root's
    shell (TIOCSTI). The child now starts in a session of its own, reads /dev/null, writes its
    errors through a pipe (control characters written out) and loads nothing from ~/.local."""
    if os.geteuid() != 0:
        pytest.skip("playing another user needs root")
    from deskwatch.technician.service_user import run_as_user

    probe = (
        "import os, sys, stat\n"
        "print(os.getsid(0), sys.flags.no_user_site, stat.S_ISFIFO(os.fstat(2).st_mode), os.path.realpath('/proc/self/fd/0'))\n"
        "sys.stderr.write('progress \\x1b]0;TITLE\\x07 done\\n')\n"
    )
    done = run_as_user("nobody", ["/usr/bin/python3", "-c", probe], timeout=60)
    assert done.returncode == 0
    sid, no_user_site, stderr_pipe, stdin = done.stdout.split()
    assert int(sid) != os.getsid(0), "the child shares root's session (and its terminal)"
    assert no_user_site == "1", "the child loads Python from the daemon's user's home"
    assert stderr_pipe == "True" and stdin == "/dev/null"
    err = capfd.readouterr().err
    assert "progress \\x1b]0;TITLE\\x07 done" in err and "\x1b" not in err
