"""The rule catalog: pure functions over a burst's ``FrameAnalysis`` list.

No clock is read here (``now`` is passed in) and no state is kept (the engine keeps
the unknown-face streak and the pause). Each rule returns a :class:`RuleResult`
whose finding carries a confidence and the detections that caused it.

People in a frame are sorted into the *worker* (the largest person, or face, in the
desk zone), *extras* (anyone else close to the camera or facing the screen) and
*bystanders* (small and not facing: never a violation, blurred in evidence).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from deskwatch.domain import Box, Detection, Face, Finding, FrameAnalysis, PeopleView, Person
from deskwatch.policy.config import PolicyConfig
from deskwatch.policy.profiles import evidence_refusal, phone_behaviours, rule_enabled

# One frame where a rule's condition held: its people, the detections and faces that show
# it (the finding's evidence boxes), and the score that ranks it among the burst's frames.
Hit = tuple[PeopleView, list[Detection], list[Face], float]


@dataclass
class RuleResult:
    outcome: str  # "pass", "violation", "skipped", "pending"
    reason: str = ""
    finding: Finding | None = None


@dataclass(frozen=True)
class IdleReport:
    idle_seconds: float  # without keyboard/mouse input, as of reported_at
    reported_at: datetime


def frames_needed(n: int, persistence: float) -> int:
    """Frames of a burst of ``n`` in which a condition must hold (at least one)."""
    return max(1, math.ceil(persistence * n - 1e-9))


def persistent_count(counts: list[int], need: int) -> int:
    """The largest count seen in at least ``need`` frames."""
    if not counts:
        return 0
    ordered = sorted(counts, reverse=True)
    return ordered[min(need, len(ordered)) - 1]


# -- light gate -----------------------------------------------------------------------
@dataclass
class LightGate:
    low_light: RuleResult
    obstructed: RuleResult
    usable: list[FrameAnalysis]
    blocked: bool
    reason: str = ""  # why the other rules were skipped (a blocked burst)


def light_gate(analyses: list[FrameAnalysis], need: int) -> LightGate:
    """low_light / camera_obstructed over the burst; other rules only run when the
    burst is mostly checkable, and only on the checkable frames.

    Each finding needs its own frames to persist (``need``), as every rule's does: a burst
    with the first frame dark (the exposure settling) and the worker's top filling two
    frames as they reach past the camera cannot be checked, but nobody covered the camera.
    Such a burst is unchecked (every rule skipped, the reason says how many frames were dark
    and covered) with no finding. Where both persist, the more common one is the finding;
    on a tie low_light, which accuses nobody."""
    dark = [a for a in analyses if a.light.low_light]
    covered = [a for a in analyses if a.light.obstructed]
    usable = [a for a in analyses if not a.light.low_light and not a.light.obstructed]
    n = len(analyses)
    low = RuleResult("pass", f"light ok in {len(analyses) - len(dark)}/{n} frames")
    obs = RuleResult("pass", f"view clear in {n - len(covered)}/{n} frames")
    blocked = len(usable) < need
    reason = ""
    if blocked and len(covered) >= need and len(covered) > len(dark):
        a = covered[0]
        conf = len(covered) / n
        obs = RuleResult(
            "violation",
            f"covered, misted or pointed away in {len(covered)}/{n} frames",
            Finding(
                "camera_obstructed",
                round(conf, 3),
                a.frame_index,
                detail=(
                    f"the picture is blurred, no sharp edge anywhere (sharpness {a.light.sharpness:.3f}): "
                    "a misted or smeared lens, or something translucent over it"
                    if a.light.blurred
                    else f"no detail in the picture (contrast {a.light.contrast:.1f}, detail {a.light.detail:.2f})"
                ),
            ),
        )
        low = RuleResult("skipped", "camera covered, misted or pointed away")
        reason = "camera covered, misted or pointed away"
    elif blocked and len(dark) >= need:
        a = darkest(dark)
        conf = len(dark) / n
        low = RuleResult(
            "violation",
            f"too dark in {len(dark)}/{n} frames",
            Finding(
                "low_light",
                round(conf, 3),
                a.frame_index,
                detail=(
                    f"too dark to check (mean brightness {a.light.mean_luma:.0f}/255, "
                    f"{a.light.dark_fraction:.0%} of the picture dark)"
                ),
            ),
        )
        obs = RuleResult("skipped", "too dark to check")
        reason = "too dark to check"
    elif blocked:
        reason = (
            f"view not checkable in {n - len(usable)}/{n} frames (covered in {len(covered)}/{n}, "
            f"too dark in {len(dark)}/{n}): neither in the {need} a finding needs"
        )
        low = RuleResult("skipped", reason)
        obs = RuleResult("skipped", reason)
    return LightGate(low, obs, usable, blocked, reason)


def darkest(dark: list[FrameAnalysis]) -> FrameAnalysis:
    """low_light's frame: the darkest, the earliest on a tie."""
    return min(dark, key=lambda x: x.light.mean_luma)


# -- people ---------------------------------------------------------------------------
def people_view(a: FrameAnalysis, policy: PolicyConfig) -> PeopleView:
    """Sort one frame's people into worker, extras and bystanders."""
    away, extra = policy.rules.away_from_desk, policy.rules.extra_person
    zone = Box(*policy.desk_zone)
    dets = [d for d in a.labelled("person") if d.score >= min(away.min_person_score, extra.min_person_score)]
    faces = [f for f in a.faces if f.score >= away.min_face_score and f.live is not False]
    # a face that failed the liveness check is a picture, and so is a person box around it
    # with no live face of its own: neither counts as anybody
    pictures = [Person(f.box, None, f) for f in a.faces if f.live is False]
    for d in [d for d in dets if _shows_picture(d.box, pictures, faces)]:
        dets.remove(d)
        holder = next(p for p in pictures if d.box.contains(*p.box.centre))
        holder.detection = holder.detection or d
    people: list[Person] = []
    claimed: set[int] = set()
    # the boxes certain enough to count as a person claim faces first, each the largest
    # first: a weak box around a person (a shadow, an arm) must not take their face. A box
    # claims only a face where its person's head can be: another person's face inside the
    # worker's box (someone behind them, an arm round their shoulders) was taken for the
    # worker's own when the worker's face was missed, and kept sharp and sent as theirs.
    ordered = sorted(dets, key=lambda d: (d.score >= extra.min_person_score, d.box.area), reverse=True)
    for d in ordered:
        heads = [i for i, f in enumerate(faces) if i not in claimed and head_fits(d.box, f)]
        face = None
        if heads:  # the biggest, usually the person's own
            i = max(heads, key=lambda i: faces[i].box.area)
            claimed.add(i)
            face = faces[i]
        people.append(Person(d.box, d, face))
    # A box with no face where a head can be takes the biggest face left inside it, unsure:
    # a head bowed over a phone or an arm held far out puts a person's own face there too
    # (made a second person, the worker's own face was an extra_person in 9 camera views of
    # the photos, a thumb taken for a face in 3 more). It makes the person somebody, but it is
    # not shown or sent as theirs - unless the identity check recognised the worker in it.
    for p in people:
        if p.face is not None:
            continue
        inside = [i for i, f in enumerate(faces) if i not in claimed and p.box.contains(*f.box.centre)]
        if inside:
            i = max(inside, key=lambda i: faces[i].box.area)
            claimed.add(i)
            p.face, p.face_sure = faces[i], faces[i].identity == "worker"
    people += [Person(f.box, None, f) for i, f in enumerate(faces) if i not in claimed]

    def at_desk(p: Person) -> bool:
        if p.detection is not None and p.detection.score < away.min_person_score and p.face is None:
            return False
        return p.in_zone(zone, away.min_overlap)

    def sure(p: Person) -> bool:
        """Somebody for certain: a face, or a person box strong enough to count as a second person."""
        return p.face is not None or (p.detection is not None and p.detection.score >= extra.min_person_score)

    def size(p: Person) -> float:
        """How much of the frame the person takes: their box, or for a face no person box
        found, the body that face stands for (a face alone is not a smaller person)."""
        return p.box.area if p.detection is not None else min(1.0, p.box.area * FACE_TO_BODY_AREA)

    def framed(p: Person) -> bool:
        """A face with a frame on four sides: a poster, a framed photo or a screen on the wall."""
        return p.face is not None and p.face.framed

    shown = frozenset(r for r in ("extra_person", "presentation_attack") if rule_enabled(policy, r))
    view = PeopleView(a, pictures=pictures, about_others=shown)
    candidates = [p for p in people if at_desk(p)]
    if candidates:
        # the worker: the one the identity check recognised, else the largest of those
        # certainly there. A weak faceless box over the worker's shoulder (0.40, larger than
        # the worker's own box) once took the worker's place and made the worker a second
        # person close to the camera (eat_02 tilted, face_07 blurred, as camera frames).
        known = [p for p in candidates if p.face is not None and p.face.identity == "worker"]
        view.worker = max(known or candidates, key=lambda p: (sure(p), size(p)))
        if view.worker.face is not None and framed(view.worker):
            # a weak box from a poster down to the frame's edge was larger than the worker's own
            # and made the worker the second person: a face framed on four sides is the worker
            # only where no larger face without a frame is at the desk
            own = view.worker.face.box.area
            larger = [p for p in known or candidates if p.face is not None and not framed(p) and p.face.box.area > own]
            if larger:
                view.worker = max(larger, key=lambda p: (sure(p), size(p)))
    for p in people:
        if p is view.worker:
            continue
        if framed(p):
            # a face beside the worker's with straight edges on all four sides: a poster, a
            # framed photo or a TV on the wall behind them, not somebody reading the screen
            # (blurred in evidence like a bystander; never a presentation attack: hanging a
            # photo is no trick)
            view.bystanders.append(p)
            continue
        if p.detection is not None and p.detection.score < extra.min_person_score and p.face is None:
            continue  # too unsure to count at all
        if p.detection is None and p.face is not None and p.face.score < extra.min_lone_face_score:
            continue  # a weak face nobody's body confirms (still blurred: to_anonymise keeps only those placed)
        close = p.box.area >= extra.near_box_area if p.detection else False
        if p.face is not None:
            close = close or p.face.box.height >= extra.near_face_height
            facing = p.face.facing >= extra.facing_threshold and p.face.box.height >= extra.min_facing_face_height
        else:
            facing = False
        (view.extras if close or facing else view.bystanders).append(p)
    return view


# Where a person's own face lies in their box, in sizes of the face (the same at any distance,
# and whether or not the frame's bottom edge cuts the box to head and shoulders): ``across``
# face widths from the box's centre line, ``down`` face heights below its top. Measured on
# the labelled photos and their 12 camera variations (the daemon's own person boxes and
# BlazeFace faces), a person's own face sat
# - near the top centre: inside an ellipse of HEAD_ACROSS by HEAD_DOWN (most of them);
# - far across only at the top: an arm held out widens the box beside a head at its top
#   (up to 1.22 across, then at most 0.54 down: single_06, multi_07 tilted);
# - far down only in the middle: a head bowed over a phone or a book shows its crown above
#   the face (up to 1.54 down, then at most 0.45 across: phone_05, nophone_hand_03);
# and at least 0.12 of the box wide (a face cut by the frame's top above arms at a keyboard,
# phone_desk_01). Faces that were not the box's person's lay elsewhere
# (a thumb, 1.5-2.2 across and 4-5.6 down, phone_hand_02) - but one beside the worker's head in
# a box widened by her arm round his shoulders (multi_08: 0.96 across, 0.71 down) sits where a
# man's own face beside a loose box did (multi_06 as a camera frame: 0.86-1.0, 0.71-0.88): such
# a face is somebody's, but not surely this person's (``people_view``).
# A person box is about 13 times the area of its person's own face (the median over the 81
# people with both on the labelled photos and their 1280x720 camera frames; quartiles 8 and
# 21): what a face with no box around it stands for when it is compared with a person box.
# Compared as a bare face, a worker whose body the detector missed (a dark suit against a
# dark wall) lost the worker's place to the faceless body of a framed print on the wall,
# and their own live face, looking at the camera, made them the second person (face_10 with
# a print of face_01 hung at 10 % of the frame's height).
FACE_TO_BODY_AREA = 13.0
HEAD_ACROSS, HEAD_DOWN = 1.2, 0.9
REACH_ACROSS, REACH_DOWN = 1.3, 0.6
BOWED_ACROSS, BOWED_DOWN = 0.5, 1.7
HEAD_MIN_WIDTH = 0.1  # of the box: a face much farther back than the body is somebody behind
FRAME_EDGE = 0.02  # a box this close to the frame's side is cut by it


def head_fits(box: Box, face: Face) -> bool:
    """Is ``face`` where the head of the person whose box is ``box`` can be?

    The head tops the body: the box's top is the top of the head, the face just below it
    and near the middle across (further across beside an arm held out, further down under
    a bowed head's crown). A face above the box's top (a box cut by the frame's top) is at
    the top; a box cut by the frame's side continues beyond it, so a face towards that side
    may be in the middle of the whole body."""
    f = face.box
    if f.width <= 0 or f.height <= 0 or not box.contains(*f.centre) or f.width < HEAD_MIN_WIDTH * box.width:
        return False
    offset = f.centre[0] - (box.x0 + box.x1) / 2
    if (offset < 0 and box.x0 <= FRAME_EDGE) or (offset > 0 and box.x1 >= 1.0 - FRAME_EDGE):
        offset = 0.0
    across = abs(offset) / f.width
    down = max(0.0, f.y0 - box.y0) / f.height
    return (
        (across / HEAD_ACROSS) ** 2 + (down / HEAD_DOWN) ** 2 <= 1.0
        or (across <= REACH_ACROSS and down <= REACH_DOWN)
        or (across <= BOWED_ACROSS and down <= BOWED_DOWN)
    )


def _shows_picture(box: Box, pictures: list[Person], live_faces: list[Face]) -> bool:
    """A person box that holds a pictured face and no live one."""
    return any(box.contains(*p.box.centre) for p in pictures) and not any(
        box.contains(*f.box.centre) for f in live_faces
    )


# -- per-frame detectors of each condition ----------------------------------------------
# The vision stage's phone stage says what a confirmed phone or food is doing
# (Detection.behaviour); these decide whose it is and whether the profile counts it.
VISION_PHONE_BEHAVIOUR = {"at_ear": "at_ear", "in_hand": "in_hand", "visible": "visible_on_desk"}
PHONE_WORDS = {"at_ear": "at the ear", "in_hand": "in hand", "visible_on_desk": "on the desk"}


def _holder(view: PeopleView, obj: Detection, near_face: float) -> Person | None:
    """The worker or extra the object belongs to: their box holds its centre, or their
    face is within ``near_face`` face sizes of it. Never a bystander.

    The distance is counted in the face box's own width across and its height down: boxes
    are fractions of the frame's width and height, and a face is about as wide as it is high
    in pixels, so this is the same reach in every direction whatever the frame's shape. (Face
    heights both ways reached 1.78 times farther sideways than down in a 1280x720 frame.)"""
    x, y = obj.box.centre
    for p in view.non_bystanders:
        if p.face is not None and p.face.box.width > 0 and p.face.box.height > 0:
            fx, fy = p.face.box.centre
            if math.hypot((x - fx) / p.face.box.width, (y - fy) / p.face.box.height) <= near_face:
                return p
        if p.detection is not None and p.box.contains(x, y):
            return p
    return None


def phones_in_use(view: PeopleView, policy: PolicyConfig) -> list[tuple[Detection, Person | None, str]]:
    """(phone, whose, behaviour) for each confirmed phone whose behaviour the profile counts."""
    cfg = policy.rules.phone_use
    counted = phone_behaviours(policy)
    zone = Box(*policy.desk_zone)
    out = []
    for phone in view.frame.labelled("cell phone"):
        kind = VISION_PHONE_BEHAVIOUR.get(phone.behaviour or "")
        if kind is None or kind not in counted or phone.score < cfg.min_score:
            continue
        if kind == "visible_on_desk":
            if zone.contains(*phone.box.centre):
                out.append((phone, view.worker, kind))
            continue
        holder = _holder(view, phone, cfg.near_face_factor)
        if holder is not None:
            out.append((phone, holder, kind))
    return out


def food_at_mouth(view: PeopleView, policy: PolicyConfig) -> list[tuple[Detection, Person]]:
    """Food or a drink at someone's mouth (the phone stage's ``at_mouth``) and whose it is."""
    cfg = policy.rules.eating
    labels = set(cfg.labels)
    out = []
    for food in view.frame.detections:
        if food.behaviour != "at_mouth" or food.label not in labels or food.score < cfg.min_score:
            continue
        holder = _holder(view, food, cfg.near_face_factor)
        if holder is not None:
            out.append((food, holder))
    return out


# -- the rules --------------------------------------------------------------------------
def best_hit(hits: list[Hit]) -> Hit:
    """The evidence frame among a rule's hits: the highest score, the earliest on a tie."""
    return max(hits, key=lambda h: h[3])


def _finding(rule: str, frames: list[Hit], n: int, detail: str) -> Finding:
    """A finding from the frames where the condition held: the best frame is the
    evidence frame; confidence = mean detector score there x share of frames."""
    best = best_hit(frames)
    mean = sum(f[3] for f in frames) / len(frames)
    conf = round(min(1.0, mean * (0.5 + 0.5 * len(frames) / n)), 3)
    return Finding(rule, conf, best[0].frame.frame_index, list(best[1]), list(best[2]), detail=detail)


def away_frames(views: list[PeopleView]) -> list[PeopleView]:
    """The frames with nobody at the desk; the first is the evidence frame."""
    return [v for v in views if v.worker is None]


def rule_away(views: list[PeopleView], need: int) -> RuleResult:
    n = len(views)
    empty = away_frames(views)
    if len(empty) >= need:
        conf = round(len(empty) / n, 3)
        return RuleResult(
            "violation",
            f"nobody at the desk in {len(empty)}/{n} frames",
            Finding(
                "away_from_desk",
                conf,
                empty[0].frame.frame_index,
                detail=f"nobody at the desk in {len(empty)} of {n} frames",
            ),
        )
    return RuleResult("pass", f"someone at the desk in {n - len(empty)}/{n} frames")


def _best_per_frame(
    views: list[PeopleView], found_in: Callable[[PeopleView], list[tuple[Detection, Person]]]
) -> list[Hit]:
    """Per frame, the strongest object a rule found, with the person it belongs to."""
    hits = []
    for v in views:
        found = found_in(v)
        if found:
            obj, p = max(found, key=lambda h: h[0].score)
            dets, faces = p.evidence()
            hits.append((v, [obj, *dets], faces, obj.score))
    return hits


def phone_hits(views: list[PeopleView], policy: PolicyConfig) -> tuple[list[Hit], list[str]]:
    """Per frame, the strongest phone in use and whose it is; and what it was doing."""
    hits: list[Hit] = []
    kinds: list[str] = []
    for v in views:
        found = phones_in_use(v, policy)
        if found:
            phone, holder, kind = max(found, key=lambda h: h[0].score)
            dets, faces = holder.evidence() if holder is not None else ([], [])
            hits.append((v, [phone, *dets], faces, phone.score))
            kinds.append(kind)
    return hits, kinds


def rule_phone(views: list[PeopleView], need: int, policy: PolicyConfig) -> RuleResult:
    hits, kinds = phone_hits(views, policy)
    if len(hits) >= need:
        return RuleResult(
            "violation",
            f"phone in use in {len(hits)}/{len(views)} frames",
            _finding("phone_use", hits, len(views), phone_detail(kinds, len(views))),
        )
    return RuleResult("pass", f"phone in use in {len(hits)}/{len(views)} frames (need {need})")


def phone_detail(kinds: list[str], frames: int) -> str:
    """'a phone at the ear in 4 of 5 frames', or with a breakdown when the behaviour changed."""
    counts = sorted(((kinds.count(k), k) for k in set(kinds)), reverse=True)
    if len(counts) == 1:
        return f"a phone {PHONE_WORDS[counts[0][1]]} in {len(kinds)} of {frames} frames"
    parts = ", ".join(f"{PHONE_WORDS[k]} in {n}" for n, k in counts)
    return f"a phone in {len(kinds)} of {frames} frames ({parts})"


def hit_counts(views: list[PeopleView], policy: PolicyConfig) -> dict[str, Callable[[], int]]:
    """For each rule that counts frames, in how many of ``views`` its condition held, counted
    exactly as the rule counts its hits (each computed only when asked for)."""
    return {
        "away_from_desk": lambda: len(away_frames(views)),
        "phone_use": lambda: len(phone_hits(views, policy)[0]),
        "extra_person": lambda: len(extra_hits(views)),
        "presentation_attack": lambda: len(attack_hits(views, policy)),
        "eating": lambda: len(eating_hits(views, policy)),
    }


def closer_look_can_count(analyses: list[FrameAnalysis], remaining: int, policy: PolicyConfig) -> bool:
    """Can the phone stage still make phone_use or eating persist through this burst?

    ``analyses``: the burst's frames so far; ``remaining``: frames still to come. A rule
    needs hits in ``frames_needed(usable frames)``; each frame still to come adds at most
    one hit and one usable frame (a dark or covered one adds neither), so the most a rule
    can still reach is with every remaining frame usable and a hit. When that falls short
    for every rule the phone stage serves, the closer look cannot change the outcome: the
    hits are counted exactly as ``rule_phone`` and ``rule_eating`` count them (:func:`hit_counts`)."""
    live = [rule for rule in ("phone_use", "eating") if rule_enabled(policy, rule)]
    if not live:
        return False
    usable = [a for a in analyses if not a.light.low_light and not a.light.obstructed]
    need = frames_needed(len(usable) + remaining, policy.persistence)
    hits = hit_counts([people_view(a, policy) for a in usable], policy)
    return any(hits[rule]() + remaining >= need for rule in live)


def burst_settled(
    analyses: list[FrameAnalysis], remaining: int, policy: PolicyConfig, *, identity: bool = True
) -> bool:
    """Can the ``remaining`` frames still to come change no check's outcome? Then the burst
    can end here (``policy.end_settled_bursts``).

    Only a burst where every frame so far was checkable, and enough of them for the light
    gate, whatever follows. Then for each rule that is on, counted exactly as the rule
    counts (each frame still to come adds at most one hit):

    - the frame-counting rules (away_from_desk, phone_use, extra_person, presentation_attack,
      eating) cannot reach ``need`` even if every remaining frame is a hit: none has a
      finding to make, nor one whose frames and confidence could still change;
    - unrecognized_person cannot be a violation (too few unknown-face frames to reach
      ``need``, or no more of them than frames recognising the worker can become), and has
      a result already (a face checked): a scan with no result is ``skipped`` and one with a
      result is ``pass``, which ends the streak of unknown faces. ``identity=False`` (the
      vision stage checks no face: nobody enrolled) - no frame can give a result, the rule
      is ``skipped`` whatever comes;
    - idle_input: the worker was at the desk in ``need`` frames already (its outcome then
      depends on the activity report only), or cannot be any more (skipped).

    ``need`` is counted over the whole burst (the frames still to come included): the
    engine evaluates a settled burst the same way (``PolicyContext.unseen_frames``). The
    frames not taken can only have added hits below ``need``, so every outcome is the one
    the whole burst would have given; the reasons count the frames analysed."""
    if remaining <= 0 or not analyses:
        return False
    if any(a.light.low_light or a.light.obstructed for a in analyses):
        return False
    need = frames_needed(len(analyses) + remaining, policy.persistence)
    if len(analyses) < need:
        return False  # the light gate could still block the burst
    views = [people_view(a, policy) for a in analyses]
    for rule, count in hit_counts(views, policy).items():
        if rule_enabled(policy, rule) and count() + remaining >= need:
            return False
    if identity and rule_enabled(policy, "unrecognized_person"):
        unknown, known, _unchecked, uncertain = identity_hits(views, policy)
        can_fire = len(unknown) + remaining >= need and len(unknown) + remaining > known
        if can_fire or not (unknown or known or uncertain):
            return False
    if rule_enabled(policy, "idle_input"):
        present = len(present_frames(views))
        if need > present and present + remaining >= need:
            return False
    return True


def extra_hits(views: list[PeopleView]) -> list[Hit]:
    """The frames with someone besides the worker close to the camera or facing the screen."""
    hits: list[Hit] = []
    for v in views:
        if (v.extras and v.worker is not None) or len(v.extras) >= 2:
            dets: list[Detection] = []
            faces: list[Face] = []
            for p in v.extras:
                d, f = p.evidence()
                dets += d
                faces += f
            hits.append((v, dets, faces, max(p.score for p in v.extras)))
    return hits


def rule_extra(views: list[PeopleView], need: int) -> RuleResult:
    hits = extra_hits(views)
    if len(hits) >= need:
        k = max(len(h[0].extras) for h in hits)
        return RuleResult(
            "violation",
            f"another person in {len(hits)}/{len(views)} frames",
            _finding("extra_person", hits, len(views), f"{k} other person(s) close to the camera or facing the screen"),
        )
    return RuleResult("pass", f"another person in {len(hits)}/{len(views)} frames (need {need})")


def identity_hits(views: list[PeopleView], policy: PolicyConfig) -> tuple[list[Hit], int, int, int]:
    """The frames where the face at the desk is unknown; and how many showed the worker,
    how many had a face that was not checked, and how many one judged neither way
    ("uncertain": too far from the worker's templates to be the worker, too close to be
    surely somebody else)."""
    cfg = policy.rules.unrecognized_person
    unknown: list[Hit] = []
    known = unchecked = uncertain = 0
    for v in views:
        f = v.worker.own_face if v.worker else None  # a face not sure to be theirs is not judged
        if f is None or f.box.height < cfg.min_face_height:
            continue
        if f.identity is None:
            unchecked += 1
            continue
        if f.identity == "unknown":
            d = [v.worker.detection] if v.worker and v.worker.detection else []
            unknown.append((v, d, [f], f.score))
        elif f.identity == "worker":
            known += 1
        elif f.identity == "uncertain":
            uncertain += 1
    return unknown, known, unchecked, uncertain


def rule_unrecognized(views: list[PeopleView], need: int, policy: PolicyConfig) -> RuleResult:
    """This scan's verdict only; the engine turns it into N scans in a row."""
    unknown, known, unchecked, uncertain = identity_hits(views, policy)
    if not unknown and not known:
        if uncertain:
            # a result all the same: it ends a streak of unknown faces (the next scan must
            # start a new one), as a face that may be the worker's should
            return RuleResult(
                "pass",
                f"the face at the desk is neither surely the worker nor surely somebody else in {uncertain}/"
                f"{len(views)} frames (not judged)",
            )
        if unchecked:
            return RuleResult("skipped", "no identity result (is the worker enrolled?)")
        return RuleResult("skipped", "no face at the desk large enough to recognise")
    if len(unknown) >= need and len(unknown) > known:
        return RuleResult(
            "violation",
            f"unknown face in {len(unknown)}/{len(views)} frames",
            _finding("unrecognized_person", unknown, len(views), "the face at the desk is not the enrolled worker"),
        )
    undecided = f", not judged in {uncertain}" if uncertain else ""
    return RuleResult("pass", f"enrolled worker recognised in {known}/{len(views)} frames{undecided}")


def attack_hits(views: list[PeopleView], policy: PolicyConfig) -> list[Hit]:
    """The frames with a picture of a face at the desk and nobody there in person."""
    cfg, away = policy.rules.presentation_attack, policy.rules.away_from_desk
    zone = Box(*policy.desk_zone)
    hits: list[Hit] = []
    for v in views:
        shown = [
            p
            for p in v.pictures
            if p.face is not None and p.face.box.height >= cfg.min_face_height and p.in_zone(zone, away.min_overlap)
        ]
        if shown and v.worker is None:
            best = max(shown, key=lambda p: p.box.area)
            d, f = best.evidence()
            hits.append((v, d, f, f[0].score))
    return hits


def rule_presentation_attack(views: list[PeopleView], need: int, policy: PolicyConfig) -> RuleResult:
    """A picture of a face at the desk while nobody is there in person (a worker at the
    desk with a photo on the wall behind is no attack)."""
    hits = attack_hits(views, policy)
    if len(hits) >= need:
        cues = max((h[2][0] for h in hits), key=lambda f: f.score).spoof_cues
        return RuleResult(
            "violation",
            f"a picture of a face at the desk in {len(hits)}/{len(views)} frames",
            _finding(
                "presentation_attack",
                hits,
                len(views),
                f"a picture of a face (screen, print or phone) held up at the desk, nobody there in person ({cues})",
            ),
        )
    return RuleResult("pass", f"a picture of a face at the desk in {len(hits)}/{len(views)} frames (need {need})")


def eating_hits(views: list[PeopleView], policy: PolicyConfig) -> list[Hit]:
    """Per frame, the strongest food or drink at someone's mouth."""
    return _best_per_frame(views, lambda v: food_at_mouth(v, policy))


def rule_eating(views: list[PeopleView], need: int, policy: PolicyConfig) -> RuleResult:
    hits = eating_hits(views, policy)
    if len(hits) >= need:
        labels = sorted({h[1][0].label for h in hits})
        return RuleResult(
            "violation",
            f"food or drink at the mouth in {len(hits)}/{len(views)} frames",
            _finding(
                "eating",
                hits,
                len(views),
                f"food or drink at the mouth in {len(hits)} of {len(views)} frames: " + ", ".join(labels),
            ),
        )
    return RuleResult("pass", f"food or drink at the mouth in {len(hits)}/{len(views)} frames (need {need})")


def present_frames(views: list[PeopleView]) -> list[PeopleView]:
    """The frames with the worker at the desk; the first is idle_input's frame."""
    return [v for v in views if v.worker is not None]


def rule_idle(
    views: list[PeopleView], need: int, policy: PolicyConfig, idle: IdleReport | None, now: datetime
) -> RuleResult:
    cfg = policy.rules.idle_input
    if idle is None:
        return RuleResult("skipped", "no activity report received")
    age = (now - idle.reported_at).total_seconds()
    if age > cfg.stale_after_seconds:
        return RuleResult("skipped", f"last activity report is {age:.0f} s old (stale)")
    present = present_frames(views)
    if len(present) < need:
        return RuleResult("skipped", "worker not at the desk")
    idle_now = idle.idle_seconds + max(0.0, age)
    if idle_now > cfg.idle_seconds:
        best = present[0]
        return RuleResult(
            "violation",
            f"no input for {idle_now:.0f} s",
            Finding(
                "idle_input",
                0.9,
                best.frame.frame_index,
                evidence_refusal="rule",
                detail=f"no keyboard or mouse input for {idle_now / 60:.0f} min while at the desk",
            ),
        )
    return RuleResult("pass", f"last input {idle_now:.0f} s ago")


def run_people_rules(
    usable: list[FrameAnalysis],
    views: list[PeopleView],
    need: int,
    policy: PolicyConfig,
    confirming: bool,
    idle: IdleReport | None,
    now: datetime,
) -> dict[str, RuleResult]:
    """Every rule over the checkable frames of one burst."""
    del usable, confirming  # the views carry the frames; confirmation is the engine's
    return {
        "away_from_desk": rule_away(views, need),
        "phone_use": rule_phone(views, need, policy),
        "extra_person": rule_extra(views, need),
        "unrecognized_person": rule_unrecognized(views, need, policy),
        "presentation_attack": rule_presentation_attack(views, need, policy),
        "eating": rule_eating(views, need, policy),
        "idle_input": rule_idle(views, need, policy, idle, now),
    }


# -- which frames a scan must keep ----------------------------------------------------------
def evidence_frames(analyses: list[FrameAnalysis], policy: PolicyConfig) -> dict[int, PeopleView]:
    """The frames of a burst so far (``analyses``, in order) that may still become the
    evidence frame of a finding that carries a picture, whatever frames follow, each with
    its people view (who is who: what evidence blurs by).

    Each rule picks its frame as the first or the best of the frames where it held (the
    highest score, or the darkest; the earliest on a tie), among frames each judged on its
    own; so a frame that is not that pick among the frames so far never becomes it, and
    a frame let go never comes back. The picks are made by the rules' own functions.
    Rules that are off, and rules whose findings never carry a picture (``evidence_refusal``:
    the rule or the profile), need no frame."""
    dark = [a for a in analyses if a.light.low_light]
    covered = [a for a in analyses if a.light.obstructed]
    usable = [a for a in analyses if not a.light.low_light and not a.light.obstructed]
    views = [people_view(a, policy) for a in usable]

    def first(found: list[PeopleView]) -> int | None:
        return found[0].frame.frame_index if found else None

    def best(hits: list[Hit]) -> int | None:
        return best_hit(hits)[0].frame.frame_index if hits else None

    picks: dict[str, Callable[[], int | None]] = {
        "away_from_desk": lambda: first(away_frames(views)),
        "phone_use": lambda: best(phone_hits(views, policy)[0]),
        "extra_person": lambda: best(extra_hits(views)),
        "unrecognized_person": lambda: best(identity_hits(views, policy)[0]),
        "presentation_attack": lambda: best(attack_hits(views, policy)),
        "eating": lambda: best(eating_hits(views, policy)),
        "idle_input": lambda: first(present_frames(views)),
        "low_light": lambda: darkest(dark).frame_index if dark else None,
        "camera_obstructed": lambda: covered[0].frame_index if covered else None,
    }
    keep = set()
    for rule, pick in picks.items():
        if rule_enabled(policy, rule) and evidence_refusal(policy, rule) is None:
            frame = pick()
            if frame is not None:
                keep.add(frame)
    known = {v.frame.frame_index: v for v in views}
    # a dark or covered frame (low_light's, camera_obstructed's) gets its view here
    return {
        a.frame_index: known[a.frame_index] if a.frame_index in known else people_view(a, policy)
        for a in analyses
        if a.frame_index in keep
    }
