"""deskwatch-collector commands: accounts, retention limits, report, and a clean run/stop."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deskwatch_collector.cli import main
from deskwatch_dev.fleet import SimDevice
from tests.support.common import REPO
from tests.support.mosquitto import Broker


def test_add_user_reads_the_password_from_stdin_and_refuses_weak_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "c.db")
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["add-user", "alice", "--site", "acme", "--db", db]) == 78
    assert "at least 8 characters" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("long enough pass\n"))
    assert main(["add-user", "w-1", "--role", "worker", "--site", "acme", "--db", db]) == 78
    assert "--worker-id" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("long enough pass\n"))
    assert main(["add-user", "alice", "--site", "acme", "--site", "globex", "--db", db]) == 0
    assert "supervisor alice can see acme, globex" in capsys.readouterr().out


def test_retention_above_twenty_days_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["purge", "--db", str(tmp_path / "c.db"), "--retention-days", "30"])
    assert exit_.value.code == 2
    assert "at most 20 days" in capsys.readouterr().err
    assert main(["purge", "--db", str(tmp_path / "c.db"), "--retention-days", "7"]) == 0


def test_unreachable_database_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", "postgresql://nobody@127.0.0.1:1/none"]) == 69
    assert "database unavailable" in capsys.readouterr().err


def test_a_dsn_the_collector_cannot_use_is_named_without_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad setting in the DSN printed the DSN as given, password and all, into the journal."""
    assert main(["report", "--db", "postgresql://alice:s3cret@127.0.0.1:1/db?connect_timeout=x"]) == 69
    err = capsys.readouterr().err
    assert "connect_timeout" in err and "alice:***@127.0.0.1" in err
    assert "s3cret" not in err


@pytest.mark.broker
def test_run_stores_reports_and_stops_on_sigterm(
    tmp_path: Path, mosquitto: Broker, fleet_publisher: object, until: object
) -> None:
    db = tmp_path / "c.db"
    env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deskwatch_collector.cli", "run", "--db", str(db), "--broker",
         f"127.0.0.1:{mosquitto.port}", "--http", "127.0.0.1:0", "--client-id", "cli-test"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().decode()
        assert ready.startswith("READY "), proc.stderr.read().decode() if proc.stderr else ""
        assert json.loads(ready[6:])["http"].startswith("http://127.0.0.1:")
        dev = SimDevice("acme", "desk-a", "w-1")
        fleet_publisher(mosquitto).send([dev.status(), *dev.violation(), *dev.violation(with_evidence=False)])  # type: ignore[operator]

        report: dict[str, object] = {}

        def two_events() -> bool:
            from deskwatch_collector.cli import report as make_report
            from deskwatch_collector.store import open_store

            store = open_store(str(db))
            try:
                report.update(make_report(store))
            finally:
                store.close()
            return report["counts"]["events"] == 2  # type: ignore[index]

        assert until(two_events, 15)  # type: ignore[operator]
        assert report["counts"] == {"events": 2, "evidence": 1, "scans": 2, "devices": 1, "rejects": 0,  # type: ignore[comparison-overlap]
                                    "evidence_deletions": 0}  # fmt: skip
        assert report["seq_gaps"] == {}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    counters = json.loads(next(line for line in out.decode().splitlines() if line.startswith("COUNTERS "))[9:])
    assert counters["event.stored"] == 2 and counters["evidence.stored"] == 1


def test_a_worker_id_handover_needs_a_time_with_its_zone_and_a_worker_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "c.db")
    args = ["users", "add", "bob", "--db", db, "--role", "worker", "--worker-id", "w-1", "--site", "acme"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("long enough pass\n"))
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--new-holder", "--holder-since", "2026-12-07T08:00"])
    assert exit_.value.code == 2 and "has no zone" in capsys.readouterr().err
    assert main([*args, "--holder-since", "2026-12-07T08:00Z"]) == 2
    assert "--holder-since goes with --new-holder" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("long enough pass\n"))
    assert main(["users", "add", "alice", "--db", db, "--site", "acme", "--new-holder"]) == 78
    assert "for worker accounts" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("long enough pass\n"))
    assert main([*args, "--new-holder", "--holder-since", "2026-12-07T08:00+01:00"]) == 0
    assert "worker id w-1 is bob's from 2026-12-07 07:00:00Z" in capsys.readouterr().out
    assert main(["users", "list", "--db", db]) == 0
    assert "acme / w-1 (holder since 2026-12-07 07:00:00Z)" in capsys.readouterr().out
