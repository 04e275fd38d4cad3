"""Remote jobs (in the spirit of AWS IoT Jobs): the signed job document and its progress.

The collector signs one document per job (``deskwatch_contract.signing``, schema
``deskwatch.job.signed/1``) and publishes the envelope **retained** on each target's
``jobs/notify``, so a device that is offline gets it when it reconnects; the device
answers on ``jobs/progress`` until a final status. The document::

    {"schema": "deskwatch.job/1", "job_id": "cfg-2026-11-29-a", "kind": "config",
     "targets": {"devices": ["acme/desk-0042"]} | {"sites": ["acme"]} | {"fleet": true},
     "issued_at": "2026-11-29T10:00:00Z", "expires_at": "2026-12-06T10:00:00Z",
     "config": {"set": {"schedule.scans_per_hour": 3}}}

A device is named with its site (``site/device_id``, as in its topics): device ids are
unique within a site only, and a job for ``acme/desk-1`` must not run on ``beta/desk-1``.
A bare device id is refused (documents signed before the site was named in them).

- ``config``: ``{"set": {dotted key: value}}``, applied to the device's config.yaml and
  validated exactly like ``deskwatch check-config`` before anything changes. The keys
  that make the device who it is (``device.id``, ``device.site``), its secrets
  (``mqtt.tls.*``, ``mqtt.password_file``) and ``state_dir`` cannot be set remotely.
- ``model``: ``{"file": "<a file in the models manifest>", "url", "sha256", "bytes"}``.
- ``software``: ``{"url", "sha256", "bytes", "version"}`` of a signed A/B update bundle,
  and ``"allow_downgrade": true`` when ``version`` may be older than the version the
  device runs (without it the device refuses an older bundle: an old, still signed
  release must not be installable by replaying its job).

The signature covers the sha256 of every artifact, so a download from anywhere is as
trustworthy as the document. Progress ``status`` values: ``received``, ``queued``,
``in_progress``, then one final ``succeeded``, ``failed`` (with ``rolled_back`` true when
the device went back to what it had) or ``rejected`` (never started: bad signature,
expired, not for this device, invalid change).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JOB_SCHEMA = "deskwatch.job/1"
ENVELOPE_SCHEMA = "deskwatch.job.signed/1"
PROGRESS_SCHEMA = "deskwatch.job.progress/1"
KINDS = ("config", "model", "software")
FINAL = ("succeeded", "failed", "rejected")
STATUSES = ("received", "queued", "in_progress", *FINAL)
JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
TARGET_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEVICE_TARGET = re.compile(r"[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}")  # site/device_id
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_ENVELOPE_BYTES = 64 * 1024
MAX_ARTIFACT_BYTES = 2 * 1024**3
# Never set remotely: who the device is, its secrets, where its state lives.
PROTECTED_KEYS = ("device.id", "device.site", "state_dir", "mqtt.tls", "mqtt.password_file", "mqtt.username")


class JobInvalid(ValueError):
    """The document is not a job this device may run; the message says why."""


@dataclass(frozen=True)
class Artifact:
    url: str
    sha256: str
    bytes: int
    file: str = ""  # model jobs: which model it replaces
    version: str = ""  # software jobs: the bundle's version
    allow_downgrade: bool = False  # software jobs: the version may be older than the running one


@dataclass(frozen=True)
class JobDocument:
    job_id: str
    kind: str
    targets: dict[str, Any]
    issued_at: datetime
    expires_at: datetime
    config_set: dict[str, Any] = field(default_factory=dict)
    artifact: Artifact | None = None

    def targets_device(self, site: str, device_id: str) -> bool:
        """Is the device ``site``/``device_id`` one this job is for (by name, by site, the fleet)?"""
        if self.targets.get("fleet") is True:
            return True
        return f"{site}/{device_id}" in self.targets.get("devices", ()) or site in self.targets.get("sites", ())


def _time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise JobInvalid(f"{name} must be an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise JobInvalid(f"{name} = {value[:40]!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise JobInvalid(f"{name} must carry a time zone (Z)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first time there is in UTC
        raise JobInvalid(f"{name} = {value[:40]!r} is out of range") from None


def _artifact(data: Any, kind: str) -> Artifact:
    if not isinstance(data, dict):
        raise JobInvalid(f"a {kind} job needs a {kind!r} object")
    url, sha, size = data.get("url"), data.get("sha256"), data.get("bytes")
    if not isinstance(url, str) or not url.startswith(("https://", "http://", "file://")) or len(url) > 2048:
        raise JobInvalid(f"{kind}.url must be an http(s) or file URL")
    if not isinstance(sha, str) or not SHA256.fullmatch(sha):
        raise JobInvalid(f"{kind}.sha256 must be 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_ARTIFACT_BYTES:
        raise JobInvalid(f"{kind}.bytes must be a whole number from 1 to {MAX_ARTIFACT_BYTES}")
    file = data.get("file", "")
    version = data.get("version", "")
    if kind == "model" and (not isinstance(file, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,96}\.tflite", file)):
        raise JobInvalid("model.file must name a .tflite file of the models manifest")
    if kind == "software" and (not isinstance(version, str) or not re.fullmatch(r"[0-9A-Za-z.+-]{1,40}", version)):
        raise JobInvalid("software.version must be a version such as 0.2.0")
    downgrade = data.get("allow_downgrade", False) if kind == "software" else False
    if not isinstance(downgrade, bool):
        raise JobInvalid("software.allow_downgrade must be true or false")
    return Artifact(url, sha, size, str(file), str(version), downgrade)


def parse_document(data: dict[str, Any], now: datetime | None = None) -> JobDocument:
    """A validated job document; JobInvalid names the first problem."""
    if data.get("schema") != JOB_SCHEMA:
        raise JobInvalid(f"schema must be {JOB_SCHEMA!r}")
    job_id = data.get("job_id")
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise JobInvalid("job_id must be 1-64 of A-Z a-z 0-9 . _ : -")
    kind = data.get("kind")
    if kind not in KINDS:
        raise JobInvalid(f"kind must be one of {', '.join(KINDS)}")
    targets = data.get("targets")
    if not isinstance(targets, dict) or not targets:
        raise JobInvalid("targets must be {devices: [site/device, ...]}, {sites: [...]} or {fleet: true}")
    for key, value in targets.items():
        if key == "fleet":
            if value is not True:
                raise JobInvalid("targets.fleet must be true")
        elif key == "sites":
            if not isinstance(value, list) or not all(isinstance(v, str) and TARGET_ID.fullmatch(v) for v in value):
                raise JobInvalid("targets.sites must be a list of site ids")
        elif key == "devices":
            if not isinstance(value, list) or not all(isinstance(v, str) and DEVICE_TARGET.fullmatch(v) for v in value):
                raise JobInvalid(
                    "targets.devices must be a list of site/device (e.g. acme/desk-0042): "
                    "a device id alone names a desk at every site"
                )
        else:
            raise JobInvalid(f"targets.{key[:40]}: unknown (devices, sites, fleet)")
    issued, expires = _time(data.get("issued_at"), "issued_at"), _time(data.get("expires_at"), "expires_at")
    if expires <= issued:
        raise JobInvalid("expires_at must be after issued_at")
    if now is not None and now >= expires:
        raise JobInvalid(f"the job expired at {expires:%Y-%m-%d %H:%M} UTC")
    if kind == "config":
        change = data.get("config")
        if not isinstance(change, dict) or not isinstance(change.get("set"), dict) or not change["set"]:
            raise JobInvalid("a config job needs config.set: {dotted.key: value, ...}")
        for key in change["set"]:
            if not re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", key):
                raise JobInvalid(f"config.set key {key[:60]!r} must be a dotted name such as schedule.scans_per_hour")
            if any(key == p or key.startswith(p + ".") or p.startswith(key + ".") for p in PROTECTED_KEYS):
                raise JobInvalid(f"{key} cannot be changed remotely (identity, secrets and state stay as provisioned)")
        return JobDocument(job_id, kind, targets, issued, expires, config_set=dict(change["set"]))
    return JobDocument(job_id, kind, targets, issued, expires, artifact=_artifact(data.get(kind), kind))


def progress_payload(
    site: str,
    device_id: str,
    job_id: str,
    status: str,
    *,
    kind: str | None = None,
    step: str = "",
    detail: str = "",
    rolled_back: bool = False,
    version: str = "",
    at: datetime | None = None,
) -> dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"unknown job status {status!r}")
    when = (at or datetime.now(UTC)).astimezone(UTC)
    return {
        "schema": PROGRESS_SCHEMA,
        "site": site,
        "device_id": device_id,
        "job_id": job_id,
        "kind": kind,
        "status": status,
        "step": step[:64],
        "detail": detail[:500],
        "rolled_back": rolled_back,
        "version": version,
        "at": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
    }
