"""Rules over synthetic FrameAnalysis bursts: each rule fires on what it should and
stays quiet on the near misses (a phone on the desk, a far-away passer-by, ...)."""

from __future__ import annotations

from datetime import timedelta

from deskwatch.domain import Box, Detection
from deskwatch.policy.engine import Policy, PolicyContext, PolicyOutcome
from tests.support.policy import (
    COVERED,
    DARK,
    T0,
    WORKER_FACE_BOX,
    burst,
    face,
    make_config,
    obj,
    person,
)


def run(analyses, *, extra: str = "", confirming: bool = False, policy: Policy | None = None, **ctx) -> PolicyOutcome:
    p = policy or Policy(make_config(extra).policy)
    return p.evaluate(analyses, PolicyContext(T0, "schedule", confirming=confirming, **ctx))


def types(out: PolicyOutcome) -> list[str]:
    return sorted(f.type for f in out.findings)


def check(out: PolicyOutcome, rule: str) -> str:
    return next(c.outcome for c in out.checks if c.rule == rule)


def reason(out: PolicyOutcome, rule: str) -> str:
    return next(c.reason for c in out.checks if c.rule == rule)


def test_worker_alone_is_clear_and_every_rule_reports_a_check():
    out = run(burst(5, [person()], [face(identity="worker")]))
    assert out.findings == []
    assert out.persons == 1 and out.bystanders == 0
    assert {c.rule for c in out.checks} == {
        "away_from_desk",
        "phone_use",
        "extra_person",
        "unrecognized_person",
        "presentation_attack",
        "eating",
        "idle_input",
        "low_light",
        "camera_obstructed",
        "pause_overrun",
    }
    assert out.confirm_after_seconds is None


def test_low_light_gates_every_other_rule():
    out = run(burst(5, light=DARK))  # dark and nobody detected: NOT away_from_desk
    assert types(out) == ["low_light"]
    assert out.confirm_after_seconds is None
    assert all(c.outcome == "skipped" for c in out.checks if c.rule not in ("low_light", "pause_overrun"))


def test_low_light_needs_persistence():
    analyses = burst(5, [person()], [face()])
    for a in analyses[:2]:
        a.light = DARK
    out = run(analyses)  # 2/5 dark < 60 %: checked on the 3 good frames
    assert types(out) == []
    assert check(out, "low_light") == "pass"


def test_camera_obstructed():
    out = run(burst(5, light=COVERED))
    assert types(out) == ["camera_obstructed"]
    f = out.findings[0]
    assert 0.9 <= f.confidence <= 1.0 and "detail" in f.detail


def test_camera_obstructed_needs_its_own_persistence():
    """The first frame before the exposure settled (dark) and the worker's top filling two frames
    as they reach past the camera (covered): 3 of 5 frames cannot be checked, but the camera was
    covered in only 2, under the 3 a finding needs. Calling that camera_obstructed accuses the
    worker of covering the camera; the burst is unchecked, with nothing to report."""
    worker = burst(5, [person()], [face(identity="worker")])
    worker[0].light = DARK
    worker[2].light = worker[3].light = COVERED
    out = run(worker)
    assert types(out) == []
    assert check(out, "camera_obstructed") == "skipped" and check(out, "low_light") == "skipped"
    assert all(c.outcome == "skipped" for c in out.checks if c.rule != "pause_overrun")
    reason = next(c.reason for c in out.checks if c.rule == "away_from_desk")
    assert "covered in 2/5" in reason and "too dark in 1/5" in reason, reason


def test_as_many_dark_as_covered_frames_is_low_light_not_an_accusation():
    # persistence 0.5 over 4 frames: 2 dark and 2 covered frames both persist; the tie goes to
    # the finding that accuses nobody
    frames = burst(2, light=DARK) + burst(2, light=COVERED)
    for i, a in enumerate(frames):
        a.frame_index = i
    out = run(frames, extra="policy: {persistence: 0.5}")
    assert types(out) == ["low_light"]
    assert check(out, "camera_obstructed") == "skipped"


def test_away_needs_a_confirming_burst():
    out = run(burst(5))
    assert out.findings == []
    assert check(out, "away_from_desk") == "pending"
    assert out.confirm_after_seconds == 20.0
    confirmed = run(burst(5), confirming=True)
    assert types(confirmed) == ["away_from_desk"]
    assert confirmed.confirm_after_seconds is None


def test_away_not_reported_when_the_confirming_burst_finds_the_worker():
    out = run(burst(5, [person()]), confirming=True)
    assert out.findings == [] and check(out, "away_from_desk") == "pass"


def test_away_ignores_people_outside_the_desk_zone():
    at_door = person(Box(0.85, 0.1, 0.99, 0.6))
    out = run(burst(5, [at_door]), extra="policy: {desk_zone: [0.1, 0.0, 0.8, 1.0]}")
    assert check(out, "away_from_desk") == "pending"


def test_away_tolerates_a_missed_detection_in_one_frame():
    out = run(burst(5, [person()], only=[0, 1, 2]))  # 2/5 empty < 60 %
    assert check(out, "away_from_desk") == "pass"


EAR_BOX = Box(0.56, 0.25, 0.63, 0.4)  # beside the worker's face


def test_phone_at_the_ear_is_phone_use_and_says_so():
    phone = obj("cell phone", EAR_BOX, 0.6, "at_ear")
    out = run(burst(5, [person(), phone], [face()]))
    assert types(out) == ["phone_use"]
    f = out.findings[0]
    assert f.detections[0] == phone and any(d.label == "person" for d in f.detections)
    assert f.detail == "a phone at the ear in 5 of 5 frames"
    assert 0.3 < f.confidence <= 0.6
    assert f.evidence_allowed


def test_phone_in_hand_at_chest_height_is_phone_use():
    phone = obj("cell phone", Box(0.45, 0.6, 0.55, 0.7), behaviour="in_hand")
    out = run(burst(5, [person(), phone]))  # no face found (looking down)
    assert types(out) == ["phone_use"]
    assert out.findings[0].detail == "a phone in hand in 5 of 5 frames"


def test_a_phone_near_a_face_without_a_body_is_reached_alike_in_every_direction():
    """A worker seen by the face only (no person box): the phone belongs to them within
    near_face_factor (2) face sizes, counted in pixels. Boxes are fractions of the frame's width
    and height, so face heights both ways reached 1.78 times farther sideways than down in a
    1280x720 frame: a phone 3.4 face sizes to the side was theirs, one 2.1 below was not."""
    w, h = 1280, 720
    me = face(Box(0.5 - 36 / w, 0.3 - 36 / h, 0.5 + 36 / w, 0.3 + 36 / h))  # 72 x 72 px, square in pixels

    def phone_at(dx_px: float, dy_px: float) -> Detection:
        cx, cy = 0.5 + dx_px / w, 0.3 + dy_px / h
        return obj("cell phone", Box(cx - 10 / w, cy - 20 / h, cx + 10 / w, cy + 20 / h), 0.7, "in_hand")

    for (dx, dy), counted in {
        (243, 0): False,  # 3.4 face sizes to the side: it was the worker's
        (0, 151): False,  # 2.1 below
        (130, 0): True,  # 1.8 to the side
        (0, 130): True,  # 1.8 below
        (92, 92): True,  # 1.8 diagonally
    }.items():
        out = run(burst(5, [phone_at(dx, dy)], [me]))
        assert (types(out) == ["phone_use"]) is counted, (dx, dy)


def test_a_phone_the_phone_stage_did_not_confirm_is_never_phone_use():
    # a whole-frame "cell phone" guess at the ear (a hand at the temple, coins at the eyes):
    # without the phone stage's behaviour it is not a phone seen by both detectors
    guess = obj("cell phone", EAR_BOX, 0.9)
    out = run(burst(5, [person(), guess], [face()]))
    assert types(out) == [] and check(out, "phone_use") == "pass"


def test_phone_on_the_desk_counts_only_where_the_profile_says():
    on_desk = obj("cell phone", Box(0.05, 0.85, 0.15, 0.95), 0.8, "visible")
    frames = burst(5, [person(), on_desk], [face()])
    assert "phone_use" not in types(run(frames))  # full: at the ear or in the hand
    uk = "policy: {profile: uk}\nschedule: {mode: fixed, fixed_times: ['10:00']}"
    out = run(frames, extra=uk)
    assert types(out) == ["phone_use"] and out.findings[0].detail == "a phone on the desk in 5 of 5 frames"
    counted = "policy: {rules: {phone_use: {behaviours: [visible_on_desk]}}}"
    assert types(run(frames, extra=counted)) == ["phone_use"]
    outside = "policy: {desk_zone: [0.2, 0.0, 1.0, 1.0], rules: {phone_use: {behaviours: [visible_on_desk]}}}"
    assert "phone_use" not in types(run(frames, extra=outside))  # not in the desk zone


def test_profile_behaviours_can_be_narrowed():
    phone = obj("cell phone", Box(0.45, 0.6, 0.55, 0.7), behaviour="in_hand")
    calls_only = "policy: {rules: {phone_use: {behaviours: [at_ear]}}}"
    assert "phone_use" not in types(run(burst(5, [person(), phone]), extra=calls_only))


def test_unknown_phone_behaviour_in_the_config_is_an_error():
    import pytest

    from deskwatch_contract.configfile import ConfigError

    with pytest.raises(ConfigError, match="'on_lap' is not a phone behaviour"):
        make_config("policy: {rules: {phone_use: {behaviours: [at_ear, on_lap]}}}")


def test_an_eating_label_the_vision_stage_never_reports_is_an_error():
    """A bowl is never checked at a mouth: listing it would find nothing, silently."""
    import pytest

    from deskwatch_contract.configfile import ConfigError

    with pytest.raises(ConfigError, match="'bowl' is never seen at a mouth"):
        make_config("policy: {rules: {eating: {labels: [cup, bowl]}}}")
    make_config("policy: {rules: {eating: {labels: [cup, sandwich]}}}")


def test_a_bystanders_phone_is_not_the_workers_phone_use():
    far = person(Box(0.92, 0.55, 0.99, 0.8), 0.9)  # small, far away, no face: a bystander
    phone = obj("cell phone", Box(0.94, 0.67, 0.98, 0.73), 0.7, "in_hand")
    out = run(burst(5, [person(), far, phone], [face()]))
    assert "phone_use" not in types(out)


def test_detail_says_when_the_behaviour_changed_during_the_burst():
    at_ear = obj("cell phone", EAR_BOX, 0.6, "at_ear")
    in_hand = obj("cell phone", Box(0.45, 0.6, 0.55, 0.7), 0.6, "in_hand")
    frames = burst(5, [person(), at_ear], [face()], only=[0, 1, 2], otherwise=[person(), in_hand])
    out = run(frames)
    assert out.findings[0].detail == "a phone in 5 of 5 frames (at the ear in 3, in hand in 2)"


def test_phone_must_persist_across_the_burst():
    phone = obj("cell phone", EAR_BOX, behaviour="at_ear")
    out = run(burst(5, [person(), phone], [face()], only=[0, 1], otherwise=[person()]))
    assert "phone_use" not in types(out)
    out = run(burst(5, [person(), phone], [face()], only=[0, 1, 2], otherwise=[person()]))
    assert types(out) == ["phone_use"]


def test_low_score_phone_is_ignored_and_threshold_is_configurable():
    phone = obj("cell phone", EAR_BOX, 0.25, "at_ear")
    assert "phone_use" not in types(run(burst(5, [person(), phone], [face()])))
    tuned = "policy: {rules: {phone_use: {min_score: 0.2}}}"
    assert "phone_use" in types(run(burst(5, [person(), phone], [face()]), extra=tuned))


def test_second_person_close_to_the_camera_is_extra_person():
    second = person(Box(0.7, 0.2, 1.0, 1.0), 0.8)  # big box at the side
    out = run(burst(5, [person(), second], [face()]))
    assert types(out) == ["extra_person"]
    assert out.findings[0].detections == [second]
    assert out.persons == 2 and out.bystanders == 0


def test_a_weak_faceless_box_over_the_worker_is_neither_the_worker_nor_a_second_person():
    # as on eat_02 tilted and face_07 blurred, fitted into camera frames: a 0.40 box (a
    # shadow, an arm, the background) larger than the worker's own box and holding the
    # centre of the worker's face
    weak = person(Box(0.0, 0.02, 0.6, 1.0), 0.40)
    worker = person(Box(0.3, 0.03, 0.7, 1.0), 0.72)
    worker_face = face(Box(0.3, 0.28, 0.58, 0.9), facing=0.76)  # close: 62 % of the frame high
    out = run(burst(5, [weak, worker], [worker_face]))
    assert types(out) == [], out.findings
    # the same weak box beside two people certainly there changes nothing either
    second = person(Box(0.65, 0.2, 1.0, 1.0), 0.8)
    out = run(burst(5, [weak, worker, second], [worker_face]))
    assert types(out) == ["extra_person"]
    assert out.findings[0].detections == [second]


def test_far_person_looking_at_the_screen_is_extra_person():
    far = person(Box(0.8, 0.3, 0.9, 0.6), 0.7)
    far_face = face(Box(0.83, 0.31, 0.87, 0.38), facing=0.9)  # 7 % of the height, facing
    out = run(burst(5, [person(), far], [face(), far_face]))
    assert types(out) == ["extra_person"]


def test_a_face_framed_on_four_sides_beside_the_worker_is_a_picture_on_the_wall_not_a_second_person():
    # a poster or a framed photo behind the worker: the vision stage found straight edges close
    # round the face on all four sides (Face.framed); without them the same face is a second
    # person facing the screen
    from dataclasses import replace

    poster = face(Box(0.06, 0.08, 0.14, 0.2), facing=0.9)  # 12 % of the height, looking at the camera
    out = run(burst(5, [person()], [face(), poster]))
    assert types(out) == ["extra_person"]
    out = run(burst(5, [person()], [face(), replace(poster, framed=True)]))
    assert types(out) == [], out.findings
    assert out.persons == 2 and out.bystanders == 1  # counted, blurred in evidence like a bystander
    assert check(out, "presentation_attack") != "violation"  # hanging a photo is no trick
    # a weak box from the poster down to the frame's edge, larger than the worker's own
    # (face_07 with a framed print beside it, as a camera frame), does not make the poster the
    # worker and the worker the second person
    weak = person(Box(0.0, 0.03, 0.55, 1.0), 0.42)
    out = run(burst(5, [person(), weak], [face(), replace(poster, framed=True)]))
    assert types(out) == [], out.findings
    # two framed faces and no worker: still nobody besides the worker; the desk is not empty
    out = run(
        burst(5, [], [replace(poster, framed=True), replace(face(Box(0.8, 0.1, 0.9, 0.22)), framed=True)]),
        confirming=True,
    )
    assert "extra_person" not in types(out)


def test_bystander_is_counted_not_reported():
    passer = person(Box(0.82, 0.3, 0.92, 0.6), 0.8)  # small box (3 % of the frame)
    turned = face(Box(0.85, 0.31, 0.88, 0.36), facing=0.2)  # profile
    out = run(burst(5, [person(), passer], [face(), turned]))
    assert types(out) == []
    assert out.persons == 2 and out.bystanders == 1


def test_a_weak_face_with_no_body_around_it_is_nobody_but_a_clear_one_is_somebody():
    # a lone 0.51 "face" close to the camera (on the photo of one woman drinking tea) is no second person
    lone = Box(0.16, 0.62, 0.28, 0.82)  # a fifth of the frame high: close to the camera
    out = run(burst(5, [person()], [face(), face(lone, score=0.51, facing=0.43)]))
    assert types(out) == [] and out.persons == 1
    # the person detector missed the body of a real second person: a clear face is enough
    out = run(burst(5, [person()], [face(), face(lone, score=0.8, facing=0.43)]))
    assert types(out) == ["extra_person"]
    # and the bar is the profile's to set
    out = run(
        burst(5, [person()], [face(), face(lone, score=0.51)]),
        extra="policy: {rules: {extra_person: {min_lone_face_score: 0.5}}}",
    )
    assert types(out) == ["extra_person"]


def test_tiny_face_facing_the_camera_is_still_a_bystander():
    crowd = [face(Box(0.8 + 0.03 * i, 0.1, 0.82 + 0.03 * i, 0.13), facing=0.95) for i in range(3)]
    out = run(burst(5, [person()], [face(), *crowd]))
    assert types(out) == [] and out.bystanders == 3


def test_a_face_without_a_body_box_is_not_a_smaller_person_than_a_faceless_box():
    """The worker's body missed by the detector (a dark suit on a dark wall), their live face
    looking at the camera; a framed print on the wall behind them whose face is not found
    but whose body is. Compared as a bare face the worker lost their place to the print's
    body and became the second person; a face stands for the body around it."""
    print_body = person(Box(0.80, 0.14, 0.95, 0.39), score=0.69)
    worker_face = face(Box(0.476, 0.104, 0.556, 0.246), facing=0.74)
    out = run(burst(5, [print_body], [worker_face]))
    assert types(out) == []
    assert check(out, "extra_person") == "pass" and check(out, "away_from_desk") == "pass"


def test_unknown_face_needs_n_consecutive_checks():
    p = Policy(make_config().policy)
    stranger = burst(5, [person()], [face(identity="unknown")])
    first = run(stranger, policy=p)
    assert types(first) == [] and check(first, "unrecognized_person") == "pending"
    second = run(stranger, policy=p)
    assert types(second) == ["unrecognized_person"]


def test_recognised_worker_resets_the_unknown_streak():
    p = Policy(make_config().policy)
    stranger = burst(5, [person()], [face(identity="unknown")])
    worker = burst(5, [person()], [face(identity="worker")])
    run(stranger, policy=p)
    run(worker, policy=p)
    assert types(run(stranger, policy=p)) == []


def test_no_identity_result_leaves_the_streak_alone():
    p = Policy(make_config().policy)
    stranger = burst(5, [person()], [face(identity="unknown")])
    run(stranger, policy=p)
    out = run(burst(5, [person()], [face(identity=None)]), policy=p)
    assert check(out, "unrecognized_person") == "skipped"
    assert types(run(stranger, policy=p)) == ["unrecognized_person"]


def test_a_face_judged_neither_way_accuses_nobody_and_ends_the_streak():
    """A face between the tolerance and identity_unknown_distance ("uncertain") may be
    the worker's on a bad day: no unrecognized_person from it, not even with three such
    frames beside two unknown ones, and the scan ends a streak of unknown faces."""
    p = Policy(make_config().policy)
    stranger = burst(5, [person()], [face(identity="unknown")])
    unsure = burst(5, [person()], [face(identity="uncertain")])
    run(stranger, policy=p)
    out = run(unsure, policy=p)
    assert types(out) == [] and check(out, "unrecognized_person") == "pass"
    assert "neither surely the worker nor surely somebody else in 5/5" in reason(out, "unrecognized_person")
    assert check(run(stranger, policy=p), "unrecognized_person") == "pending"  # a new streak
    mixed = burst(5, [person()], [face(identity="uncertain")])
    for v in mixed[:2]:
        v.faces = [face(identity="unknown")]
    one = Policy(make_config("policy: {rules: {unrecognized_person: {consecutive_checks: 1}}}").policy)
    out = run(mixed, policy=one)
    assert types(out) == [] and "not judged in 3" in reason(out, "unrecognized_person")


def test_small_unknown_face_is_not_judged():
    tiny = face(Box(0.48, 0.3, 0.52, 0.35), identity="unknown")
    p = Policy(make_config("policy: {rules: {unrecognized_person: {consecutive_checks: 1}}}").policy)
    out = run(burst(5, [person()], [tiny]), policy=p)
    assert check(out, "unrecognized_person") == "skipped"


def test_cup_at_the_mouth_is_eating():
    cup = obj("cup", Box(0.47, 0.38, 0.56, 0.5), 0.6, "at_mouth")
    out = run(burst(5, [person(), cup], [face()]))
    assert types(out) == ["eating"]
    assert out.findings[0].detections[0] == cup
    assert out.findings[0].detail == "food or drink at the mouth in 5 of 5 frames: cup"


def test_a_glass_held_near_the_face_is_not_eating():
    # seen next to the face (a toast) but not at the mouth: the phone stage gives no behaviour
    glass = obj("wine glass", Box(0.47, 0.42, 0.53, 0.55), 0.9)
    assert types(run(burst(5, [person(), glass], [face()]))) == []


def test_cup_on_the_desk_is_not_eating():
    cup = obj("cup", Box(0.05, 0.8, 0.15, 0.95), 0.9)
    assert types(run(burst(5, [person(), cup], [face()]))) == []


def test_food_at_the_mouth_without_a_face_is_eating():
    sandwich = obj("sandwich", Box(0.4, 0.2, 0.55, 0.3), behaviour="at_mouth")
    assert types(run(burst(5, [person(), sandwich]))) == ["eating"]


def test_eating_labels_are_configurable():
    sandwich = obj("sandwich", Box(0.4, 0.2, 0.55, 0.3), behaviour="at_mouth")
    drinks_only = "policy: {rules: {eating: {labels: [cup, bottle]}}}"
    assert types(run(burst(5, [person(), sandwich]), extra=drinks_only)) == []


def test_idle_input_while_present():
    out = run(burst(5, [person()], [face()]), idle_seconds=1000, idle_reported_at=T0 - timedelta(seconds=30))
    assert types(out) == ["idle_input"]
    assert out.findings[0].evidence_allowed is False


def test_idle_input_counts_the_time_since_the_report():
    out = run(burst(5, [person()], [face()]), idle_seconds=800, idle_reported_at=T0 - timedelta(seconds=200))
    assert types(out) == ["idle_input"]  # 800 s idle then, 1000 s now


def test_idle_input_ignores_stale_reports_and_absent_workers():
    stale = run(burst(5, [person()], [face()]), idle_seconds=5000, idle_reported_at=T0 - timedelta(hours=1))
    assert types(stale) == [] and check(stale, "idle_input") == "skipped"
    away = run(burst(5), idle_seconds=5000, idle_reported_at=T0)
    assert check(away, "idle_input") == "skipped"


def test_idle_input_from_recorded_activity():
    p = Policy(make_config().policy)
    p.record_activity(120.0, T0 - timedelta(seconds=10), T0)
    out = run(burst(5, [person()], [face()]), policy=p)
    assert check(out, "idle_input") == "pass"


def test_every_finding_names_its_frame_and_confidence():
    phone = obj("cell phone", EAR_BOX, behaviour="at_ear")
    cup = obj("cup", Box(0.47, 0.38, 0.56, 0.5), behaviour="at_mouth")
    out = run(burst(5, [person(), phone, cup], [face(WORKER_FACE_BOX)]))
    assert types(out) == ["eating", "phone_use"]
    for f in out.findings:
        assert 0.0 < f.confidence <= 1.0
        assert 0 <= f.frame_index < 5
        assert f.detections


def test_no_frames_is_skipped_not_away():
    out = run([])
    assert out.findings == [] and out.confirm_after_seconds is None
    assert all(c.outcome == "skipped" for c in out.checks)


# -- presentation_attack (issue 13) --------------------------------------------------------
def test_a_picture_held_up_is_nobody_and_a_presentation_attack():
    """A face that failed the liveness check, and the person box around it: not the worker,
    not present; with nobody there in person that is a presentation_attack."""
    from dataclasses import replace

    picture = replace(face(), live=False, spoof_cues="moire 2.40")
    out = run(burst(5, [person()], [picture]))
    assert types(out) == ["presentation_attack"]
    assert "moire 2.40" in out.findings[0].detail
    assert out.persons == 0
    assert check(out, "away_from_desk") == "pending"  # nobody there: confirmed by a second burst
    assert check(out, "unrecognized_person") == "skipped"


def test_a_picture_behind_the_worker_is_no_attack():
    """The worker in person at the desk, a pictured face beside them (a photo on the wall,
    a video call on a screen): nothing to report, and the picture is not an extra person."""
    from dataclasses import replace

    poster = replace(face(Box(0.05, 0.05, 0.2, 0.3)), live=False, spoof_cues="moire 2.1")
    out = run(burst(5, [person()], [face(identity="worker"), poster]))
    assert out.findings == [] and out.persons == 1
    assert check(out, "presentation_attack") == "pass"


def test_a_picture_in_too_few_frames_or_too_small_is_not_reported():
    from dataclasses import replace

    picture = replace(face(), live=False)
    assert "presentation_attack" not in types(run(burst(5, [], [picture], only=[0, 1])))
    tiny = replace(face(Box(0.45, 0.3, 0.48, 0.34)), live=False)
    assert "presentation_attack" not in types(run(burst(5, [], [tiny])))
    off = run(burst(5, [], [picture]), extra="policy: {rules: {presentation_attack: {enabled: false}}}")
    assert "presentation_attack" not in types(off)


# -- how long the phone stage is worth running in a burst --------------------------------------
def closer(analyses, remaining: int, extra: str = "") -> bool:
    return Policy(make_config(extra).policy).closer_look_needed(analyses, remaining)


def test_the_closer_look_stops_once_neither_phone_use_nor_eating_can_persist():
    clear = burst(5, [person()], [face()])
    # 5 frames at persistence 0.6 need 3: after 0, 1 or 2 clear frames 3 can still come
    assert [closer(clear[:k], 5 - k) for k in range(5)] == [True, True, True, False, False]
    phone = obj("cell phone", EAR_BOX, 0.6, "at_ear")
    calling = burst(5, [person(), phone], [face()])
    assert all(closer(calling[:k], 5 - k) for k in range(5))  # a phone so far: it may persist
    one_then_clear = calling[:1] + clear[1:]
    assert [closer(one_then_clear[:k], 5 - k) for k in range(5)] == [True, True, True, True, False]
    cup = obj("cup", Box(0.47, 0.38, 0.56, 0.5), 0.6, "at_mouth")
    drinking = burst(5, [person(), cup], [face()])
    assert closer(drinking[:2] + clear[2:3], 2)  # eating can still reach 3 of 5


def test_the_closer_look_counts_what_the_rules_count():
    # a phone without the phone stage's behaviour, or a bystander's: no hit for phone_use
    guess = obj("cell phone", EAR_BOX, 0.9)
    assert not closer(burst(3, [person(), guess], [face()]), 2)
    weak = obj("cell phone", EAR_BOX, 0.3, "at_ear")  # below rules.phone_use.min_score
    assert not closer(burst(3, [person(), weak], [face()]), 2)


def test_a_burst_cut_short_looks_no_less_and_is_judged_on_the_frames_it_got():
    """Shutdown mid-burst: the frames stop before the planned count. The closer-look question
    counted frames that never came, so the cut burst may look closer on a frame that a burst
    planned at its real length skips, never on fewer; what that extra look finds cannot make a
    finding the shorter burst would not make (it is skipped only where the rule cannot persist)."""
    import numpy as np

    from deskwatch.domain import Frame
    from deskwatch.scanner import analyze_frames

    clear = burst(3, [person()], [face()])
    calling = burst(3, [person(), obj("cell phone", EAR_BOX, 0.6, "at_ear")], [face()])

    class Canned:
        """The vision stage: a phone at the ear in the last frame, seen only by the phone stage."""

        def __init__(self) -> None:
            self.asked: list[bool] = []
            self.identity_enabled = True

        def analyze(self, frame: Frame, *, look_closer: bool = True) -> object:
            self.asked.append(look_closer)
            return calling[frame.index] if look_closer and frame.index == 2 else clear[frame.index]

    policy = Policy(make_config().policy)
    frames = [Frame(np.zeros((4, 4, 3), np.uint8), T0, i) for i in range(3)]
    cut, planned = Canned(), Canned()
    got = analyze_frames(cut, policy, iter(frames), 5)  # 5 planned, shutdown after 3
    short = analyze_frames(planned, policy, iter(frames), 3)  # 3 planned
    # at 0.6 of 5 two clear frames leave 3 hits possible: the third is looked at; at 0.6 of 3
    # two clear frames settle it (two hits needed, one frame left): the third is not
    assert cut.asked == [True, True, True] and planned.asked == [True, True, False]
    assert got.analyses[2] is calling[2] and short.analyses[2] is clear[2]  # the extra look saw the phone
    a, b = run(got.analyses, policy=policy), run(short.analyses, policy=policy)
    assert [(c.rule, c.outcome) for c in a.checks] == [(c.rule, c.outcome) for c in b.checks]
    assert check(a, "phone_use") == "pass" and types(a) == types(b) == []


# -- when a burst can end before its last frames ---------------------------------------------
def settled(analyses, remaining: int, extra: str = "", policy: Policy | None = None) -> bool:
    return (policy or Policy(make_config(extra).policy)).burst_settled(analyses, remaining)


def test_a_burst_is_settled_once_the_worker_was_seen_recognised_with_nothing_that_could_persist():
    clear = burst(5, [person()], [face(identity="worker")])
    # 5 frames at persistence 0.6 need 3: after 3 clear frames 2 more hits cannot make 3
    assert [settled(clear[:k], 5 - k) for k in range(1, 5)] == [False, False, True, True]
    assert not settled(clear, 0)  # nothing left to skip
    off = "policy: {end_settled_bursts: false}"
    assert not settled(clear[:3], 2, off)


def test_a_burst_is_not_settled_while_any_rule_could_still_persist():
    worker = [person()]
    known = [face(identity="worker")]
    phone = obj("cell phone", EAR_BOX, 0.6, "at_ear")
    other = person(Box(0.0, 0.1, 0.3, 1.0), 0.9)
    other_face = face(Box(0.08, 0.15, 0.2, 0.35), identity="unknown")
    cup = obj("cup", Box(0.47, 0.38, 0.56, 0.5), 0.6, "at_mouth")
    cases = {
        "a phone at the ear in one frame": burst(3, [*worker, phone], known, only=[0], otherwise=worker),
        "food at the mouth in one frame": burst(3, [*worker, cup], known, only=[1], otherwise=worker),
        "somebody else in one frame": burst(3, [*worker, other], [*known, other_face], only=[2], otherwise=worker),
        "nobody at the desk in one frame": burst(3, worker, known, only=[1, 2]),
        "an unknown face": burst(3, worker, [face(identity="unknown")]),
        "no identity result yet (a pass would end the unknown-face streak)": burst(3, worker, [face()]),
        "a dark frame": burst(1, light=DARK) + burst(2, worker, known),
    }
    for what, analyses in cases.items():
        assert not settled(analyses, 2), what
    # recognised in 2 of 3 frames, unknown in 1: 3 unknown of 5 could still outnumber 2 known
    mixed = burst(3, worker, known)
    mixed[1].faces = [face(identity="unknown")]
    assert not settled(mixed, 2)
    # recognised in 2, the face turned away in 1: 2 more unknown frames cannot make 3
    mixed[1].faces = []
    assert settled(mixed, 2)
    # an unknown face does not hold a burst where no rule checks identity
    no_identity = "policy: {rules: {unrecognized_person: {enabled: false}}}"
    assert settled(burst(3, worker, [face(identity="unknown")]), 2, no_identity)
    # nor does the lack of a result where the vision stage checks no face (nobody enrolled):
    # no frame to come can give one
    unchecked = burst(3, worker, [face()])
    policy = Policy(make_config().policy)
    assert not policy.burst_settled(unchecked, 2) and policy.burst_settled(unchecked, 2, identity=False)


def test_a_settled_burst_is_judged_as_the_whole_burst_would_be():
    """The frames never taken are counted in ``need``: two phone frames in three analysed are
    not a finding where the whole burst of 5 needs three (the burst would not have been
    settled with them, this is the evaluation's side), and a clear settled burst has the
    outcomes of the whole burst."""
    phone = obj("cell phone", EAR_BOX, 0.6, "at_ear")
    calls = burst(3, [person(), phone], [face(identity="worker")], only=[0, 1], otherwise=[person()])
    assert types(run(calls)) == ["phone_use"]  # 2 of 3 frames, need 2
    out = run(calls, unseen_frames=2)
    assert types(out) == [] and check(out, "phone_use") == "pass"
    assert "need 3" in next(c.reason for c in out.checks if c.rule == "phone_use")
    clear = burst(5, [person()], [face(identity="worker")])
    whole, cut = run(clear, idle_seconds=10.0), run(clear[:3], unseen_frames=2, idle_seconds=10.0)
    assert [(c.rule, c.outcome) for c in cut.checks] == [(c.rule, c.outcome) for c in whole.checks]
    assert cut.findings == whole.findings == [] and cut.persons == whole.persons == 1


def test_a_settled_burst_still_waits_for_a_worker_late_back_from_a_pause():
    """Where no rule counts an empty desk or a face, an empty burst is settled, except
    while a pause has run out and the worker has not been seen back (pause_overrun)."""
    extra = "policy: {rules: {away_from_desk: {enabled: false}, unrecognized_person: {enabled: false}}}"
    nobody = burst(3, [], [])
    assert settled(nobody, 2, extra)
    policy = Policy(make_config(extra).policy)
    policy.pause("fetch water", 1, T0 - timedelta(minutes=2))  # ran out a minute ago
    assert policy.pre_scan(T0) is None and policy.paused is None
    assert not settled(nobody, 2, policy=policy)  # the frames to come may show them back
    assert settled(burst(3, [person()], [face(identity="worker")]), 2, policy=policy)


def test_dark_frames_lower_what_the_burst_needs():
    # 2 dark + 2 clear frames so far, 1 to come: at most 3 usable frames need 2 hits, 1 is possible
    frames = burst(2, light=DARK) + burst(2, [person()], [face()])
    assert not closer(frames, 1)
    # 3 dark so far and 2 to come: 2 usable frames need 2 hits, both still possible
    assert closer(burst(3, light=DARK), 2)


def test_no_closer_look_where_the_profile_has_neither_rule():
    assert not closer([], 5, "policy: {profile: minimal}")
    assert closer([], 5, "policy: {profile: uk}\nschedule: {mode: fixed, fixed_times: ['10:00']}")
    off = "policy: {rules: {phone_use: {enabled: false}, eating: {enabled: false}}}"
    assert not closer([], 5, off)
