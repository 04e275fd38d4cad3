"""The delivery benchmark (``make bench-delivery``) runs end to end and reports numbers (small run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.common import REPO

pytestmark = [pytest.mark.broker]
# tools/ is on the tests' path, not a child process's: it is installed nowhere
TOOLS_ENV = {**os.environ, "PYTHONPATH": str(REPO / "tools")}


def test_bench_delivery_prints_drain_rates_as_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "deskwatch_dev.bench_delivery", "--events", "30", "--evidence-bytes", "2000", "--json"],
        capture_output=True,
        env=TOOLS_ENV,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout)
    assert [r["evidence_bytes"] for r in report["runs"]] == [0, 2000]
    for r in report["runs"]:
        assert r["events"] == 30 and r["messages"] == (60 if r["evidence_bytes"] else 30)
        assert r["drain_events_per_s"] > 0 and r["cpu_percent_while_draining"] >= 0


def test_bench_delivery_rejects_nonsense_arguments() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "deskwatch_dev.bench_delivery", "--events", "0"],
        capture_output=True,
        env=TOOLS_ENV,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--events" in out.stdout + out.stderr
