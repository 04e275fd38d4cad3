"""Properties of the engine over arbitrary bursts (hypothesis): it never raises,
reports only enabled rules, keeps confidences in 0..1, names the frames it used, and
never reports anything else when the burst is too dark to check."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskwatch.domain import Box, Detection, Face, FrameAnalysis
from deskwatch.policy.engine import Policy, PolicyContext
from deskwatch.policy.profiles import RULES, effective_rules
from tests.support.policy import COVERED, DARK, GOOD_LIGHT, T0, make_config

LABELS = ["person", "cell phone", "cup", "bottle", "pizza", "laptop", "chair"]
CONFIGS = {
    name: make_config(extra)
    for name, extra in {
        "full": "",
        "uk": "policy: {profile: uk}\nschedule: {mode: fixed, fixed_times: ['10:00']}",
        "minimal": "policy: {profile: minimal}",
    }.items()
}


@st.composite
def boxes(draw: st.DrawFn) -> Box:
    x0 = draw(st.floats(0.0, 0.95))
    y0 = draw(st.floats(0.0, 0.95))
    return Box(x0, y0, draw(st.floats(x0 + 0.01, 1.0)), draw(st.floats(y0 + 0.01, 1.0)))


detections = st.builds(Detection, st.sampled_from(LABELS), st.floats(0.0, 1.0), boxes())
faces = st.builds(
    Face,
    boxes(),
    st.floats(0.0, 1.0),
    st.just(()),
    st.floats(0.0, 1.0),
    st.sampled_from([None, "worker", "unknown"]),
)
lights = st.sampled_from([GOOD_LIGHT, GOOD_LIGHT, GOOD_LIGHT, DARK, COVERED])


@st.composite
def bursts(draw: st.DrawFn) -> list[FrameAnalysis]:
    n = draw(st.integers(0, 6))
    return [
        FrameAnalysis(i, draw(lights), draw(st.lists(detections, max_size=6)), draw(st.lists(faces, max_size=3)))
        for i in range(n)
    ]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    burst=bursts(),
    profile=st.sampled_from(list(CONFIGS)),
    confirming=st.booleans(),
    idle=st.one_of(st.none(), st.floats(0, 10_000)),
)
def test_engine_invariants(burst: list[FrameAnalysis], profile: str, confirming: bool, idle: float | None) -> None:
    cfg = CONFIGS[profile]
    out = Policy(cfg.policy).evaluate(burst, PolicyContext(T0, "schedule", confirming=confirming, idle_seconds=idle))
    enabled = set(effective_rules(cfg.policy))
    assert [c.rule for c in out.checks] == list(RULES)
    assert {c.outcome for c in out.checks} <= {"pass", "violation", "skipped", "pending"}
    for c in out.checks:
        if c.rule not in enabled:
            assert c.outcome == "skipped"
    types = [f.type for f in out.findings]
    assert len(types) == len(set(types))
    assert set(types) <= enabled
    for f in out.findings:
        assert 0.0 <= f.confidence <= 1.0
        assert f.frame_index in {a.frame_index for a in burst}
        assert next(c for c in out.checks if c.rule == f.type).outcome == "violation"
    if "away_from_desk" in types:
        assert confirming
    if out.confirm_after_seconds is not None:
        assert not confirming and "away_from_desk" in enabled
    n = len(burst)
    unusable = sum(1 for a in burst if a.light.low_light or a.light.obstructed)
    if n and n - unusable < max(1, -(-cfg.policy.persistence * n // 1)):
        assert set(types) <= {"low_light", "camera_obstructed"}
    assert out.persons >= 0 and 0 <= out.bystanders <= max(out.persons, 0)
    if profile == "minimal":
        assert set(types) <= {"away_from_desk", "low_light", "camera_obstructed"}
