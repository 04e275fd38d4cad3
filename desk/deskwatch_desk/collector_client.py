"""The worker's side of the collector, for the desk window: their findings, pictures, contests.

The collector keeps what the appliance cannot know: how each finding was reviewed, the
picture it received and how long it keeps it. The window signs in with the worker's own
account (the same one as the worker's page), keeps the session cookie in memory only,
and uses the worker API: ``GET /api/me/findings``, ``GET /evidence/{id}``,
``POST /api/events/{id}/contest``. Standard library only (urllib); TLS is verified
against the system store or ``collector.ca_file``.
"""

from __future__ import annotations

import http.cookiejar
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_JSON_BYTES = 2 * 1024 * 1024
MAX_PICTURE_BYTES = 512 * 1024
TIMEOUT = 10.0


class CollectorError(Exception):
    """The collector could not be used; the message says why in words for the worker."""


class SignInNeeded(CollectorError):
    """No session, or it expired: ask for the password."""


@dataclass(frozen=True)
class Finding:
    event_id: str
    type: str
    label: str
    detected_ts: float
    confidence: float
    device_id: str
    review_state: str
    review_reason: str | None
    reason_label: str
    reviewed_by: str | None
    contested: bool
    contest_note: str | None
    has_picture: bool
    days_left: int | None
    no_picture_why: str | None
    deleted_ts: float | None = None  # when the collector deletes the picture (a collector before it said: None)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Finding:
        try:
            return cls(
                event_id=str(d["event_id"]),
                type=str(d["type"]),
                label=str(d.get("label") or d["type"]),
                detected_ts=float(d["detected_ts"]),
                confidence=float(d["confidence"]),
                device_id=str(d["device_id"]),
                review_state=str(d["review_state"]),
                review_reason=d.get("review_reason") if isinstance(d.get("review_reason"), str) else None,
                reason_label=str(d.get("reason_label") or ""),
                reviewed_by=d.get("reviewed_by") if isinstance(d.get("reviewed_by"), str) else None,
                contested=bool(d.get("contested")),
                contest_note=d.get("contest_note") if isinstance(d.get("contest_note"), str) else None,
                has_picture=bool(d.get("has_picture")),
                days_left=int(d["days_left"]) if isinstance(d.get("days_left"), int) else None,
                no_picture_why=d.get("no_picture_why") if isinstance(d.get("no_picture_why"), str) else None,
                deleted_ts=_instant(d.get("picture_deleted_at")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollectorError(f"the collector sent a finding this window cannot read ({exc})") from None


class CollectorClient:
    def __init__(self, url: str, username: str, ca_file: str | None = None, timeout: float = TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"collector.url must be http(s)://host[:port], not {url!r}")
        self.base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.username = username
        self.timeout = timeout
        self.jar = http.cookiejar.CookieJar()
        context = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None  # a 303 after sign-in is read, not followed

        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), urllib.request.HTTPSHandler(context=context), NoRedirect
        )

    @property
    def signed_in(self) -> bool:
        return any(True for _ in self.jar)

    def _call(
        self, path: str, data: bytes | None = None, ctype: str | None = None, limit: int = MAX_JSON_BYTES
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, data=data, method="POST" if data is not None else "GET")
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return int(resp.status), resp.read(limit + 1)
        except urllib.error.HTTPError as exc:
            body = exc.read(4096)
            if exc.code in (301, 302, 303):
                return exc.code, body
            if exc.code == 401:
                self.jar.clear()
                raise SignInNeeded("sign in to the collector again (the session ended)") from None
            raise CollectorError(_error_text(exc.code, body)) from None
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CollectorError(f"cannot reach the collector at {self.base}: {reason}") from None

    def sign_in(self, password: str) -> None:
        form = urllib.parse.urlencode({"username": self.username, "password": password}).encode()
        self.jar.clear()
        try:
            status, _ = self._call("/login", form, "application/x-www-form-urlencoded")
        except SignInNeeded:
            raise SignInNeeded("wrong user name or password") from None
        if status not in (200, 303) or not self.signed_in:
            raise SignInNeeded("the collector did not accept the sign-in")

    def findings(self, limit: int = 50) -> tuple[list[Finding], float]:
        """The worker's newest findings, and how many days the collector keeps pictures."""
        _, body = self._call(f"/api/me/findings?limit={int(limit)}")
        data = _json_object(body)
        items = data.get("events")
        if not isinstance(items, list):
            raise CollectorError("the collector's answer has no list of findings")
        days = data.get("retention_days")
        return [Finding.from_json(d) for d in items if isinstance(d, dict)], float(days) if isinstance(
            days, (int, float)
        ) else 20.0

    def picture(self, event_id: str) -> bytes:
        _, body = self._call(f"/evidence/{urllib.parse.quote(event_id)}", limit=MAX_PICTURE_BYTES)
        if len(body) > MAX_PICTURE_BYTES:
            raise CollectorError("the picture is larger than this window accepts")
        return body

    def contest(self, event_id: str, note: str) -> Finding:
        body = json.dumps({"note": note}).encode()
        _, answer = self._call(f"/api/events/{urllib.parse.quote(event_id)}/contest", body, "application/json")
        return Finding.from_json(_json_object(answer))


def _json_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_JSON_BYTES:
        raise CollectorError("the collector's answer is too large")
    try:
        data = json.loads(body)
    except ValueError:
        raise CollectorError("the collector did not answer with JSON (is collector.url right?)") from None
    if not isinstance(data, dict):
        raise CollectorError("the collector's answer is not a JSON object")
    return data


def _error_text(code: int, body: bytes) -> str:
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    return (
        f"the collector refused ({code}): {message}" if isinstance(message, str) else f"the collector answered {code}"
    )


def _instant(text: Any) -> float | None:
    """An RFC 3339 time the collector sent, as a timestamp (None: absent or not a time)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
