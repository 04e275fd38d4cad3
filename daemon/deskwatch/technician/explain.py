"""``deskwatch policy show``: the effective rules and, in plain language, what the
device captures, checks, sends and keeps, and for how long. This is the text an
employer puts in front of the worker, so it is derived from the config, never
written by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from deskwatch.config import Config
from deskwatch.policy.profiles import (
    RULES,
    evidence_refusal,
    identity_allowed,
    phone_behaviours,
    profile_of,
    rule_enabled,
)
from deskwatch.system.control import control_socket_path


def evidence_allowed(cfg: Config, rule: str) -> bool:
    """May a finding of ``rule`` carry a thumbnail on this device (policy and evidence switch)?"""
    return cfg.evidence.enabled and evidence_refusal(cfg.policy, rule) is None


def random_scans(cfg: Config) -> bool:
    """Does this device scan at random times? The profile must allow it and the schedule do it
    (a full-profile device on fixed times makes no random scan)."""
    return profile_of(cfg.policy).random_scans and cfg.schedule.mode == "random"


def on_demand_per_hour(cfg: Config) -> int:
    """How many checks requested from the central side (cmd/scan) the device accepts an hour:
    none where the profile allows scheduled checks only (as the daemon admits them)."""
    return cfg.schedule.remote_scans_per_hour if profile_of(cfg.policy).random_scans else 0


def profile_overrides(cfg: Config) -> tuple[list[str], list[str]]:
    """(rules the configuration switched on beyond the profile, rules it switched off of it):
    the design lets the config override any rule the law allows; the notice must then not
    describe the profile alone."""
    profile = profile_of(cfg.policy)
    also = [r for r in RULES if rule_enabled(cfg.policy, r) and r not in profile.rules]
    without = [r for r in RULES if not rule_enabled(cfg.policy, r) and r in profile.rules]
    return also, without


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True)
class TemplateStatus:
    """Whether the worker's face template exists on this device (what the notice may claim),
    whether or not this configuration uses it."""

    state: str  # "enrolled", "missing", "unreadable" (this user may not look)
    enrolled_at: datetime | None = None

    def as_json(self) -> dict[str, object]:
        return {"state": self.state, "enrolled_at": self.enrolled_at.isoformat() if self.enrolled_at else None}


def template_status(cfg: Config) -> TemplateStatus:
    """Look (stat only: the template is never read) for the worker's face template. Also
    where no identity check is made: a template enrolled under another profile or config
    stays on the device until someone deletes it, and the notice must say it is kept."""
    from deskwatch.vision.identity import template_path

    try:
        st = template_path(cfg.state_dir, cfg.device.worker_id).stat()
    except FileNotFoundError:
        return TemplateStatus("missing")
    except (OSError, ValueError):  # e.g. templates/ is 0700 and this user is not the service
        return TemplateStatus("unreadable")
    return TemplateStatus("enrolled", datetime.fromtimestamp(st.st_mtime, UTC))


def _template_file(cfg: Config) -> str:
    from deskwatch.vision.identity import template_path

    try:
        return str(template_path(cfg.state_dir, cfg.device.worker_id))
    except ValueError:  # a worker id that cannot name a file: the directory, then
        return str(Path(cfg.state_dir) / "templates")


def _days(days: list[str]) -> str:
    order = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    idx = sorted(order.index(d) for d in days if d in order)
    if idx and idx == list(range(idx[0], idx[-1] + 1)) and len(idx) > 2:
        return f"{order[idx[0]].capitalize()}-{order[idx[-1]].capitalize()}"
    return ", ".join(order[i].capitalize() for i in idx)


def rule_sentence(cfg: Config, rule: str) -> str:
    """What the rule looks for, with its thresholds, in one sentence."""
    r = cfg.policy.rules
    need = f"{cfg.policy.persistence:.0%} of the frames of a scan"
    if rule == "away_from_desk":
        a = r.away_from_desk
        return (
            f"Nobody at the desk in {need}; reported only if a second scan "
            f"{a.confirm_after_seconds:.0f} s later also finds nobody."
        )
    if rule == "phone_use":
        words = {"at_ear": "at the ear", "in_hand": "in the hand", "visible_on_desk": "anywhere on the desk"}
        counted = " or ".join(
            words[b] for b in ("at_ear", "in_hand", "visible_on_desk") if b in phone_behaviours(cfg.policy)
        )
        return (
            f"A phone {counted} in {need}, seen by both detectors of the phone stage (score at least "
            f"{r.phone_use.min_score:.2f}); a hand at the face without a phone does not count."
        )
    if rule == "extra_person":
        e = r.extra_person
        return (
            f"Someone other than the worker close to the camera (covering {e.near_box_area:.0%} of "
            f"the picture or more) or facing the screen, in {need}. People further away who are not "
            "facing the screen are bystanders: counted, blurred in any image, never reported. A face "
            "with a frame close round it on all four sides (a poster, a framed photo or a TV on the "
            "wall) is a picture, not a person: blurred like a bystander, never reported."
        )
    if rule == "unrecognized_person":
        return (
            f"The face at the desk is not the enrolled worker's in "
            f"{r.unrecognized_person.consecutive_checks} scans in a row (identity check on the device)."
        )
    if rule == "presentation_attack":
        return (
            f"A photo, screen or phone showing a face held up at the desk while nobody is there in person, in "
            f"{need}. Such a picture never counts as the worker being present (liveness check on the device)."
        )
    if rule == "eating":
        return f"Food or a drink at the mouth in {need}, seen by both detectors (an object only held near the face does not count)."
    if rule == "idle_input":
        i = r.idle_input
        return (
            f"No keyboard or mouse input reported for more than {i.idle_seconds / 60:.0f} min while the "
            "worker is at the desk and not paused (only from the activity reports the desk computer sends)."
        )
    if rule == "low_light":
        return "Too dark to check anything; then no other rule is applied to that scan."
    if rule == "camera_obstructed":
        return "The camera is covered or pointed away; then no other rule is applied to that scan."
    if rule == "pause_overrun":
        return (
            f"A pause lasted more than its declared minutes plus {r.pause_overrun.grace_seconds:.0f} s "
            "and the worker showed no sign of being back."
        )
    return ""


def explain(cfg: Config, template: TemplateStatus | None = None) -> str:
    prof = profile_of(cfg.policy)
    template = template or template_status(cfg)
    worker = cfg.device.worker_id
    s, cam, ev = cfg.schedule, cfg.camera, cfg.evidence
    enabled = [r for r in RULES if rule_enabled(cfg.policy, r)]
    images = cfg.evidence.enabled and prof.images_leave and any(evidence_allowed(cfg, r) for r in enabled)
    lines: list[str] = []
    add = lines.append

    add(f"deskwatch policy for desk {cfg.device.id} (site {cfg.device.site}, worker {cfg.device.worker_id})")
    also, without = profile_overrides(cfg)
    if also or without:
        changed = "; ".join(
            [*([f"also {_listed(also)}"] if also else []), *([f"without {_listed(without)}"] if without else [])]
        )
        add(
            f"Profile: {prof.name}, with overrides in this device's configuration: {changed} "
            f"(the profile alone: {prof.summary})."
        )
    else:
        add(f"Profile: {prof.name} - {prof.summary}.")
    add("")
    add("WHAT THE DEVICE CAPTURES")
    shifts = "; ".join(f"{_days(sh.days)} {sh.start}-{sh.end}" for sh in s.shifts)
    add(f"- Checks only during working hours: {shifts} ({s.timezone} time). Never outside them.")
    if s.mode == "random":
        add(
            f"- About {s.scans_per_hour:g} checks per hour at unpredictable times, at least "
            f"{s.min_gap_minutes:g} min apart."
        )
    elif s.mode == "fixed":
        times = ", ".join(s.fixed_times) or "(none listed)"
        if on_demand_per_hour(cfg):  # "only" would deny the checks on request below
            add(f"- Scheduled checks at fixed times: {times}. No random checks.")
        else:
            add(f"- Checks at fixed times only: {times}. No random checks.")
    else:
        add(f"- A check every {s.interval_seconds} s (test or installation mode).")
    on_demand = on_demand_per_hour(cfg)
    if on_demand:
        clock = " or while the device's clock is not synchronised" if s.require_synced_clock else ""
        add(
            f"- Also checks on request from the central side (a supervisor): at most {on_demand} an hour, only"
            f" during working hours, never while the worker is paused{clock}. Every request, accepted or"
            " refused, is recorded in the log the worker can read with 'deskwatch history'."
        )
    elif not prof.random_scans:
        add(
            f"- No checks on request: the {prof.name} profile allows the scheduled checks only; a request from"
            " the central side is refused and recorded in the log ('deskwatch history')."
        )
    else:
        add(
            "- No checks on request: this device refuses them (schedule.remote_scans_per_hour is 0); a request"
            " from the central side is refused and recorded in the log ('deskwatch history')."
        )
    warmup = (
        f" (and about {cam.warmup_seconds:g} s before them while it adjusts to the light: those frames are"
        " thrown away unseen)"
        if cam.warmup_seconds > 0
        else ""
    )
    add(
        f"- A check takes {cam.burst_frames} still pictures over {cam.burst_seconds:g} s. The camera is "
        f"switched on only for that{warmup} and off in between."
    )
    add(
        "- Besides the checks, a technician at the device may switch the camera on at any hour: to test it"
        " ('deskwatch selftest'), to aim it ('deskwatch aim') or, with the worker's consent, to enrol the"
        " worker's face ('deskwatch enroll'). Each use is recorded in the log ('deskwatch history'); none sends"
        " a picture, and a framing picture a technician asks for is kept on the device with everyone but the"
        " worker blurred, which the log says too."
    )
    if rule_enabled(cfg.policy, "away_from_desk"):
        add(
            f"- If nobody is at the desk, a second check follows "
            f"{cfg.policy.rules.away_from_desk.confirm_after_seconds:.0f} s later to confirm."
        )
    add("- No video and no sound are ever recorded. The pictures are analysed on the device and then discarded.")
    add("")
    add("WHAT IT CHECKS")
    width = max(len(r) for r in RULES)
    for r in RULES:
        on = r in enabled
        add(f"  {r:<{width}}  {'ON ' if on else 'off'}  {rule_sentence(cfg, r) if on else ''}".rstrip())
    identity = identity_allowed(cfg.policy)
    # what makes no identity check here: the profile (by law), else the configuration
    no_identity = f"the {prof.name} profile" if not prof.identity else "the configuration"
    template_file = _template_file(cfg)
    if not identity:
        stored = {
            "enrolled": f" Worker {worker}'s face template from an earlier enrolment is still stored on this device,"
            " unused (see below).",
            "unreadable": " Whether a face template from an earlier enrolment is still stored, this user may not"
            " look (run with sudo to see).",
        }.get(template.state, "")
        add(f"- Identity: no identity check is made; faces are only detected, never recognised.{stored}")
    elif template.state == "enrolled":
        add(f"- Identity: the face at the desk is compared with worker {worker}'s face template on the device.")
    elif template.state == "missing":
        add(
            f"- Identity: no face template of worker {worker} exists on this device, so no face is recognised and"
            " unrecognized_person is skipped until a technician enrols the worker (deskwatch enroll --consent)."
        )
    elif template.state == "unreadable":
        add(
            "- Identity: the face at the desk is compared with the enrolled worker's face template, if one exists;"
            " this user may not look in the service's state directory (run with sudo to see whether it does)."
        )
    add("")
    add(f"WHAT IT SENDS (to {cfg.mqtt.host}, {'encrypted with TLS' if cfg.mqtt.tls.enabled else 'WITHOUT encryption'})")
    add("- For each finding: the rule, the time, a confidence and the outline boxes of what caused it.")
    if images:
        # who a picture shows besides the worker: deskwatch.domain.PeopleView.sharp
        shown = [
            text
            for rule, text in (
                (
                    "extra_person",
                    "the picture of an extra_person finding also shows the second person close to"
                    " the camera or facing the screen",
                ),
                ("presentation_attack", "that of a presentation_attack finding the face held up on a screen or print"),
            )
            if rule in enabled and evidence_allowed(cfg, rule)
        ]
        if shown:  # "that of" reads only after "the picture of"
            shown[0] = shown[0].replace(
                "that of a presentation_attack finding", "the picture of a presentation_attack finding also shows"
            )
        besides = ", and ".join(shown)
        add(
            f"- With most findings, one small picture (at most {ev.max_width}x{ev.max_height} pixels, "
            f"{ev.max_bytes // 1000} KB), with the boxes drawn and everyone but the worker blurred beyond "
            "recognition before the picture is made"
            + (f"; only {besides}." if besides else ".")
            + " No picture for idle input, pauses, darkness or a covered camera."
        )
    else:
        add("- No pictures: no image ever leaves the device.")
    add("- For every check: a record of when it ran, which rules were applied and the outcome (no pictures).")
    add("- Device health (connection, disk, temperature, queue length); no personal data.")
    add("- Never sent: video, sound, face templates, pictures of checks that found nothing.")
    add("")
    add("WHAT IT KEEPS ON THE DEVICE, AND FOR HOW LONG")
    # there is no deskwatch command to delete a template: the file is removed
    delete = f"A technician deletes it by removing {template_file} (sudo rm {template_file})."
    if not identity and template.state == "enrolled":
        when = f", stored {template.enrolled_at.astimezone().strftime('%Y-%m-%d')}" if template.enrolled_at else ""
        add(
            f"- Worker {worker}'s face template{when}, readable only by the device service. It is not used:"
            f" {no_identity} makes no identity check. It stays until it is deleted. {delete} It is never sent."
        )
    elif not identity and template.state == "unreadable":
        add(
            f"- A face template of worker {worker} from an earlier enrolment, if one is still stored (this user"
            f" may not look: run with sudo to see); it is not used: {no_identity} makes no identity check. {delete}"
            " It is never sent."
        )
    elif not identity:
        add("- No face template is stored on this device.")
    elif template.state == "enrolled" and template.enrolled_at is not None:
        add(
            f"- Worker {worker}'s face template, stored {template.enrolled_at.astimezone().strftime('%Y-%m-%d')},"
            f" readable only by the device service, until re-enrolment or removal. {delete} It is never sent."
        )
    elif template.state == "missing":
        add("- No face template: none has been enrolled on this device.")
    elif template.state == "unreadable":
        add(
            "- The enrolled worker's face template, if one was enrolled, readable only by the device service,"
            " until re-enrolment or removal. It is never sent."
        )
    add(
        f"- Messages waiting while the network is down: at most {cfg.outbox.max_age_days} days"
        + (
            f"; a picture that could not be delivered is deleted after {ev.retention_days} days and its event says so."
            if images
            else "."
        )
    )
    add(
        f"- A log of every check and pause (times, rules, outcomes; no pictures) for {ev.retention_days} days. "
        "The worker can read it on the device with 'deskwatch history'."
    )
    add("")
    add("PAUSES")
    add(
        f"- 'deskwatch pause --reason \"fetch water\" --minutes 5' (1 to {cfg.policy.max_pause_minutes} min) "
        "stops all checks; they restart by themselves when the time is up, or with 'deskwatch resume'."
    )
    add(
        "- Every pause and resume is logged with its reason."
        + (
            " A pause that runs past its declared time without the worker coming back is reported as pause_overrun."
            if "pause_overrun" in enabled
            else ""
        )
    )
    add(f"  (control socket: {control_socket_path(cfg.state_dir)})")
    return "\n".join(lines) + "\n"


def effective_rules_table(cfg: Config) -> list[dict[str, object]]:
    """Machine-readable form (``deskwatch policy show --json``)."""
    out: list[dict[str, object]] = []
    for r in RULES:
        rc = getattr(cfg.policy.rules, r)
        thresholds = {k: v for k, v in vars(rc).items() if k != "enabled"}
        out.append(
            {
                "rule": r,
                "enabled": rule_enabled(cfg.policy, r),
                "override": rc.enabled,
                "evidence": evidence_allowed(cfg, r),
                "thresholds": thresholds,
            }
        )
    return out
