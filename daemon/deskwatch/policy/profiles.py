"""Jurisdiction profiles as code: which rules run, whether identity runs, whether
random scans are allowed and whether images may leave the device.

``effective_rules(policy)`` applies the per-rule ``enabled`` overrides from config on
top of the profile's table. Overrides cannot switch on what a profile forbids by
law: the ``uk`` profile never runs an identity check, ``minimal`` never sends images.
"""

from __future__ import annotations

from dataclasses import dataclass

from deskwatch.policy.config import PolicyConfig

RULES: tuple[str, ...] = (
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
)

# Rules that need the identity check (face encoding compared to the enrolled worker).
IDENTITY_RULES = frozenset({"unrecognized_person"})
# Rules whose findings never carry an image, whatever the profile.
# No thumbnail for these: nothing to see (idle input, a pause), or a picture taken with
# every detector skipped (too dark, lens covered), which nobody could blur first.
NO_EVIDENCE_RULES = frozenset({"idle_input", "pause_overrun", "low_light", "camera_obstructed"})


@dataclass(frozen=True)
class Profile:
    name: str
    rules: frozenset[str]
    identity: bool  # may the identity check run at all
    random_scans: bool  # may scans happen at random times
    images_leave: bool  # may evidence thumbnails be sent
    summary: str
    phone_behaviours: frozenset[str] = frozenset({"at_ear", "in_hand"})  # what phone_use counts by default


PROFILES: dict[str, Profile] = {
    "full": Profile(
        name="full",
        rules=frozenset(RULES),
        identity=True,
        random_scans=True,
        images_leave=True,
        summary="every rule, scans at random times during the shift, identity check against the enrolled worker",
    ),
    "uk": Profile(
        name="uk",
        rules=frozenset({"phone_use", "low_light", "camera_obstructed"}),
        identity=False,
        random_scans=False,
        images_leave=True,
        summary="scheduled desk checks for unauthorised devices only; no random scans and no identity check",
        # an unauthorised device is one at the desk, in use or not
        phone_behaviours=frozenset({"at_ear", "in_hand", "visible_on_desk"}),
    ),
    "minimal": Profile(
        name="minimal",
        rules=frozenset({"away_from_desk", "low_light", "camera_obstructed"}),
        identity=False,
        random_scans=True,
        images_leave=False,
        summary="presence and lighting only; no image ever leaves the device",
    ),
}


def profile_of(policy: PolicyConfig) -> Profile:
    return PROFILES[policy.profile]


def rule_enabled(policy: PolicyConfig, rule: str) -> bool:
    """Is ``rule`` on under this config (profile table + override)?"""
    profile = profile_of(policy)
    if rule in IDENTITY_RULES and not profile.identity:
        return False
    override = getattr(policy.rules, rule).enabled
    if override is not None:
        return bool(override)
    return rule in profile.rules


def phone_behaviours(policy: PolicyConfig) -> frozenset[str]:
    """What phone_use counts: policy.rules.phone_use.behaviours, else the profile's default."""
    configured = policy.rules.phone_use.behaviours
    return frozenset(configured) if configured else profile_of(policy).phone_behaviours


def effective_rules(policy: PolicyConfig) -> list[str]:
    """The rules that run, in catalog order."""
    return [r for r in RULES if rule_enabled(policy, r)]


def identity_allowed(policy: PolicyConfig) -> bool:
    """Should the vision stage run the identity check at all? (False for uk and minimal,
    and whenever no enabled rule needs it.)"""
    return profile_of(policy).identity and rule_enabled(policy, "unrecognized_person")


def evidence_refusal(policy: PolicyConfig, rule: str) -> str | None:
    """Why a finding of ``rule`` may carry no thumbnail ("profile" or "rule"), or None.

    The evidence stage adds its own switch (``evidence.enabled``) and the size cap.
    """
    if not profile_of(policy).images_leave:
        return "profile"
    if rule in NO_EVIDENCE_RULES:
        return "rule"
    return None
