"""The console benchmark (``make bench-console``) runs end to end on PostgreSQL and reports numbers (small run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.common import REPO

TOOLS_ENV = {**os.environ, "PYTHONPATH": str(REPO / "tools")}  # tools/ is installed nowhere


def test_bench_console_times_queue_pages_and_reports_on_postgresql() -> None:
    argv = [sys.executable, "-m", "deskwatch_dev.bench_console", "--events", "3000", "--devices", "60",
            "--pages", "12", "--reports", "3", "--json"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, env=TOOLS_ENV, text=True, timeout=180, check=True)
    report = json.loads(out.stdout)
    assert report["backend"] == "postgresql" and report["events"] == 3000
    kinds = report["requests"]
    assert {"queue page", "accuracy report"} <= set(kinds)
    assert kinds["queue page"]["n"] == 12 and kinds["accuracy report"]["n"] == 3
    for stats in kinds.values():
        assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"]
