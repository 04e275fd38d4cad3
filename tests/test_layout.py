"""The repository's shape, checked: four distributions that import only what they may,
stages that do not reach into each other, and tests that need nothing outside the clone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.common import REPO

DISTS = {  # package -> (its directory, the deskwatch packages it may import)
    "deskwatch_contract": (REPO / "contract/deskwatch_contract", set()),
    "deskwatch": (REPO / "daemon/deskwatch", {"deskwatch_contract"}),
    "deskwatch_desk": (REPO / "desk/deskwatch_desk", {"deskwatch_contract"}),
    "deskwatch_collector": (REPO / "collector/deskwatch_collector", {"deskwatch_contract"}),
}
# The appliance's stages (ARCHITECTURE.md): each may use the shared types (domain), the
# contract, and itself; only the composition root, the scan loop, the CLI commands and
# the technician's tools wire stages together.
STAGES = ("camera", "vision", "policy", "evidence", "delivery", "system", "audit")
STAGE_MAY_ALSO = {"camera": {"deskwatch.schedule"}}  # the Clock protocol lives with the schedule


def module_name(path: Path) -> str:
    for package, (directory, _) in DISTS.items():
        if path.is_relative_to(directory):
            rel = path.relative_to(directory).with_suffix("")
            return ".".join([package, *rel.parts])
    raise ValueError(path)


def imports(path: Path) -> set[str]:
    """Every deskwatch module ``path`` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module_name(path).split(".")[:-1]  # the module's package (for __init__: itself)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return {m for m in out if m.split(".")[0].startswith("deskwatch")}


def test_the_import_check_sees_relative_imports(tmp_path: Path) -> None:
    """The checks below would miss a stage reaching into another through ``from ..x``."""
    probe = REPO / "daemon/deskwatch/evidence/_probe_layout.py"
    probe.write_text("from ..policy import rules\nfrom . import blur\n")
    try:
        assert imports(probe) >= {"deskwatch.policy.rules", "deskwatch.evidence.blur"}
    finally:
        probe.unlink()


def test_each_distribution_imports_only_what_it_depends_on() -> None:
    wrong = []
    for package, (directory, allowed) in DISTS.items():
        for path in directory.rglob("*.py"):
            for mod in imports(path):
                top = mod.split(".")[0]
                if top != package and top not in allowed:
                    wrong.append(f"{path.relative_to(REPO)} imports {mod}")
    assert wrong == []


def test_stages_do_not_import_each_other() -> None:
    wrong = []
    for stage in STAGES:
        base = REPO / "daemon/deskwatch" / stage
        files = list(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        assert files and all(f.exists() for f in files), stage
        for path in files:
            for mod in imports(path):
                parts = mod.split(".")
                if parts[0] != "deskwatch" or len(parts) < 2:
                    continue
                if parts[1] in (stage, "domain") or mod in STAGE_MAY_ALSO.get(stage, set()):
                    continue
                if any(mod == m or mod.startswith(m + ".") for m in STAGE_MAY_ALSO.get(stage, set())):
                    continue
                wrong.append(f"{path.relative_to(REPO)} imports {mod}")
    assert wrong == []


def test_the_stages_take_their_own_config_section() -> None:
    """No stage module names the root Config: the composition root hands each its section."""
    offenders = []
    for stage in STAGES:
        base = REPO / "daemon/deskwatch" / stage
        for path in base.rglob("*.py") if base.is_dir() else [base.with_suffix(".py")]:
            if re.search(r"\bfrom deskwatch\.config import\b.*\bConfig\b", path.read_text()):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_the_four_distributions_share_one_version() -> None:
    versions = {}
    for package, (directory, _) in DISTS.items():
        match = re.search(r'__version__ = "([^"]+)"', (directory / "__init__.py").read_text())
        assert match, package
        versions[package] = match.group(1)
    assert len(set(versions.values())) == 1, versions


# What reaching past the clone looks like: the labelled collection beside it, the repo's
# parent, a path climbing above it, or this machine's own folders.
OUTSIDE = re.compile(r"shared/testdata|[\"']shared[\"']|\.\./shared|REPO\.parent|parents\[[3-9]\]|[\"']/work/")


def test_no_test_reads_outside_the_repository() -> None:
    """A clone with nothing beside it must pass: tests find everything under the repository."""
    offenders = []
    for path in [*(REPO / "tests").rglob("*.py"), *(REPO / "hw-tests").rglob("*.py")]:
        if path == Path(__file__):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []
    labels = yaml.safe_load((REPO / "tests/data/photos/labels.yaml").read_text())
    listed = {entry["file"] for entry in labels["files"]}
    on_disk = {p.name for p in (REPO / "tests/data/photos").glob("*.jpg")}
    assert listed == on_disk and len(listed) >= 40  # every photo labelled, every label a photo


@pytest.mark.slow
def test_the_desk_companion_installs_without_numpy_opencv_or_dlib(tmp_path: Path) -> None:
    """The worker's PC gets paho-mqtt, PyYAML and the contract: nothing of the vision stack."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin/python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    proc = subprocess.run(
        [*pip, "install", str(REPO / "contract"), str(REPO / "desk")], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    )
    names = {line.split("==")[0].lower() for line in listed.stdout.split()}
    assert {"deskwatch-desk", "deskwatch-contract", "paho-mqtt", "pyyaml"} <= names
    assert names - {"deskwatch-desk", "deskwatch-contract", "paho-mqtt", "pyyaml", "pip", "setuptools"} == set()
    run = subprocess.run(
        [str(venv / "bin/deskwatch-desk"), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0 and "pause" in run.stdout
