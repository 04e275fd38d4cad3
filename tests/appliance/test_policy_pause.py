"""Pause: reason and minutes checked, no scans while paused, automatic expiry,
pause_overrun when the worker does not come back, every step in the audit trail,
and the pause survives a daemon restart."""

from __future__ import annotations

from datetime import timedelta

import pytest

from deskwatch.audit import AuditLog
from deskwatch.commands.history import format_entry
from deskwatch.domain import PauseInfo
from deskwatch.policy.engine import Policy, PolicyContext
from deskwatch.policy.pause import PauseError
from deskwatch_contract.jsonutil import dumps_bytes
from tests.support.faultfs import FaultFs
from tests.support.policy import T0, burst, face, make_config, person


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


@pytest.fixture
def audit(tmp_path):
    log = AuditLog(tmp_path / "audit.sqlite3")
    yield log
    log.close()


def test_no_scan_during_a_pause_and_automatic_expiry():
    p = Policy(make_config().policy)
    assert p.pre_scan(T0) is None
    info = p.pause("fetch water", 5, T0)
    assert info.ends_at == T0 + minutes(5)
    assert p.pre_scan(T0 + minutes(1)) == "paused"
    assert p.pre_scan(T0 + minutes(4.9)) == "paused"
    assert p.pre_scan(T0 + minutes(5)) is None
    assert p.paused is None


def test_evaluate_during_a_pause_skips_every_rule():
    p = Policy(make_config().policy)
    p.pause("doctor's call", 10, T0)
    out = p.evaluate(burst(5), PolicyContext(T0 + minutes(1), "command"))
    assert out.findings == [] and out.confirm_after_seconds is None
    assert {c.outcome for c in out.checks} == {"skipped"}


@pytest.mark.parametrize(
    ("reason", "mins", "message"),
    [
        ("", 5, "reason must be non-empty"),
        ("   ", 5, "reason must be non-empty"),
        ("x" * 121, 5, "at most 120"),
        ("water", 0, "from 1 to 120"),
        ("water", 121, "from 1 to 120"),
        ("water", 2.5, "whole number"),
        ("water", True, "whole number"),
        (None, 5, "reason must be non-empty"),
        # bytes that are not UTF-8 on 'deskwatch pause --reason' arrive as lone surrogates: no
        # text, and the health carrying the reason could not be encoded (the daemon died on it)
        ("water \udcff", 5, "lone UTF-16 surrogate"),
    ],
)
def test_bad_pause_requests_are_refused_with_a_reason(reason, mins, message):
    p = Policy(make_config().policy)
    with pytest.raises(PauseError, match=message):
        p.pause(reason, mins, T0)
    assert p.pre_scan(T0) is None


def test_reason_whitespace_is_collapsed_and_120_chars_accepted():
    p = Policy(make_config().policy)
    assert p.pause("  fetch \n water ", 5, T0).reason == "fetch water"
    assert len(p.pause("y" * 120, 1, T0).reason) == 120


def test_config_can_lower_the_longest_pause():
    p = Policy(make_config("policy: {max_pause_minutes: 15}").policy)
    with pytest.raises(PauseError, match="from 1 to 15"):
        p.pause("lunch", 30, T0)


def test_resume_ends_the_pause_early():
    p = Policy(make_config().policy)
    p.pause("fetch water", 5, T0)
    assert p.resume(T0 + minutes(2)) is not None
    assert p.pre_scan(T0 + minutes(2)) is None
    assert p.check_overrun(T0 + minutes(30)) is None
    assert p.resume(T0 + minutes(3)) is None  # nothing to resume


def test_overrun_when_the_worker_does_not_come_back():
    p = Policy(make_config().policy)
    p.pause("fetch water", 5, T0)
    assert p.check_overrun(T0 + minutes(5.5)) is None  # within the 60 s grace
    f = p.check_overrun(T0 + minutes(6.5))
    assert f is not None and f.type == "pause_overrun"
    assert f.evidence_allowed is False and "fetch water" in f.detail
    assert p.check_overrun(T0 + minutes(7)) is None  # reported once


def test_no_overrun_when_a_scan_after_expiry_sees_the_worker():
    p = Policy(make_config().policy)
    p.pause("fetch water", 5, T0)
    assert p.pre_scan(T0 + minutes(5.2)) is None
    p.evaluate(burst(5, [person()], [face()]), PolicyContext(T0 + minutes(5.2), "schedule"))
    assert p.check_overrun(T0 + minutes(10)) is None


def test_no_overrun_when_input_activity_shows_the_worker_is_back():
    p = Policy(make_config().policy)
    p.pause("fetch water", 5, T0)
    p.check_overrun(T0 + minutes(5.1))
    # at 5:24 the desk computer reports 10 s without input: typed at 5:14
    p.record_activity(10.0, T0 + minutes(5) + timedelta(seconds=14), T0 + minutes(5.4))
    assert p.check_overrun(T0 + minutes(10)) is None


def test_idle_activity_report_does_not_cancel_the_overrun():
    p = Policy(make_config().policy)
    p.pause("fetch water", 5, T0)
    # at 7:00 the computer has been idle for 8 min: last input before the pause began
    p.record_activity(480.0, T0 - minutes(1), T0 + minutes(7))
    assert p.check_overrun(T0 + minutes(7)) is not None


def test_overrun_rule_can_be_switched_off():
    p = Policy(make_config("policy: {rules: {pause_overrun: {enabled: false}}}").policy)
    p.pause("fetch water", 5, T0)
    assert p.check_overrun(T0 + minutes(20)) is None


def test_every_pause_and_resume_is_in_the_audit_trail(audit):
    p = Policy(make_config().policy, audit=audit)
    p.pause("fetch water", 5, T0)
    p.resume(T0 + minutes(3))
    p.pause("lunch", 30, T0 + minutes(60))
    p.pre_scan(T0 + minutes(95))  # expired
    p.check_overrun(T0 + minutes(100))
    kinds = [e.kind for e in reversed(audit.recent(10))]
    assert kinds == ["pause", "resume", "pause", "pause_expired", "pause_overrun"]
    first = audit.recent(10)[-1]
    assert first.data["reason"] == "fetch water" and first.data["minutes"] == 5


def test_a_pause_survives_a_daemon_restart(tmp_path):
    a = AuditLog(tmp_path / "audit.sqlite3")
    Policy(make_config().policy, audit=a).pause("fetch water", 5, T0)
    a.close()
    b = AuditLog(tmp_path / "audit.sqlite3")
    try:
        again = Policy(make_config().policy, audit=b)
        assert again.pre_scan(T0 + minutes(2)) == "paused"
        assert again.paused is not None and again.paused.reason == "fetch water"
        assert again.pre_scan(T0 + minutes(6)) is None
        assert b.load_pause() is None  # expiry cleared it
    finally:
        b.close()


@pytest.mark.parametrize(
    ("saved", "restored"),
    [
        ("lunch \ud800", "lunch"),  # a lone surrogate: the health carrying it could not be encoded
        ("lunch \u009b2J\u007f break", "lunch 2J break"),  # C1 and DEL, refused since 837046a
        ("\udc80\x1b", "(reason dropped)"),  # nothing left of it
        ("x" * 300, "x" * 120),  # longer than a reason may be
    ],
)
def test_a_pause_saved_before_the_reason_rule_is_restored_with_what_the_rule_keeps(tmp_path, caplog, saved, restored):
    """A pause an older daemon saved with a reason today's rule refuses (a lone surrogate made
    the next health fail to encode, at every start, until the pause ended): at the start the
    refused characters are dropped, the warning says why (not the reason itself), and the pause stands."""
    a = AuditLog(tmp_path / "audit.sqlite3")
    a.save_pause(PauseInfo(reason=saved, minutes=30, started_at=T0, source="mqtt"))  # as the older daemon did
    a.close()
    b = AuditLog(tmp_path / "audit.sqlite3")
    try:
        with caplog.at_level("WARNING", logger="deskwatch.policy.pause"):
            again = Policy(make_config().policy, audit=b)
        assert again.pre_scan(T0 + minutes(29)) == "paused"
        assert again.paused is not None and again.paused.reason == restored
        assert again.paused.ends_at == T0 + minutes(30) and again.paused.source == "mqtt"
        dumps_bytes({"pause": again.paused.to_json()})  # what the health sends
        (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert "refused by today's rule" in warning and "the pause is restored" in warning
        # the worker's words stay out of the journal (test_journal_lines), what is kept of them too
        assert ascii(saved) not in warning and restored not in warning and saved[:5] not in warning
    finally:
        b.close()


def test_a_saved_pause_with_a_valid_reason_is_restored_unchanged_and_quietly(tmp_path, caplog):
    a = AuditLog(tmp_path / "audit.sqlite3")
    a.save_pause(PauseInfo(reason="fetch water \u00e9\u263a", minutes=5, started_at=T0, source="local"))
    a.close()
    b = AuditLog(tmp_path / "audit.sqlite3")
    try:
        with caplog.at_level("WARNING", logger="deskwatch.policy.pause"):
            again = Policy(make_config().policy, audit=b)
        assert again.paused is not None and again.paused.reason == "fetch water \u00e9\u263a"
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
    finally:
        b.close()


class Monotonic:
    """The monotonic clock the daemon gives the policy: only moves when told to."""

    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


def test_a_pause_moved_by_a_clock_correction_is_saved_with_its_real_end(tmp_path):
    """The wall clock is corrected by +3 h one minute into a 30-minute pause: the pause
    keeps its 29 minutes left, and a daemon restart after the correction restores that end."""
    mono = Monotonic()
    a = AuditLog(tmp_path / "audit.sqlite3")
    p = Policy(make_config().policy, audit=a, monotonic=mono)
    p.pause("fetch water", 30, T0)
    mono.t += 60
    wall = T0 + timedelta(hours=3, minutes=1)
    assert p.pre_scan(wall) == "paused"
    assert p.paused is not None and p.paused.ends_at == wall + minutes(29)
    a.close()
    b = AuditLog(tmp_path / "audit.sqlite3")
    try:
        booted = Monotonic()  # a new process: its own monotonic clock
        again = Policy(make_config().policy, audit=b, monotonic=booted)
        assert again.pre_scan(wall + minutes(28)) == "paused"
        booted.t += 60
        assert again.pre_scan(wall + minutes(29)) is None
        moved = [e for e in b.recent(10) if e.kind == "pause_clock_moved"]
        assert len(moved) == 1 and moved[0].data["seconds"] == 3 * 3600
        (line,) = format_entry(moved[0].kind, moved[0].at, moved[0].data)
        assert "the clock was corrected by +10800 s during the pause; it still ends after 30 min" in line
    finally:
        b.close()


def test_a_clock_correction_during_the_grace_is_no_overrun():
    """The pause ended; 30 s into the 60 s grace the wall clock jumps an hour ahead: the
    worker still has the rest of the grace, and an overrun counts real minutes."""
    mono = Monotonic()
    p = Policy(make_config().policy, monotonic=mono)
    p.pause("fetch water", 5, T0)
    mono.t += 5 * 60 + 30
    assert p.pre_scan(T0 + minutes(5.5)) is None  # ended by itself
    mono.t += 1
    jumped = T0 + minutes(5.5) + timedelta(hours=1, seconds=1)
    assert p.check_overrun(jumped) is None
    mono.t += 30
    f = p.check_overrun(jumped + timedelta(seconds=30))
    assert f is not None and "no sign of the worker 1 min later" in f.detail


def test_a_pause_holds_when_the_disk_cannot_take_it(fault_fs: FaultFs, caplog: pytest.LogCaptureFixture) -> None:
    """The SD card under the audit trail turns read-only (a full card likewise) while the worker
    is paused: the pause's expiry tried to delete the saved pause, and the error raised out of
    the daemon's main loop ('internal error in run', exit 70, a traceback); a pause or resume
    asked for then was applied but answered "internal error", so the worker took the button
    for broken. The change now holds in memory with a line saying it could not be saved (a
    restart would not see it): the pause expires and is reported, pause and resume answer."""
    trail = AuditLog(fault_fs.ext4_on_tmpfs() / "audit.sqlite3")
    p = Policy(make_config().policy, audit=trail)
    p.pause("fetch water", 1, T0)
    fault_fs.force_read_only()
    assert p.pre_scan(T0 + minutes(0.5)) is not None  # still paused
    over = p.check_overrun(T0 + minutes(3))  # expired, and overran by two minutes
    assert over is not None and over.type == "pause_overrun"
    assert p.pre_scan(T0 + minutes(3)) is None
    assert p.pause("fetch water", 5, T0 + minutes(4)).minutes == 5
    assert p.pre_scan(T0 + minutes(5)) is not None
    assert p.resume(T0 + minutes(6)) is not None
    assert p.pre_scan(T0 + minutes(6)) is None
    said = [r.getMessage() for r in caplog.records if "could not save" in r.getMessage()]
    assert len(said) == 3 and all("restart" in s for s in said), said
    trail.close()


def test_a_broken_card_is_said_once_in_full_and_each_unrecorded_entry_in_one_line_without_a_traceback(
    fault_fs: FaultFs, caplog: pytest.LogCaptureFixture
) -> None:
    """The card turns read-only: every pause, resume, expiry and scan wrote "could not write X
    to the audit trail" with a full traceback, walls of them in `journalctl -u deskwatch -f`,
    and not a word of what was wrong with the disk or what to do. Now: the disk's trouble and
    what to do once, then one line per entry not recorded; a traceback only for a real bug."""
    from deskwatch.domain import ScanRecord

    trail = AuditLog(fault_fs.ext4_on_tmpfs() / "audit.sqlite3")
    p = Policy(make_config().policy, audit=trail)
    p.pause("fetch water", 1, T0)
    fault_fs.force_read_only()
    caplog.clear()
    p.resume(T0 + minutes(0.5))
    p.pause("fetch water", 1, T0 + minutes(1))
    p.check_overrun(T0 + minutes(4))
    assert not [r for r in caplog.records if r.exc_info], "a traceback for a known disk error"
    lines = [r.getMessage() for r in caplog.records if "audit trail" in r.getMessage() and r.levelname == "ERROR"]
    assert len(lines) >= 6, lines  # resume, its save, pause, its save, expiry, its save, overrun
    full = [line for line in lines if "check dmesg" in line]
    assert len(full) == 1 and "read-only" in full[0] and full[0].startswith("could not write resume"), lines
    # the scanner's record (Scanner.on_unrecorded) goes the same way
    with pytest.raises(Exception) as raised:
        trail.record_scan(ScanRecord("s-1", "schedule", T0 + minutes(5), T0 + minutes(5)))
    assert trail.unwritten("could not write scan s-1 to the audit trail", raised.value)
    assert caplog.records[-1].getMessage().startswith("could not write scan s-1") and not caplog.records[-1].exc_info
    assert not trail.unwritten("a bug", TypeError("not a disk's doing"))  # the caller logs its traceback
    trail.close()
