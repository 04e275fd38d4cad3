"""The daemon's user: who the technician's checks run as, and what that user may open.

The daemon runs as ``User=deskwatch`` with ``SupplementaryGroups=video``
(``systemd/deskwatch.service``); technicians type ``sudo deskwatch selftest``. Checked
with root's rights every file is readable and every directory open, so a PASS would say
nothing about the daemon, which then cannot read a root-only config (exit 78, never
restarted) or certificate (never connects). So a selftest started as root runs again as
the service user with the unit's groups (:func:`run_as_user`), and the permission checks
judge each path for that user's uid and groups (:func:`access_problem`), whoever runs them.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import stat
import subprocess
import sys
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from deskwatch_contract.configfile import section_fields

SERVICE_USER = "deskwatch"
UNIT_GROUPS = ("video",)  # SupplementaryGroups= of systemd/deskwatch.service (the camera)
SELFTEST_TIMEOUT = 600.0


@dataclass(frozen=True)
class Account:
    """A user as the daemon's unit starts it: uid, primary gid and every group it holds."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]  # the primary group, /etc/group memberships and the unit's SupplementaryGroups

    @property
    def group(self) -> str:
        return group_name(self.gid)

    def describe(self) -> str:
        names = sorted(group_name(g) for g in self.groups)
        return f"{self.name} (uid {self.uid}; groups {', '.join(names)})"


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def service_account(user: str) -> Account | None:
    """``user`` with the groups the unit gives it; None when there is no such user."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    groups = set(os.getgrouplist(user, pw.pw_gid))
    for name in UNIT_GROUPS:
        try:
            groups.add(grp.getgrnam(name).gr_gid)
        except KeyError:  # no such group here: systemd would refuse to start the unit, not our business
            continue
    return Account(user, pw.pw_uid, pw.pw_gid, frozenset(groups))


def current_account() -> Account:
    """Whoever runs this process, with its effective ids."""
    uid = os.geteuid()
    return Account(user_name(uid), uid, os.getegid(), frozenset({os.getegid(), *os.getgroups()}))


def run_as_user(user: str, argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` with the unit's groups (LookupError if there is no such user);
    stdout is captured, stderr is relayed as it comes (progress and errors reach the console),
    its control characters written out.

    The child is that user's process, whose files (its home is the state directory) and whose
    other processes may change what it does: so it gets no terminal of root's (a new session,
    stdin from /dev/null, stderr through a pipe; with root's terminal it could push keystrokes
    into root's shell, TIOCSTI) and no Python of its home (PYTHONNOUSERSITE: the image's venv
    shares the system's site-packages, and with them the per-user ones under ~/.local)."""
    account = service_account(user)
    if account is None:
        raise LookupError(f"there is no user {user!r} (the image creates it with sysusers.d)")
    pw = pwd.getpwnam(user)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": pw.pw_dir,
        "PYTHONNOUSERSITE": "1",
    }
    if os.environ.get("PYTHONPATH"):  # a source checkout: the child needs the same modules
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    read_end, write_end = os.pipe()
    relay = threading.Thread(target=_relay, args=(read_end,), name="child-stderr", daemon=True)
    relay.start()
    try:
        return subprocess.run(
            argv,
            user=account.uid,
            group=account.gid,
            extra_groups=sorted(account.groups),
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=write_end,
            start_new_session=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        os.close(write_end)
        relay.join(5)  # a process the child left behind may hold the pipe: not waited for longer


def _relay(fd: int) -> None:
    with os.fdopen(fd, "rb") as pipe:
        for raw in pipe:
            sys.stderr.write(printable(raw.decode("utf-8", "replace")))
            sys.stderr.flush()


def printable(text: str) -> str:
    """``text`` with every control character but the line ends written out (ESC as \\x1b):
    what a process of the daemon's user prints must not drive the terminal of root's it reaches."""
    return "".join(c if c == "\n" or unicodedata.category(c) != "Cc" else repr(c)[1:-1] for c in text)


def selftest_argv(config_path: str | Path, service_user: str, skip: list[str], *extra: str) -> list[str]:
    """``deskwatch selftest`` for the service user's child process (absolute paths: it runs in /)."""
    argv = [sys.executable, "-m", "deskwatch", "selftest", "--config", os.path.abspath(config_path)]
    argv += ["--service-user", service_user, *extra]
    for check in skip:
        argv += ["--skip", check]
    return argv


def selftest_as_user(
    user: str, config_path: Path, skip: list[str], *, timeout: float = SELFTEST_TIMEOUT
) -> tuple[int, str]:
    """``deskwatch selftest`` in a child process with ``user``'s uid, gid and groups, ended
    after ``timeout`` seconds: (exit status, the table or why it did not run or finish)."""
    try:
        done = run_as_user(user, selftest_argv(config_path, user, skip), timeout=timeout)
    except LookupError as exc:
        return 1, f"selftest NOT run: {exc}; it never runs as root"
    except subprocess.TimeoutExpired:
        return 1, (
            f"selftest NOT finished: cut short after {timeout:.0f} s (its time limit); its results are not known. "
            "Run `sudo deskwatch selftest` at the desk to check the device"
        )
    except OSError as exc:
        return 1, f"selftest NOT run: it cannot be started as {user} ({exc}); it never runs as root"
    out = printable(done.stdout).strip() or f"the selftest printed no table (exit {done.returncode}); see the console"
    return done.returncode, f"(run as user {user})\n{out}"


# -- what a user may open -------------------------------------------------------------------------
_WANT = {"r": 4, "w": 2, "x": 1}
_VERB = {"r": "read", "rx": "list", "wx": "write into", "rwx": "use"}


def _allows(st: os.stat_result, account: Account, want: int) -> bool:
    """The kernel's owner / group / other rule (the first class that matches decides)."""
    if account.uid == 0:
        return True
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == account.uid:
        bits = mode >> 6
    elif st.st_gid in account.groups:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


def describe(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {user_name(st.st_uid)}:{group_name(st.st_gid)}"


@dataclass(frozen=True)
class Denied:
    """What stops a user: ``path`` (the target, or a directory on the way to it) and why."""

    path: Path
    on_the_way: bool  # a directory above the target, not the target itself
    detail: str

    def __str__(self) -> str:
        return self.detail


def access_problem(path: str | Path, account: Account, want: str = "r") -> Denied | None:
    """Why ``account`` cannot ``want`` (``r``, ``rx``, ``wx``, ``rwx``) ``path``, naming the
    directory or file that stops it with its mode and owner; None when it can.

    Judged from the modes and owners (whoever asks, root included), every directory on the
    way (as written and as the links resolve) needing search permission. When this process
    *is* ``account`` the kernel has the last word (an ACL, a security module)."""
    target = Path(os.path.abspath(path))
    real = Path(os.path.realpath(target))
    dirs: list[Path] = []
    for d in (*reversed(target.parents), *reversed(real.parents)):
        if d not in dirs:
            dirs.append(d)
    for d in dirs:
        try:
            st = os.stat(d)
        except OSError as exc:
            return Denied(d, True, f"{d}: {exc.strerror}")
        if not _allows(st, account, _WANT["x"]):
            return Denied(d, True, f"{account.name} cannot enter {d} ({describe(st)})")
    verb = _VERB.get(want, want)
    try:
        st = os.stat(real)
    except OSError as exc:
        return Denied(target, False, f"{target}: {exc.strerror}")
    need = sum(_WANT[c] for c in want)
    if not _allows(st, account, need):
        return Denied(target, False, f"{account.name} cannot {verb} {target} ({describe(st)})")
    if os.geteuid() == account.uid and not os.access(real, need):
        return Denied(target, False, f"{account.name} cannot {verb} {target} (an ACL or a security module refuses it)")
    return None


class Opened(NamedTuple):
    """A path the daemon opens: the setting naming it, the access it needs, whether it is a secret."""

    key: str
    path: Path
    want: str  # "r" for a file, "rx" for a directory
    secret: bool


def daemon_reads(cfg: Any, config_path: str | None = None) -> list[Opened]:
    """Everything the daemon opens from its configuration: the config file, and every file
    and directory setting (``setting(path=...)``) that is set."""
    out: list[Opened] = []
    if config_path:
        out.append(Opened("config file", Path(os.path.abspath(config_path)), "r", False))

    def walk(section: Any, prefix: str) -> None:
        for f, _tp in section_fields(type(section)):
            value = getattr(section, f.name)
            key = f"{prefix}.{f.name}" if prefix else f.name
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                walk(value, key)
            elif isinstance(value, str) and f.metadata.get("path") in ("file", "dir"):
                kind = f.metadata["path"]
                out.append(Opened(key, Path(value), "r" if kind == "file" else "rx", bool(f.metadata.get("secret"))))

    walk(cfg, "")
    return out


def fix_for(opened: Opened, denied: Denied, account: Account) -> str:
    """The command that lets ``account`` open ``opened`` again (as the image installs it)."""
    p = denied.path
    if denied.on_the_way:
        return (
            f"let {account.name} in (chgrp {account.group} {p} && chmod 750 {p}), or keep the file in a "
            "directory it can enter, such as /etc/deskwatch"
        )
    if opened.key == "config file":
        return f"run: chown root:{account.group} {p} && chmod 640 {p}"
    if opened.secret:
        return f"run: chown {account.name} {p} && chmod 600 {p}"
    return f"run: chmod {755 if opened.want == 'rx' else 644} {p}"


# -- what root may parse ---------------------------------------------------------------------------
def _foreign(path: Path, st: os.stat_result, *, directory: bool) -> str | None:
    """Why another user than root could have written ``path`` (its owner, or a group or
    everyone with write permission; a sticky directory keeps root's entries root's)."""
    if st.st_uid != 0:
        return f"{path} belongs to {user_name(st.st_uid)}"
    mode = stat.S_IMODE(st.st_mode)
    if directory and mode & stat.S_ISVTX:
        return None
    if mode & 0o020 and st.st_gid != 0:
        return f"{path} may be written by group {group_name(st.st_gid)} ({describe(st)})"
    if mode & 0o002:
        return f"{path} may be written by everyone ({describe(st)})"
    return None


def not_roots(directory: str | Path) -> str | None:
    """Why the files in ``directory`` may have been written by another user than root (the
    directory, one above it, a file in it or one a link in it names belongs to that user or
    is writable by it); None when only root could have written them.

    Root's tools parse no such file with a parser that was not made for hostile input (a
    TFLite model): a bug in it would give the daemon's user, who writes the model jobs'
    directory, root's rights."""
    real = Path(os.path.realpath(directory))
    seen: set[Path] = set()

    def chain(d: Path) -> str | None:
        for p in (*reversed(d.parents), d):
            if p in seen:
                continue
            seen.add(p)
            try:
                why = _foreign(p, os.stat(p), directory=p != d)
            except OSError as exc:
                return f"{p}: {exc.strerror}"
            if why:
                return why
        return None

    why = chain(real)
    if why:
        return why
    try:
        entries = sorted(os.scandir(real), key=lambda e: e.name)
    except OSError as exc:
        return f"{real}: {exc.strerror}"
    for entry in entries:
        target = Path(os.path.realpath(entry.path))
        try:
            st = os.stat(target)
        except OSError:
            continue  # a dangling link: nothing to parse (the loader says it is missing)
        why = chain(target.parent) or _foreign(target, st, directory=stat.S_ISDIR(st.st_mode))
        if why:
            return why
    return None
