"""A remote config change: checked exactly like ``deskwatch check-config``, swapped in whole.

:func:`stage` writes the changed config next to the live one (same directory, same
mode and owner) and runs :func:`deskwatch.config.load_config` on it: the very function
behind ``check-config``, so secret-file modes, the broker rules and the profile rules
all apply. Nothing changes when it fails. :func:`swap_in` then replaces the live file
with ``rename(2)`` and keeps the old one as ``config.yaml.previous``;
:func:`restore` puts that back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from deskwatch.config import ConfigError, load_config
from deskwatch.system.files import create_new, fill, fsync_dir

PREVIOUS_SUFFIX = ".previous"
STAGED_SUFFIX = ".job-staged"


class ChangeRejected(ValueError):
    """The change would make an invalid config; ``problems`` lists every reason with its line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def apply_set(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each ``dotted.key: value`` set (intermediate sections created)."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data)) or {}
    for dotted, value in changes.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ChangeRejected([f"{dotted}: {part} is not a section in the current config"])
            node = child
        node[leaf] = value
    return out


def _write_like(path: Path, text: str, like: Path) -> None:
    st = like.stat()
    fill(create_new(path, st.st_mode & 0o777), text.encode(), st.st_mode & 0o777, (st.st_uid, st.st_gid))


def _header(job_id: str) -> str:
    return f"# Changed by remote job {job_id}: "


def changed_by(config_path: Path, job_id: str) -> bool:
    """Is the live config the one job ``job_id`` swapped in (its first line says so)?"""
    try:
        with open(config_path, encoding="utf-8") as fh:
            return fh.readline().startswith(_header(job_id))
    except (OSError, UnicodeDecodeError):
        return False


def stage(config_path: Path, changes: dict[str, Any], job_id: str) -> Path:
    """The changed config, written beside the live one and validated; ChangeRejected otherwise."""
    try:
        current = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ChangeRejected([f"{config_path} cannot be read: {exc}"]) from None
    if not isinstance(current, dict):
        raise ChangeRejected([f"{config_path} is not a mapping"])
    new = apply_set(current, changes)
    header = f"{_header(job_id)}{', '.join(sorted(changes))}\n"
    staged = config_path.with_name(config_path.name + STAGED_SUFFIX)
    _write_like(staged, header + yaml.safe_dump(new, sort_keys=False, default_flow_style=False), config_path)
    try:
        load_config(staged)
    except ConfigError as exc:
        staged.unlink(missing_ok=True)
        raise ChangeRejected([i.format(config_path.name) for i in exc.issues]) from None
    return staged


def swap_in(config_path: Path, staged: Path) -> None:
    """Live config := staged, the old one kept as ``.previous`` (each step a rename)."""
    previous = config_path.with_name(config_path.name + PREVIOUS_SUFFIX)
    # A hard link keeps the old file under the new name without a window where neither exists.
    tmp = previous.with_name(previous.name + ".tmp")
    tmp.unlink(missing_ok=True)
    os.link(config_path, tmp)
    os.replace(tmp, previous)
    os.replace(staged, config_path)
    fsync_dir(config_path.parent)


def restore(config_path: Path) -> bool:
    """Put ``.previous`` back as the live config; False when there is none."""
    previous = config_path.with_name(config_path.name + PREVIOUS_SUFFIX)
    if not previous.exists():
        return False
    os.replace(previous, config_path)
    fsync_dir(config_path.parent)
    return True
