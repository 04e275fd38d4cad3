"""``deskwatch models [verify|list]``: the shipped model files and their checksums."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from deskwatch.app import daemon_models_dir, models_remedy
from deskwatch.config import Config, load_config
from deskwatch.technician import service_user
from deskwatch.vision.runtime import (
    MANIFEST,
    REINSTALL,
    ModelError,
    ModelStore,
    default_models_dir,
    read_manifest,
    sha256_file,
)
from deskwatch_contract import exitcodes
from deskwatch_contract.configfile import ConfigError

NAME = "models"
HELP = "list the model files or verify them against models/manifest.yaml (sha256, loadable)"
DESCRIPTION = (
    "verify (default): check every model file listed in the manifest against its sha256 and load it "
    "through the TFLite runtime; exit 1 if any is missing, corrupt or unloadable. "
    "list: show the manifest's models. Both look at the directory the daemon loads with --config "
    "(vision.models_dir, else the last model job's <state_dir>/models/current, else the installed "
    "models) unless --models-dir names another, and say which one it was. Started as root, verify "
    "loads a directory another user could have written (a model job's, which the daemon's user "
    "writes) as the daemon's user, never as root."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("verify", "list"), default="verify")
    parser.add_argument(
        "--models-dir", metavar="DIR", help="check this directory instead of the one the daemon loads with --config"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _models_dir(args: argparse.Namespace) -> tuple[Path, str, Config | None]:
    """(directory, why that one, the config): --models-dir, else the one the daemon loads with
    this config (``app.daemon_models_dir``: vision.models_dir, a model job's, the installed
    ones), else, without a config file, the installed ones."""
    if args.models_dir:
        return Path(args.models_dir), "--models-dir", None
    if os.path.exists(args.config):
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(exc.render(), file=sys.stderr)
            raise SystemExit(exitcodes.CONFIG) from None
        return (*daemon_models_dir(cfg), cfg)
    return default_models_dir(), f"installed; no config at {args.config}", None


def run(args: argparse.Namespace) -> int:
    directory, source, cfg = _models_dir(args)

    def fix(path: Path | None) -> str:  # where the daemon gets the file from says what to do
        return models_remedy(cfg, path) if cfg is not None else REINSTALL

    try:
        manifest = read_manifest(directory)
    except ModelError as exc:
        print(service_user.printable(f"deskwatch models: {exc}"), file=sys.stderr)  # PyYAML quotes the line
        return exitcodes.FAIL
    entries = {e.file: e for e in manifest.values()}
    rows: list[dict[str, Any]] = []
    if args.action == "list":
        for entry in entries.values():
            path = directory / entry.file
            rows.append(
                {
                    "name": entry.name,
                    "file": entry.file,
                    "sha256": entry.sha256,
                    "size_bytes": path.stat().st_size if path.exists() else None,
                    "role": entry.info.get("role", ""),
                }
            )
        if args.json:
            print(json.dumps({"models_dir": str(directory), "source": source, "models": rows}, indent=2))
        else:
            print(f"{directory / MANIFEST} ({source}):")
            for r in rows:
                size = f"{r['size_bytes'] / 1e6:.1f} MB" if r["size_bytes"] is not None else "MISSING"
                line = f"  {r['name']:<18} {r['file']:<36} {size:>9}  sha256 {r['sha256'][:16]}...  {r['role']}"
                print(service_user.printable(line))  # the manifest's words: a model job's is the daemon's user's
        return 0

    if os.geteuid() == 0:
        foreign = service_user.not_roots(directory)
        if foreign is not None:
            return verify_as_service_user(args, directory, foreign)

    from deskwatch.vision.config import VisionConfig

    store = ModelStore(VisionConfig(models_dir=str(directory), threads=1))
    failed = 0
    for entry in entries.values():
        row: dict[str, Any] = {"name": entry.name, "file": entry.file, "expected_sha256": entry.sha256}
        path = directory / entry.file
        if not path.exists():
            row.update(ok=False, problem=f"{path} is missing: {fix(path)}")
        else:
            row["sha256"] = sha256_file(path)
            if not entry.file.endswith(".tflite"):
                ok = row["sha256"] == entry.sha256
                row.update(ok=ok, problem=None if ok else f"{path} does not match the manifest: {fix(path)}")
            else:
                try:
                    model = store.load(entry.file)
                    row.update(ok=True, problem=None, inputs=list(model.inputs), outputs=sorted(model.outputs))
                except ModelError as exc:
                    row.update(ok=False, problem=f"{exc.what}: {fix(exc.path)}")
        failed += not row["ok"]
        rows.append(row)
    store.close()
    if args.json:
        print(json.dumps({"models_dir": str(directory), "source": source, "ok": failed == 0, "models": rows}, indent=2))
    else:
        for r in rows:
            line = f"{'OK  ' if r['ok'] else 'FAIL'} {r['file']}" + (f": {r['problem']}" if r.get("problem") else "")
            print(service_user.printable(line))
        print(f"{len(rows) - failed}/{len(rows)} model files verified in {directory} ({source})")
    return 0 if failed == 0 else 1


def verify_as_service_user(args: argparse.Namespace, directory: Path, foreign: str) -> int:
    """``sudo deskwatch models verify`` of a directory root did not write alone (a model job's,
    which the daemon's user writes): the same command in a child process as that user, whose
    output and exit status are ours. Loading a model parses it with TFLite, whose parser is
    not made for hostile files: as root, a bug in it would give that user root's rights."""
    user = service_user.SERVICE_USER
    account = service_user.service_account(user)
    if account is None or account.uid == 0:
        print(
            f"deskwatch models: {directory} is not root's alone ({foreign}), so root does not load its models, "
            f"and there is no user {user!r} to verify them as; run it as the user that owns them: "
            f"sudo -u USER deskwatch models verify --models-dir {directory}",
            file=sys.stderr,
        )
        return exitcodes.FAIL
    argv = [sys.executable, "-m", "deskwatch", "models", "verify", "--config", os.path.abspath(args.config)]
    if args.models_dir:
        argv += ["--models-dir", os.path.abspath(args.models_dir)]
    if args.json:
        argv.append("--json")
    print(
        f"verifying {directory} as {account.describe()}, the daemon's user, not as root: {foreign}",
        file=sys.stderr,
    )
    try:
        done = service_user.run_as_user(user, argv, timeout=service_user.SELFTEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"deskwatch models: not finished in {service_user.SELFTEST_TIMEOUT:.0f} s as {user}", file=sys.stderr)
        return exitcodes.FAIL
    except (LookupError, OSError) as exc:
        print(f"deskwatch models: cannot be started as {user} ({exc}); it never loads these as root", file=sys.stderr)
        return exitcodes.FAIL
    sys.stdout.write(service_user.printable(done.stdout))  # the daemon's user's process wrote it
    return done.returncode
