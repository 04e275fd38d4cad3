"""Topic names: one prefix per device, ``deskwatch/v1/{site}/{device_id}/``.

Suffixes below the prefix (see ``docs/mqtt-contract.md`` for who publishes and who
reads each one):
"""

from __future__ import annotations

ROOT = "deskwatch/v1"
# A site or device id: it becomes a topic level (no "/", "+", "#", spaces).
ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
ID_HINT = "must be 1-64 letters, digits, _ or - (it becomes an MQTT topic level)"

STATUS = "status"  # retained; also the Last Will
EVENT = "event"
EVIDENCE = "evidence/"  # + event_id: the only topic that carries an image
SCAN = "scan"
HEALTH = "health"
SELFTEST = "selftest"  # a technician's broker probe
CMD_PAUSE = "cmd/pause"
CMD_RESUME = "cmd/resume"
CMD_SCAN = "cmd/scan"
CMD_RESULT = "cmd/result"
ACTIVITY = "activity"
JOBS_NOTIFY = "jobs/notify"  # retained, collector -> device: the signed job (deskwatch_contract.jobs)
JOBS_PROGRESS = "jobs/progress"  # device -> collector: each step and the outcome
REVIEWS = "reviews"  # retained, collector -> device: how its recent findings were received and reviewed

# What a device accepts, and the command kind each becomes (see intake.py).
COMMAND_TOPICS = {CMD_PAUSE: "pause", CMD_RESUME: "resume", CMD_SCAN: "scan", ACTIVITY: "activity"}


def prefix(site: str, device_id: str) -> str:
    """``deskwatch/v1/{site}/{device_id}/`` (with the trailing slash)."""
    return f"{ROOT}/{site}/{device_id}/"


def evidence(event_id: str) -> str:
    return EVIDENCE + event_id
