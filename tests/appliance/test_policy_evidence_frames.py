"""The frames a scan keeps while its burst comes in (``Policy.evidence_frames``): a scan
lets every other frame go as soon as it is analysed, so each finding that carries a
picture must still find its own frame at the end, and a frame let go must never be
needed again (hypothesis, over desk scenes where the rules fire and tie)."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskwatch.domain import Box, Detection, Face, FrameAnalysis
from deskwatch.policy.engine import Policy, PolicyContext
from tests.support.policy import COVERED, DARK, GOOD_LIGHT, T0, WORKER_BOX, WORKER_FACE_BOX, burst, make_config, obj

# unrecognized_person after one scan (the streak is the engine's, not the frames')
ONE_CHECK = "policy: {rules: {unrecognized_person: {consecutive_checks: 1}}}"
CONFIGS = {
    name: make_config(extra)
    for name, extra in {
        "full": ONE_CHECK,
        "uk": "policy: {profile: uk}\nschedule: {mode: fixed, fixed_times: ['10:00']}",
        "minimal": "policy: {profile: minimal}",
    }.items()
}
SCORES = st.sampled_from([0.55, 0.7, 0.7, 0.85, 0.95])  # few values: ties between frames are common
NEAR_FACE = Box(0.52, 0.3, 0.6, 0.42)
SIDE_PERSON = Box(0.0, 0.1, 0.3, 0.95)
SIDE_FACE = Box(0.08, 0.15, 0.2, 0.35)


MOSTLY = st.sampled_from([True, True, True, True, False])  # in most frames of the burst


@st.composite
def desk_bursts(draw: st.DrawFn) -> list[FrameAnalysis]:
    """A desk scene held through a burst: the worker (or nobody, or a picture of a face),
    maybe someone beside them, a phone or food at the face; each thing in most frames,
    with a score of its own in each (ties between frames are common), some frames too
    dark (each its own darkness) or covered."""
    scene = draw(st.sets(st.sampled_from(["body", "face", "side", "side_face", "phone", "food"])))
    identity = draw(st.sampled_from([None, "worker", "unknown"]))
    live = draw(st.sampled_from([None, True, False]))
    phone = draw(st.sampled_from(["at_ear", "in_hand", "visible"]))
    food = draw(st.sampled_from(["cup", "bottle", "banana"]))
    out = []
    for i in range(draw(st.integers(1, 7))):
        light = draw(st.sampled_from([GOOD_LIGHT] * 5 + [DARK, COVERED]))
        if light is DARK:
            light = dataclasses.replace(DARK, mean_luma=draw(st.sampled_from([5.0, 9.0, 12.0])))
        here = {thing for thing in scene if draw(MOSTLY)}
        dets: list[Detection] = []
        faces: list[Face] = []
        if "body" in here:
            dets.append(Detection("person", draw(SCORES), WORKER_BOX))
        if "face" in here:
            faces.append(Face(WORKER_FACE_BOX, draw(SCORES), facing=0.9, identity=identity, live=live))
        if "side" in here:
            dets.append(Detection("person", draw(SCORES), SIDE_PERSON))
        if "side_face" in here:
            faces.append(Face(SIDE_FACE, draw(SCORES), facing=0.9))
        if "phone" in here:
            dets.append(obj("cell phone", NEAR_FACE, draw(SCORES), phone))
        if "food" in here:
            dets.append(obj(food, NEAR_FACE, draw(SCORES), "at_mouth"))
        out.append(FrameAnalysis(i, light, dets, faces))
    return out


def kept_as_the_scan_goes(policy: Policy, analyses: list[FrameAnalysis]) -> set[int]:
    """What the scanner does: each frame is held once analysed, then only the frames the
    policy still names are kept."""
    held: set[int] = set()
    for i in range(len(analyses)):
        held = (held | {i}) & set(policy.evidence_frames(analyses[: i + 1]))
    return held


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    analyses=desk_bursts(),
    profile=st.sampled_from(list(CONFIGS)),
    confirming=st.booleans(),
    idle=st.one_of(st.none(), st.floats(0, 10_000)),
)
def test_every_finding_with_a_picture_keeps_its_frame(
    analyses: list[FrameAnalysis], profile: str, confirming: bool, idle: float | None
) -> None:
    policy = Policy(CONFIGS[profile].policy)
    held = kept_as_the_scan_goes(policy, analyses)
    out = policy.evaluate(analyses, PolicyContext(T0, "schedule", confirming=confirming, idle_seconds=idle))
    needed = {f.frame_index for f in out.findings if f.evidence_refusal is None}
    assert needed <= held
    # the people view each kept frame was prepared with is the one its evidence blurs by
    views = policy.evidence_frames(analyses)
    for i in needed:
        assert views[i].to_anonymise() == out.people[i].to_anonymise()
    # nothing kept for a rule that never sends a picture
    if profile == "minimal":
        assert held == set()


def test_the_best_frame_so_far_is_kept_and_the_rest_let_go() -> None:
    """A phone in the hand, strongest in frame 2 and as strong again in frame 4: frame 2 is
    the evidence (the earliest of the best), so frames 0, 1, 3 and 4 go as they come."""
    policy = Policy(make_config().policy)
    scores = [0.6, 0.7, 0.9, 0.5, 0.9]
    analyses = [
        FrameAnalysis(i, GOOD_LIGHT, [Detection("person", 0.9, WORKER_BOX), obj("cell phone", NEAR_FACE, s, "in_hand")])
        for i, s in enumerate(scores)
    ]
    assert [set(policy.evidence_frames(analyses[: i + 1])) for i in range(5)] == [{0}, {1}, {2}, {2}, {2}]
    out = policy.evaluate(analyses, PolicyContext(T0, "schedule", confirming=True))
    assert [(f.type, f.frame_index) for f in out.findings] == [("phone_use", 2)]


def test_a_clear_desk_keeps_no_frame() -> None:
    """The worker at the desk and nothing else: no rule that sends a picture can pick a
    frame, so the scan holds none once each is analysed (idle_input's frame carries none)."""
    policy = Policy(make_config().policy)
    analyses = burst(5, [Detection("person", 0.9, WORKER_BOX)])
    assert all(policy.evidence_frames(analyses[: i + 1]) == {} for i in range(5))
