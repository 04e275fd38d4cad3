"""Supervisor and worker accounts: scrypt password hashes and server-side sessions.

Hash format: ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>`` (hashlib.scrypt, 16-byte salt).
A session is a random 32-byte token in an HttpOnly, SameSite=Strict cookie; the database
keeps only its sha256, so a copy of the database cannot be replayed as a login and every
collector behind a load balancer shares the sessions. A session ends after
``SESSION_SECONDS``, or sooner after ``idle_seconds`` without a request that counts as the
person's (the console's background poll does not: a page left open on a shared PC would
otherwise keep the evidence open for the session's whole life).

A password change, a disabled or a removed account ends every session of that account
at once (the rows go in the same transaction): every request looks the session up, and an
open console page finds out at its next poll (``ConsoleSettings.poll_seconds``).

Roles: a ``supervisor`` sees and reviews the events of the sites listed on the account; a
``worker`` sees only the events that name their ``worker_id`` and can contest them.

A worker id handed to a new employee (``users add ... --new-holder``) records the change
in ``worker_holders`` (site, worker id, from when): a worker account sees only the findings
of its own holding, from the change at or before its ``holder_since`` (its creation when not
set) to the next change. Without that, the new holder saw the previous holder's findings,
pictures and all, for as long as they are kept, and could contest them; and an account the
previous holder kept saw the new holder's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, replace

from deskwatch_collector.store import Store
from deskwatch_collector.validate import NAME

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SESSION_SECONDS = 12 * 3600
IDLE_SECONDS = 30 * 60  # the default idle timeout (``run --idle-timeout``)
MAX_PASSWORD = 1024  # characters the sign-in form reads: a longer password could never sign in
ROLES = ("supervisor", "worker")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


# Verifying against this when the user does not exist keeps the response time the same.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


# (site, from, until): the detection times of the worker id's findings that are this
# account's at that site; None is open-ended.
Window = tuple[str, float | None, float | None]


@dataclass(frozen=True)
class User:
    username: str
    role: str
    sites: tuple[str, ...]
    worker_id: str | None
    windows: tuple[Window, ...] = ()  # a worker account's holding per site (only the bounded ones)

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"


def _check_account(username: str, role: str, sites: list[str], worker_id: str | None) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not NAME.match(username):
        raise ValueError("user names use letters, digits, '-' and '_' (1-64)")
    if not sites or any(not NAME.match(s) for s in sites):
        raise ValueError("give at least one site; site names use letters, digits, '-' and '_'")
    if role == "worker" and not (worker_id and NAME.match(worker_id)):
        raise ValueError("a worker account needs --worker-id")


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise ValueError("the password must have at least 8 characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"the password may have at most {MAX_PASSWORD} characters (the sign-in form reads no more)")


def add_user(
    store: Store,
    username: str,
    password: str,
    role: str,
    sites: list[str],
    worker_id: str | None,
    *,
    replace: bool = True,
    new_holder_since: float | None = None,
) -> None:
    """Create an account (or, with ``replace``, overwrite one: its sessions then end).

    ``new_holder_since``: the worker id passes to a new person from then (a worker account
    only): the change is recorded for each of the account's sites, the account sees the
    worker id's findings from then on, and any account of an earlier holder no longer sees
    what was found from then on."""
    _check_account(username, role, sites, worker_id)
    _check_password(password)
    if new_holder_since is not None and role != "worker":
        raise ValueError("--new-holder is for worker accounts: it hands a worker id to a new person")
    digest = hash_password(password)
    now = time.time()
    with store.transaction() as tx:
        exists = tx.one("SELECT 1 FROM users WHERE username = ?", (username,)) is not None
        if exists and not replace:
            raise ValueError(f"user {username} exists; use 'users reset' to change the password")
        tx.execute(
            "INSERT INTO users (username, password_hash, role, sites, worker_id, created_at, disabled, holder_since)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?)"
            " ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, role = excluded.role,"
            " sites = excluded.sites, worker_id = excluded.worker_id,"
            " holder_since = COALESCE(excluded.holder_since, users.holder_since)",
            (username, digest, role, ",".join(sorted(set(sites))), worker_id, now, new_holder_since),
        )
        if new_holder_since is not None:
            for site in sorted(set(sites)):
                tx.execute(
                    "INSERT INTO worker_holders (site, worker_id, since, recorded_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (site, worker_id, since) DO NOTHING",
                    (site, worker_id, new_holder_since, now),
                )
        tx.execute("DELETE FROM sessions WHERE username = ?", (username,))


def reset_password(store: Store, username: str, password: str) -> int:
    """Set a new password; every session of the account ends. Returns the sessions ended."""
    _check_password(password)
    digest = hash_password(password)
    with store.transaction() as tx:
        if tx.execute("UPDATE users SET password_hash = ? WHERE username = ?", (digest, username)) == 0:
            raise LookupError(f"no user {username}")
        return tx.execute("DELETE FROM sessions WHERE username = ?", (username,))


def set_disabled(store: Store, username: str, disabled: bool) -> int:
    """Disable (sessions end, sign-in refused) or enable an account. Returns the sessions ended."""
    with store.transaction() as tx:
        if tx.execute("UPDATE users SET disabled = ? WHERE username = ?", (1 if disabled else 0, username)) == 0:
            raise LookupError(f"no user {username}")
        return tx.execute("DELETE FROM sessions WHERE username = ?", (username,)) if disabled else 0


def remove_user(store: Store, username: str) -> None:
    with store.transaction() as tx:
        tx.execute("DELETE FROM sessions WHERE username = ?", (username,))
        if tx.execute("DELETE FROM users WHERE username = ?", (username,)) == 0:
            raise LookupError(f"no user {username}")


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    sites: tuple[str, ...]
    worker_id: str | None
    disabled: bool
    sessions: int
    holder_since: float | None = None  # the worker id is this person's from then (``--new-holder``)


def list_users(store: Store, now: float) -> list[Account]:
    with store.transaction(write=False) as tx:
        rows = tx.rows(
            "SELECT u.username, u.role, u.sites, u.worker_id, u.disabled,"
            " (SELECT COUNT(*) FROM sessions s WHERE s.username = u.username AND s.expires_at > ?), u.holder_since"
            " FROM users u ORDER BY u.username",
            (now,),
        )
    return [
        Account(str(n), str(r), tuple(str(s).split(",")), str(w) if w else None, bool(d), int(c), _float(h))
        for n, r, s, w, d, c, h in rows
    ]


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _user(row: tuple[object, ...]) -> User:
    username, role, sites, worker_id = row
    return User(str(username), str(role), tuple(str(sites).split(",")), str(worker_id) if worker_id else None)


def verify_login(store: Store, username: str, password: str) -> User | None:
    """The account for valid credentials of an enabled account, else None (one hash either way).

    CPU and memory heavy (scrypt): the web page runs it through its bounded hash gate.
    A name no account can have (``add_user`` takes only :data:`NAME`) is not looked up:
    PostgreSQL refuses a U+0000 in it, and the form answered a 500 instead of "wrong".
    """
    if not NAME.match(username):
        verify_password(password, _DUMMY_HASH)
        return None
    with store.transaction(write=False) as tx:
        row = tx.one(
            "SELECT password_hash, username, role, sites, worker_id, disabled FROM users WHERE username = ?",
            (username,),
        )
    if row is None:
        verify_password(password, _DUMMY_HASH)
        return None
    if not verify_password(password, str(row[0])) or row[5]:
        return None
    return _user(row[1:5])


def start_session(store: Store, username: str, now: float) -> str:
    token = secrets.token_urlsafe(32)
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO sessions (token_hash, username, expires_at, last_seen_at) VALUES (?, ?, ?, ?)",
            (_token_hash(token), username, now + SESSION_SECONDS, now),
        )
    return token


def login(store: Store, username: str, password: str, now: float) -> tuple[str, User] | None:
    """A new session token for valid credentials, else None (same work either way)."""
    user = verify_login(store, username, password)
    if user is None:
        return None
    return start_session(store, username, now), user


def session_user(
    store: Store, token: str | None, now: float, *, idle_seconds: float = IDLE_SECONDS, activity: bool = True
) -> User | None:
    return check_session(store, token, now, idle_seconds=idle_seconds, activity=activity)[0]


def check_session(
    store: Store, token: str | None, now: float, *, idle_seconds: float = IDLE_SECONDS, activity: bool = True
) -> tuple[User | None, str | None]:
    """The session's account, or None and why: ``"idle"`` (nothing the person did for
    ``idle_seconds``; the row is deleted), ``"expired"``, or None (no such session).
    ``activity``: the request is the person's (a page, a review), so the session's last
    activity moves to ``now``; the console's background poll passes False."""
    if not token:
        return None, None
    digest = _token_hash(token)
    with store.transaction(write=False) as tx:
        row = tx.one(
            "SELECT u.username, u.role, u.sites, u.worker_id, COALESCE(u.holder_since, u.created_at), s.expires_at,"
            " COALESCE(s.last_seen_at, s.expires_at - ?) FROM sessions s JOIN users u ON u.username = s.username"
            " WHERE s.token_hash = ? AND u.disabled = 0",
            (SESSION_SECONDS, digest),
        )
        if row is None:
            return None, None
        expires, seen = float(row[5]), float(row[6])
        if expires <= now:
            return None, "expired"
        user: User | None = None
        if now - seen < idle_seconds:
            user = _user(row[:4])
            if not user.is_supervisor and user.worker_id:
                changes = tx.rows(
                    f"SELECT site, since FROM worker_holders WHERE worker_id = ?"
                    f" AND site IN ({', '.join('?' for _ in user.sites)})",
                    (user.worker_id, *user.sites),
                )
                user = replace(
                    user, windows=holding(user.sites, [(str(s), float(t)) for s, t in changes], float(row[4]))
                )
    if user is None:
        logout(store, token)
        return None, "idle"
    # Written at most every tenth of the timeout (a minute at most): not a write per request.
    if activity and now - seen >= min(60.0, idle_seconds / 10):
        with store.transaction() as tx:
            tx.execute("UPDATE sessions SET last_seen_at = ? WHERE token_hash = ?", (now, digest))
    return user, None


def holding(sites: tuple[str, ...], changes: list[tuple[str, float]], anchor: float) -> tuple[Window, ...]:
    """Per site, the span of the worker id's holding that contains ``anchor`` (the account's
    ``holder_since``, else its creation): from the last change at or before it to the first
    after it. Sites with no change on either side are left out (the whole history is theirs)."""
    out: list[Window] = []
    for site in sites:
        times = [t for s, t in changes if s == site]
        start = max((t for t in times if t <= anchor), default=None)
        end = min((t for t in times if t > anchor), default=None)
        if start is not None or end is not None:
            out.append((site, start, end))
    return tuple(out)


def logout(store: Store, token: str | None) -> None:
    if token:
        with store.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
