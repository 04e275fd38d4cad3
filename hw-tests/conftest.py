"""Hardware tests: run on the Raspberry Pi with the camera attached (see README.md).

Every test skips with a reason when the hardware or the installed service it needs is
not there, so ``pytest hw-tests`` on a laptop reports skips, not failures. Measurements
go to a JSON file per run (``--results DIR``, default ``hw-tests/results/``).
"""

from __future__ import annotations

import json
import os
import platform
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = "/etc/deskwatch/config.yaml"


def default_results_dir() -> str:
    env = os.environ.get("DESKWATCH_HW_RESULTS")
    if env:
        return env
    local = HERE / "results"
    # on the appliance /opt is read-only: fall back to the state partition
    return str(local) if os.access(HERE, os.W_OK) else "/var/lib/deskwatch/hw-results"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("deskwatch hardware")
    group.addoption(
        "--results",
        default=default_results_dir(),
        help="directory for the run's JSON results",
    )
    group.addoption(
        "--deskwatch-config",
        dest="deskwatch_config",
        default=os.environ.get("DESKWATCH_CONFIG", DEFAULT_CONFIG),
        help="deskwatch config (camera and vision sections are used)",
    )
    group.addoption(
        "--interactive",
        action="store_true",
        default=os.environ.get("DESKWATCH_HW_INTERACTIVE") == "1",
        help="run the tests that need a technician's hands (camera unplug/replug)",
    )


def pi_model() -> str | None:
    try:
        model = Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode()
    except OSError:
        return None
    return model if "Raspberry Pi" in model else None


@pytest.fixture(scope="session")
def on_pi() -> str:
    model = pi_model()
    if model is None:
        pytest.skip("not a Raspberry Pi (/proc/device-tree/model does not say so): run these on the appliance")
    return model


@pytest.fixture(scope="session")
def deskwatch_config(request: pytest.FixtureRequest) -> Any:
    from deskwatch.config import ConfigError, load_config

    path = request.config.getoption("deskwatch_config")
    if not os.path.exists(path):
        pytest.skip(f"no deskwatch config at {path}: provision the device first or pass --config")
    try:
        return load_config(path)
    except ConfigError as exc:
        pytest.fail(exc.render())


class Results:
    """Measurements of this run, written as one JSON file at the end of the session."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data: dict[str, Any] = {
            "host": socket.gethostname(),
            "model": pi_model() or platform.machine(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kernel": platform.release(),
            "measurements": {},
        }

    def record(self, name: str, **values: Any) -> None:
        self.data["measurements"].setdefault(name, {}).update(values)

    def write(self) -> Path | None:
        if not self.data["measurements"]:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.directory / f"{self.data['host']}-{stamp}.json"
        path.write_text(json.dumps(self.data, indent=2) + "\n")
        return path


@pytest.fixture(scope="session")
def results(request: pytest.FixtureRequest) -> Iterator[Results]:
    res = Results(Path(request.config.getoption("results")))
    yield res
    path = res.write()
    if path is not None:
        print(f"\nhardware test results written to {path}")
