"""The desk handed to another worker: what the device keeps of the previous one, and what it stops doing.

An appliance passes from one worker to another when an employee leaves: the technician
provisions it again for the new worker (or edits ``device.worker_id``), perhaps at another
site. ``<state_dir>/worker.json`` records whom the device works for (``worker_id``, ``site``
and ``since``, the moment the daemon took over from a previous worker; null for the first
worker it knew). At its start, before it sends anything under the new worker's id, the
daemon compares that record with its config (:func:`take_over`); on a change it

- ends the previous worker's pause: it was theirs, and an overrun of it would have been
  reported as a ``pause_overrun`` of the new worker, with the previous worker's reason;
- deletes every other worker's face templates (biometric data of a person the device no
  longer checks has no purpose there); the new worker's, if already enrolled, stay;
- records the change in the audit trail (``worker_changed``) and in ``worker.json``, from
  which ``deskwatch history`` shows only what happened since (:func:`shown_since`).

Never relabelled: an event queued before the change carries the previous worker's id in
its payload and goes out as it is. The audit trail keeps the previous worker's entries for
its retention (the promise that every scan is auditable), in the state directory only the
service user and root can read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from deskwatch.domain import PauseInfo, rfc3339
from deskwatch.system.files import remove, write_atomically

log = logging.getLogger(__name__)

FILENAME = "worker.json"


class Trail(Protocol):
    def record_event(self, kind: str, at: datetime, detail: dict[str, object]) -> None: ...

    def save_pause(self, pause: PauseInfo | None) -> None: ...

    def load_pause(self) -> PauseInfo | None: ...


@dataclass(frozen=True)
class Holder:
    """Whom the device works for, and since when (None: since before the device kept this)."""

    worker_id: str
    site: str
    since: str | None = None
    # 'deskwatch provision --new-holder': the same id now names another person (the collector's
    # 'users add ... --new-holder'); the next start takes the desk over as from another worker
    new_holder: bool = False

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"worker_id": self.worker_id, "site": self.site, "since": self.since}
        if self.new_holder:
            d["new_holder"] = True
        return d


@dataclass(frozen=True)
class Handover:
    """A change of worker (or site) the daemon took at its start."""

    previous: Holder
    current: Holder


def record_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / FILENAME


def read_holder(state_dir: str | Path) -> Holder | None:
    """The recorded holder; None when none is recorded (or the record cannot be read)."""
    try:
        d = json.loads(record_path(state_dir).read_text(encoding="utf-8"))
        since = d.get("since")
        return Holder(
            str(d["worker_id"]), str(d["site"]), str(since) if since is not None else None, d.get("new_holder") is True
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("cannot read %s (%s): taken as no worker recorded", record_path(state_dir), exc)
        return None


def _write(state_dir: str | Path, holder: Holder, owner: tuple[int, int] | None = None) -> None:
    write_atomically(record_path(state_dir), json.dumps(holder.to_json()).encode(), 0o600, owner)


def mark_new_holder(state_dir: str | Path, worker_id: str, site: str) -> bool:
    """Record that ``worker_id`` now names another person than the one the device worked for,
    and delete that id's face templates, the previous holder's ('deskwatch new-holder', run by
    root: the record is the state directory's owner's, the daemon's user, and no link in that
    directory is followed). False when the device never ran (no state directory)."""
    directory = Path(state_dir)
    if not directory.is_dir():
        return False
    st = directory.stat()
    before = read_holder(directory)
    if before is not None and (before.worker_id, before.site) != (worker_id, site):
        return True  # another worker already: the next start takes the change over anyway
    _write(directory, Holder(worker_id, site, before.since if before else None, True), (st.st_uid, st.st_gid))
    # the templates under this id are the previous holder's: gone now, so that the new holder
    # can be enrolled before the service's next start (which keeps the current id's templates)
    from deskwatch.vision.identity import template_path

    remove(template_path(directory, worker_id))
    return True


def take_over(state_dir: str | Path, worker_id: str, site: str, trail: Trail, now: datetime) -> Handover | None:
    """Compare the recorded holder with the configured one; on a change, end the previous
    worker's pause, record the change, and return it (None: same worker, or the first one)."""
    before = read_holder(state_dir)
    if before is None:  # the first start (or the first with this record): every entry is this worker's
        _write(state_dir, Holder(worker_id, site))
        return None
    if (before.worker_id, before.site) == (worker_id, site) and not before.new_holder:
        return None
    current = Holder(worker_id, site, rfc3339(now))
    detail: dict[str, object] = {
        "new_holder": before.new_holder,
        "from_worker": before.worker_id,
        "from_site": before.site,
        "to_worker": worker_id,
        "to_site": site,
    }
    pause = trail.load_pause()
    if pause is not None:
        trail.save_pause(None)
        # when, not why: the reason stays in the pause's own entry, which the new worker is not shown
        detail["pause_ended"] = {k: v for k, v in pause.to_json().items() if k != "reason"}
    gone, left = forget_templates(state_dir, worker_id)
    if gone:
        detail["templates_deleted"] = gone
    if left:
        detail["templates_left"] = left
    trail.record_event("worker_changed", now, detail)
    _write(state_dir, current)  # after the trail: a crash before it takes the change over again
    log.warning(
        "this desk was handed from worker %s (site %s) to worker %s (site %s): %s",
        before.worker_id,
        before.site,
        worker_id,
        site,
        "the previous worker's pause ended, not reported" if pause is not None else "no pause was running",
        extra={"journal": {"DESKWATCH_EVENT": "worker_changed", "WORKER_ID": worker_id}},
    )
    if gone:
        log.warning(
            "deleted the face templates of %s from this device: biometric data of people it no longer checks",
            ", ".join(gone),
            extra={"journal": {"DESKWATCH_EVENT": "templates_deleted"}},
        )
    return Handover(before, current)


def forget_templates(state_dir: str | Path, keep: str) -> tuple[list[str], list[str]]:
    """Delete every worker's face templates but ``keep``'s: (whose went, whose could not).

    A template of a person the device no longer checks is biometric data kept without a
    purpose. ``keep``'s stay: the technician may have enrolled the new worker already."""
    from deskwatch.vision.identity import template_path, templates_dir

    directory = templates_dir(state_dir)
    try:
        names = sorted(p.name for p in directory.iterdir())
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        log.error("cannot list the face templates in %s to delete the previous worker's: %s", directory, exc)
        return [], [str(directory)]
    kept = template_path(state_dir, keep).name
    gone: list[str] = []
    left: list[str] = []
    for name in names:
        if name == kept:
            continue
        worker = name.removesuffix(".npz")
        try:
            (directory / name).unlink()
            gone.append(worker)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.error("could not delete the face templates %s of a previous worker: %s", directory / name, exc)
            left.append(worker)
    return gone, left


def shown_since(state_dir: str | Path, worker_id: str, site: str, now: datetime) -> tuple[str | None, Holder | None]:
    """From when the trail is this worker's to see (RFC 3339; None: all of it), and the
    recorded holder. A config that names another worker than the record (provisioned again,
    the daemon not yet started) shows nothing before ``now``: all of it is someone else's."""
    holder = read_holder(state_dir)
    if holder is None:
        return None, None
    if (holder.worker_id, holder.site) != (worker_id, site) or holder.new_holder:
        return rfc3339(now), holder
    return holder.since, holder
