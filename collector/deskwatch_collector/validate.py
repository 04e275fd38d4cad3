"""Topic parsing and payload validation against the contract's JSON Schemas.

Every message is checked before anything is stored: the topic must be a contract topic,
the payload a UTF-8 JSON object within the size cap that validates against the schema of
its kind, and the ``site``/``device_id`` inside must equal the topic levels (a device
cannot speak for another one even where the broker ACL is missing).

What a schema alone lets through is refused here too, each with its own reason, so that
nothing reaches the database that the database, a date parser or a JSON encoder would
choke on later:

- ``not_finite``: NaN, Infinity (and numbers too large for a float, which parse as
  infinity); one of them in a stored ``health`` made ``/api/fleet`` invalid JSON;
- ``out_of_range``: an integer outside a signed 64-bit column (``seq`` >= 2**63, also written
  ``1e300``, which JSON Schema counts as an integer);
- ``bad_time``: a ``date-time`` that is not a real instant (month 13, offset ``+99:99``) or
  is one outside 1970-01-01T00:00:00Z to 2099-12-31T23:59:59.999Z (:data:`FIRST_INSTANT`,
  :data:`END_INSTANT`): a real instant such as ``9999-12-31T23:59:59-01:00`` (year 10000 in
  UTC) is a clock gone wrong, and no calendar or time zone could show it;
- ``bad_text``: a string or a key holding U+0000 or a lone UTF-16 surrogate (``"\\ud800"``):
  JSON's escapes let both through, but PostgreSQL cannot store U+0000 in a text column and
  neither backend can encode a lone surrogate, so such a message was kept only as an
  ``internal_error`` (and on SQLite, U+0000 alone was stored): refused the same on both;
- ``bad_json``: not UTF-8, not JSON, duplicate keys, nested too deep, not an object.

Evidence sealed on the device to the collector's public key (contract 1.1) is opened
here with the private keys given (``--evidence-key``, several during a key rotation):
from then on it is the JPEG it was on the device, checked against its event's sha256
like unsealed evidence. Sealed evidence no key opens is rejected and counted.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

from deskwatch_contract import load_schema, sealing
from deskwatch_contract.jsonutil import JsonRejected, loads_object

TOPIC_ROOT = "deskwatch/v1"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
JSON_KINDS = ("event", "scan", "status", "health")
SUBSCRIBED_KINDS = ("event", "evidence/+", "scan", "status", "health")
MAX_JSON_BYTES = 64 * 1024
MAX_EVIDENCE_BYTES = 2 * 1024 * 1024
# The largest thumbnail a device makes (evidence.max_width 1280 x max_height 960). A JPEG's frame
# header may claim far more in a few hundred bytes: a progressive one of 13000x13000 (539 bytes)
# took 512 MB to show in the worker's desk window, whatever the size it is shown at.
MAX_EVIDENCE_SIDE = 1280
INT64 = (-(2**63), 2**63 - 1)
# The instants a contract time may name. From the epoch: a Raspberry Pi without a real-time
# clock starts there until its time is synchronised, and its messages are still the
# device's (a status ``since`` 1970 from a reflashed Pi must be taken). Before 2100: far
# past any device's lifetime (a clock years ahead is still stored, and its photo expires
# by arrival time), and every instant in the span shows in every zone; year 10000 in UTC
# made every console page showing it fail.
FIRST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
END_INSTANT = datetime(2100, 1, 1, tzinfo=UTC)

_formats = FormatChecker(formats=())


@_formats.checks("date-time", raises=ValueError)
def _real_instant(value: object) -> bool:
    """An RFC 3339 time that names a real instant from 1970 to 2099 in UTC (the schema's
    pattern checks only the shape); the ValueError says what is wrong with it."""
    if not isinstance(value, str):
        return True
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("no UTC offset")
    if not FIRST_INSTANT <= parsed < END_INSTANT:  # aware datetimes compare as instants, never overflow
        raise ValueError("not between 1970-01-01 and 2099-12-31 in UTC: is the device's clock set?")
    return True


def _time_error(error: ValidationError) -> ValidationError | None:
    """The ``date-time`` check that failed in ``error``, also inside a ``oneOf`` (a time or
    null, like ``health.last_scan_at``): that is a ``bad_time``, not a shape the schema refuses."""
    stack = [error]
    while stack:
        item = stack.pop()
        if item.validator == "format":
            return item
        stack.extend(item.context or ())
    return None


# U+0000 (PostgreSQL text cannot hold it) and lone surrogates (no UTF-8 encoding exists).
UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def _storable_text(value: Any, kind: str) -> None:
    """Raise :class:`Rejected` (``bad_text``) for a string or key holding U+0000 or a lone
    surrogate, anywhere; the detail names the field and the character."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        texts: list[tuple[str, str]] = []
        if isinstance(item, dict):
            for key, sub in item.items():
                inner = f"{path}/{key}" if path else key
                texts.append((f"{path or '(root)'}: a key", key))
                stack.append((inner, sub))
        elif isinstance(item, list):
            stack.extend((f"{path}/{i}", sub) for i, sub in enumerate(item))
        elif isinstance(item, str):
            texts.append((path, item))
        for where, text in texts:
            bad = UNSTORABLE_TEXT.search(text)
            if bad is not None:
                char = "U+0000 (NUL)" if bad.group() == "\x00" else f"a lone surrogate U+{ord(bad.group()):04X}"
                raise Rejected("bad_text", f"{kind} {where}: holds {char}, which no stored text may hold")


def _numbers_in_range(value: Any) -> None:
    """Raise :class:`Rejected` for a non-finite float or an integer beyond 64 bits, anywhere."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise Rejected("not_finite", f"{item!r} is not a finite number")
        elif isinstance(item, int) and not isinstance(item, bool) and not INT64[0] <= item <= INT64[1]:
            raise Rejected("out_of_range", f"{str(item)[:40]} does not fit in 64 bits")
        elif isinstance(item, float) and item.is_integer() and not INT64[0] <= item <= INT64[1]:
            # JSON Schema's "integer" is any number without a fraction: "seq": 1e300 passes it
            raise Rejected("out_of_range", f"{item!r} does not fit in 64 bits")


class Rejected(Exception):
    """A message that does not follow the contract; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Topic:
    site: str
    device_id: str
    kind: str  # event, evidence, scan, status, health
    event_id: str | None = None  # for evidence/{event_id}


@dataclass(frozen=True)
class Message:
    """A validated message: JSON kinds carry ``payload``; evidence carries ``data``."""

    topic: Topic
    payload: dict[str, Any] | None = None
    data: bytes | None = None
    sha256: str | None = None


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise Rejected("bad_topic", topic)
    site, device_id, rest = parts[2], parts[3], parts[4:]
    # fullmatch: "$" also matches before a final newline, which let "acme\n" pass as a site
    if not NAME.fullmatch(site) or not NAME.fullmatch(device_id):
        raise Rejected("bad_topic", topic)
    if len(rest) == 1 and rest[0] in JSON_KINDS:
        return Topic(site, device_id, rest[0])
    if len(rest) == 2 and rest[0] == "evidence" and UUID.fullmatch(rest[1]):
        return Topic(site, device_id, "evidence", rest[1].lower())
    raise Rejected("bad_topic", topic)


# Start-of-frame markers (baseline, progressive, lossless, arithmetic ...): not DHT, JPG, DAC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_frame_sizes(data: bytes) -> list[tuple[int, int]]:
    """(width, height) of every frame header before the first scan, found the way libjpeg
    finds markers (bytes between segments are skipped, not trusted to end the search)."""
    sizes = []
    i, end = 2, len(data)
    while i < end:
        j = data.find(b"\xff", i)
        if j < 0 or j + 1 >= end:
            break
        while j + 1 < end and data[j + 1] == 0xFF:  # fill bytes
            j += 1
        if j + 1 >= end:
            break
        marker = data[j + 1]
        if marker == 0xDA:  # start of scan: the frame is known by now
            break
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stuffed byte or no length
            i = j + 2
            continue
        if j + 4 > end:
            break
        length = int.from_bytes(data[j + 2 : j + 4], "big")
        if marker in _SOF and j + 9 <= end:
            height = int.from_bytes(data[j + 5 : j + 7], "big")
            width = int.from_bytes(data[j + 7 : j + 9], "big")
            sizes.append((width, height))
        i = j + 2 + max(length, 2)
    return sizes


def load_evidence_keys(paths: list[str]) -> list[PrivateKey]:
    """The collector's private keys for sealed evidence (files from ``deskwatch-ca evidence-key``)."""
    keys = []
    for path in paths:
        try:
            keys.append(PrivateKey(sealing.key_from_text(Path(path).read_text(encoding="ascii"), "private key")))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"evidence key {path}: {exc}") from None
    return keys


class Validator:
    """Validates raw MQTT messages; thread-safe (the jsonschema validators are)."""

    def __init__(self, evidence_keys: list[PrivateKey] | None = None) -> None:
        self._validators = {
            kind: Draft202012Validator(load_schema(kind), format_checker=_formats) for kind in JSON_KINDS
        }
        self._boxes = [SealedBox(key) for key in evidence_keys or []]

    def check(self, topic: str, raw: bytes, user_properties: dict[str, str] | None = None) -> Message:
        where = parse_topic(topic)
        if where.kind == "evidence":
            return self._check_evidence(where, raw, user_properties or {})
        if len(raw) > MAX_JSON_BYTES:
            raise Rejected("too_large", f"{len(raw)} bytes")
        try:
            payload = loads_object(raw, max_bytes=MAX_JSON_BYTES, max_depth=8)
        except JsonRejected as exc:
            reason = "not_finite" if "is not allowed in JSON" in str(exc) else "bad_json"
            raise Rejected(reason, str(exc)[:160]) from None
        _numbers_in_range(payload)
        _storable_text(payload, where.kind)
        errors = sorted(self._validators[where.kind].iter_errors(payload), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            path = "/".join(str(p) for p in first.absolute_path) or "(root)"
            time = _time_error(first)
            if time is not None:
                why = f" ({time.cause})" if time.cause else ""
                raise Rejected("bad_time", f"{where.kind} {path}: {time.message[:80]}{why}")
            raise Rejected("schema", f"{where.kind} {path}: {first.message[:160]}")
        if payload["site"] != where.site or payload["device_id"] != where.device_id:
            raise Rejected("source_mismatch", f"payload says {payload['site']}/{payload['device_id']}")
        return Message(where, payload=payload)

    def _check_evidence(self, where: Topic, raw: bytes, props: dict[str, str]) -> Message:
        if not raw:
            raise Rejected("evidence_empty")
        if len(raw) > MAX_EVIDENCE_BYTES:
            raise Rejected("too_large", f"evidence {len(raw)} bytes")
        if self._boxes or props.get("sealed-key-id"):
            # A sealed box may start like a JPEG by chance: try the keys first, always.
            raw = self._unseal(raw, props.get("sealed-key-id"))
        if not raw.startswith(b"\xff\xd8"):
            raise Rejected("evidence_not_jpeg")
        for width, height in jpeg_frame_sizes(raw):
            if max(width, height) > MAX_EVIDENCE_SIDE:
                raise Rejected(
                    "evidence_too_large",
                    f"a {width}x{height} picture; a thumbnail is at most {MAX_EVIDENCE_SIDE} pixels a side",
                )
        digest = hashlib.sha256(raw).hexdigest()
        claimed = props.get("sha256")
        if claimed is not None and claimed.lower() != digest:
            raise Rejected("evidence_sha256", "bytes do not match the sha256 user property")
        return Message(where, data=bytes(raw), sha256=digest)

    def _unseal(self, sealed: bytes, key_id: str | None) -> bytes:
        """The thumbnail inside a sealed box, with whichever of our keys opens it
        (unsealed evidence from a device before 1.1 is returned as it came)."""
        for box in self._boxes:
            try:
                return bytes(box.decrypt(sealed))
            except CryptoError:
                continue
        if key_id is None and sealed.startswith(b"\xff\xd8"):
            return sealed
        if not self._boxes:
            raise Rejected("evidence_sealed_no_key", "sealed evidence, but no --evidence-key was given")
        raise Rejected("evidence_sealed_unknown_key", f"none of our keys opens it (device says key {key_id or '?'})")
