"""Profiles as code, per-rule overrides, and the plain-language notice."""

from __future__ import annotations

import json

import pytest

from deskwatch.cli import main
from deskwatch.config import ConfigError
from deskwatch.domain import Box
from deskwatch.policy.engine import Policy, PolicyContext
from deskwatch.policy.profiles import (
    PROFILES,
    RULES,
    effective_rules,
    identity_allowed,
)
from deskwatch.technician.explain import TemplateStatus, evidence_allowed, explain, template_status
from tests.support.policy import T0, burst, face, make_config, obj, person

UK = "policy: {profile: uk}\nschedule: {mode: fixed, fixed_times: ['10:30', '15:00']}\n"
MINIMAL = "policy: {profile: minimal}\n"


def test_full_runs_every_rule_with_identity_and_images():
    cfg = make_config()
    assert effective_rules(cfg.policy) == list(RULES)
    assert identity_allowed(cfg.policy) and PROFILES["full"].random_scans
    assert evidence_allowed(cfg, "phone_use") and not evidence_allowed(cfg, "idle_input")


def test_uk_checks_devices_only_without_identity_or_random_scans():
    cfg = make_config(UK)
    assert effective_rules(cfg.policy) == ["phone_use", "low_light", "camera_obstructed"]
    assert not identity_allowed(cfg.policy)
    assert not PROFILES["uk"].random_scans


def test_uk_never_runs_an_identity_check_even_when_vision_reports_one():
    cfg = make_config(UK + "policy: {profile: uk, rules: {unrecognized_person: {consecutive_checks: 1}}}\n")
    p = Policy(cfg.policy)
    stranger = burst(5, [person()], [face(identity="unknown")])
    for _ in range(3):
        out = p.evaluate(stranger, PolicyContext(T0, "schedule"))
        assert out.findings == []
        check = next(c for c in out.checks if c.rule == "unrecognized_person")
        assert check.outcome == "skipped" and "uk" in check.reason


def test_uk_refuses_an_identity_override_and_random_scans():
    with pytest.raises(ConfigError) as err:
        make_config("policy: {profile: uk, rules: {unrecognized_person: {enabled: true}}}\nschedule: {mode: random}\n")
    text = str(err.value)
    assert "rules.unrecognized_person.enabled" in text and "schedule.mode" in text


def test_minimal_is_presence_and_light_and_no_images():
    cfg = make_config(MINIMAL)
    assert effective_rules(cfg.policy) == ["away_from_desk", "low_light", "camera_obstructed"]
    assert not identity_allowed(cfg.policy)
    assert not any(evidence_allowed(cfg, r) for r in RULES)
    phone = obj("cell phone", Box(0.56, 0.25, 0.63, 0.4), behaviour="at_ear")
    out = Policy(cfg.policy).evaluate(burst(5, [person(), phone], [face()]), PolicyContext(T0, "schedule"))
    assert out.findings == []


def test_overrides_switch_rules_on_and_off_and_tune_thresholds():
    cfg = make_config("policy: {rules: {eating: {enabled: false}, idle_input: {idle_seconds: 120}}}")
    assert "eating" not in effective_rules(cfg.policy)
    assert cfg.policy.rules.idle_input.idle_seconds == 120
    cfg = make_config("policy: {profile: minimal, rules: {phone_use: {enabled: true}}}")
    assert "phone_use" in effective_rules(cfg.policy)
    assert not evidence_allowed(cfg, "phone_use")  # minimal still sends no image


def test_disabled_rule_is_reported_as_skipped_with_the_reason():
    cfg = make_config("policy: {rules: {eating: {enabled: false}}}")
    cup = obj("cup", Box(0.47, 0.38, 0.56, 0.5))
    out = Policy(cfg.policy).evaluate(burst(5, [person(), cup], [face()]), PolicyContext(T0, "schedule"))
    assert out.findings == []
    assert next(c for c in out.checks if c.rule == "eating").reason == "off in the configuration"


def test_notice_says_what_is_captured_checked_sent_and_kept():
    text = explain(make_config())
    for heading in ("CAPTURES", "CHECKS", "SENDS", "KEEPS"):
        assert heading in text
    assert "No video and no sound" in text
    assert "20 days" in text and "320x240" in text and "blurred" in text
    assert "face template" in text


def test_notice_says_the_camera_is_on_for_its_warm_up_too():
    """The camera stays on about camera.warmup_seconds longer than the pictures take (a webcam
    adjusting to the light): the worker is told, and that those frames are thrown away."""
    text = explain(make_config())
    assert "5 still pictures over 2 s" in text and "about 1 s before them" in text and "thrown away unseen" in text
    assert "before them" not in explain(make_config("camera: {warmup_seconds: 0}"))


def test_notice_says_a_technician_may_switch_the_camera_on_at_any_hour():
    """The notice said "Never outside [working hours]" and that the camera is switched on only
    for a check; a technician's selftest, aim or enrolment switches it on at any hour, and the
    log the notice points to shows it ("technician's selftest used the camera")."""
    text = explain(make_config())
    assert "- Checks only during working hours:" in text and "- Only during working hours" not in text
    assert "a technician at the device may switch the camera on at any hour" in text
    assert "'deskwatch selftest'" in text and "'deskwatch aim'" in text and "'deskwatch enroll'" in text
    assert "Each use is recorded in the log ('deskwatch history')" in text


def test_notice_says_whether_a_face_template_exists(tmp_path):
    cfg = make_config(state_dir=str(tmp_path))
    missing = explain(cfg)
    assert "no face template of worker" in missing and "No face template: none has been enrolled" in missing
    assert "compared with worker" not in missing
    (tmp_path / "templates").mkdir(mode=0o700)
    (tmp_path / "templates" / f"{cfg.device.worker_id}.npz").write_bytes(b"x")
    enrolled = explain(cfg)
    assert f"compared with worker {cfg.device.worker_id}'s face template" in enrolled
    assert "face template, stored 20" in enrolled and "none has been enrolled" not in enrolled
    assert template_status(cfg).state == "enrolled"
    unreadable = explain(cfg, TemplateStatus("unreadable"))
    assert "run with sudo" in unreadable and "if one was enrolled" in unreadable
    # no identity check under uk, but the template enrolled before is still there
    assert template_status(make_config(UK, state_dir=str(tmp_path))).state == "enrolled"


def test_notice_for_uk_and_minimal():
    uk = explain(make_config(UK))
    assert "no identity check" in uk and "fixed times only: 10:30, 15:00" in uk
    assert "enrolled worker's face template" not in uk
    minimal = explain(make_config(MINIMAL + "evidence: {retention_days: 7}\n"))
    assert "no image ever leaves the device" in minimal
    assert "7 days" in minimal


def test_policy_show_command(write_config, capsys):
    path = str(write_config("policy: {profile: uk}\nschedule: {mode: fixed, fixed_times: ['11:00']}"))
    assert main(["policy", "show", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "Profile: uk" in out and "phone_use" in out
    assert main(["policy", "show", "--json", "--config", path]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["identity_check"] is False and data["random_scans"] is False
    assert data["face_template"] == {"state": "missing", "enrolled_at": None}
    enabled = [r["rule"] for r in data["rules"] if r["enabled"]]
    assert enabled == ["phone_use", "low_light", "camera_obstructed"]


def test_policy_show_with_a_bad_config_exits_78(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("device: {id: d, site: s, worker_id: w}\npolicy: {profile: usa}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["policy", "show", "--config", str(bad)])
    assert exit_.value.code == 78
    assert "policy.profile" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "limit"),
    [
        ("", 3),
        (MINIMAL, 3),
        ("schedule: {remote_scans_per_hour: 1}\n", 1),
        (UK, 0),
        ("schedule: {remote_scans_per_hour: 0}\n", 0),
    ],
    ids=["full", "minimal", "full-1", "uk", "full-0"],
)
def test_notice_tells_how_many_checks_may_be_requested_as_the_daemon_admits_them(extra, limit, tmp_path):
    """Besides its own schedule, the device takes checks requested from the central side
    (cmd/scan) where the profile allows them: the notice says how many an hour, and when
    never, as many as the daemon accepts in an hour of the shift - or that there are none."""
    from datetime import UTC, datetime

    from deskwatch.app import Daemon, Parts
    from deskwatch.camera.fake import FakeCamera
    from deskwatch_contract.intake import CommandRejected
    from tests.support.common import FakeClock
    from tests.support.fakes import RecordingDelivery, ScriptedVision, SilentNotifier

    cfg = make_config(extra, state_dir=str(tmp_path))
    monday = FakeClock(datetime(2026, 11, 30, 10, 0, tzinfo=UTC))  # inside the default shift
    parts = Parts(camera=FakeCamera(), vision=ScriptedVision(), delivery=RecordingDelivery(), notifier=SilentNotifier())
    daemon = Daemon(cfg, clock=monday, parts=parts)
    accepted = 0
    for n in range(6):
        try:
            daemon.handle_command("scan", {"request_id": f"r{n}", "reason": "supervisor"})
            accepted += 1
        except CommandRejected:
            pass
    assert accepted == limit
    text = explain(cfg)
    (line,) = [line for line in text.splitlines() if "on request" in line]
    if limit:
        assert f"at most {limit} an hour" in line and "working hours" in line and "paused" in line
        assert "recorded" in line and "deskwatch history" in line
    else:
        assert line.startswith("- No checks on request")


@pytest.mark.parametrize(
    ("extra", "random"),
    [
        ("schedule: {mode: random}\n", True),
        ("schedule: {mode: fixed, fixed_times: ['10:30', '15:00']}\n", False),
        ("schedule: {mode: interval, interval_seconds: 600}\n", False),
        (MINIMAL + "schedule: {mode: random}\n", True),
        (UK, False),
    ],
)
def test_policy_json_says_random_scans_only_where_the_schedule_makes_them(extra, random, write_config, capsys):
    path = str(write_config(extra))
    assert main(["policy", "show", "--json", "--config", path]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["random_scans"] is random
    assert data["on_demand_scans_per_hour"] == (0 if "uk" in extra else 3)


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (UK, "the uk profile"),
        (MINIMAL, "the minimal profile"),
        ("policy: {rules: {unrecognized_person: {enabled: false}}}\n", "the configuration"),
    ],
    ids=["uk", "minimal", "identity-off"],
)
def test_notice_lists_a_face_template_still_stored_where_no_identity_check_is_made(extra, why, tmp_path, capsys):
    """A worker enrolled under full keeps their face template when the device moves to a
    profile (or a config) without the identity check: the notice must still say it is kept,
    that it is not used, and how it is deleted; once deleted, it says none is stored."""
    import numpy as np

    from deskwatch.vision.identity import save_templates, template_path

    save_templates(tmp_path, "w-1", np.zeros((3, 128), np.float32), backend="tflite", model_sha256="0" * 64)
    cfg = make_config(extra, state_dir=str(tmp_path))
    assert not identity_allowed(cfg.policy)
    assert template_status(cfg).state == "enrolled"
    text = explain(cfg)
    keeps = text[text.index("WHAT IT KEEPS") :]
    (line,) = [line for line in keeps.splitlines() if "face template" in line]
    path = str(template_path(tmp_path, "w-1"))
    assert "w-1" in line and "not used" in line and why in line and path in line and "never sent" in line
    (identity,) = [line for line in text.splitlines() if line.startswith("- Identity:")]
    assert "no identity check" in identity and "still stored" in identity
    template_path(tmp_path, "w-1").unlink()
    gone = explain(cfg)
    assert "still stored" not in gone and "No face template is stored" in gone


@pytest.mark.parametrize(
    ("extra", "also", "without"),
    [
        (
            UK
            + "policy: {profile: uk, rules: {away_from_desk: {enabled: true}, extra_person: {enabled: true}, eating: {enabled: true}}}\n",
            ["away_from_desk", "extra_person", "eating"],
            [],
        ),
        ("policy: {rules: {eating: {enabled: false}, idle_input: {enabled: false}}}\n", [], ["eating", "idle_input"]),
        (
            MINIMAL + "policy: {profile: minimal, rules: {phone_use: {enabled: true}, low_light: {enabled: false}}}\n",
            ["phone_use"],
            ["low_light"],
        ),
        ("policy: {rules: {eating: {enabled: true}}}\n", [], []),  # on already: no override in effect
    ],
    ids=["uk-plus-three", "full-minus-two", "minimal-both", "no-op"],
)
def test_notice_says_which_rules_the_configuration_changed_from_the_profile(extra, also, without, capsys, write_config):
    """The config may switch on rules a profile leaves off (and off ones it runs); the
    profile line must not then claim what the profile alone would do ("uk - checks for
    unauthorised devices only" above away_from_desk, extra_person and eating ON)."""
    cfg = make_config(extra)
    on = [line.split()[0] for line in explain(cfg).splitlines() if line.startswith("  ") and " ON " in line]
    profile = PROFILES[cfg.policy.profile]
    (line,) = [line for line in explain(cfg).splitlines() if line.startswith("Profile:")]
    if also or without:
        assert line.startswith(f"Profile: {profile.name}, with overrides in this device's configuration:"), line
        for rule in also:
            assert rule in on and rule in line.split("(")[0]
        for rule in without:
            assert rule not in on and rule in line.split("(")[0]
        assert f"(the profile alone: {profile.summary})" in line
    else:
        assert line == f"Profile: {profile.name} - {profile.summary}."
    assert main(["policy", "show", "--json", "--config", str(write_config(extra))]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["profile_overrides"] == {"also": also, "without": without}


@pytest.mark.parametrize(("extra", "second"), [("", True), (UK, False)], ids=["full", "uk"])
def test_notice_says_who_a_picture_shows(extra, second):
    """A picture shows the worker; everyone else is blurred before it is made, but for a second
    person in the picture of an extra_person finding (where that rule runs) and a face held up
    on a screen or print in a presentation_attack one."""
    text = explain(make_config(extra))
    (line,) = [line for line in text.splitlines() if line.startswith("- With most findings, one small picture")]
    assert "everyone but the worker blurred beyond recognition before the picture is made" in line
    assert ("extra_person" in line) is second and ("presentation_attack" in line) is second
