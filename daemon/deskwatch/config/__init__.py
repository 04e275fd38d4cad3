"""Typed, validated configuration. ``load_config(path)`` or :class:`ConfigError`.

The declarative framework lives in the contract (``deskwatch_contract.configfile``:
the desk companion validates its own file with it too). The root (``root.py``)
imports every stage's section, and the stages import the framework to declare them;
so the root is imported lazily here, free of import cycles.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from deskwatch_contract.configfile import ConfigError, ConfigIssue, load_section_file, load_section_tree

if TYPE_CHECKING:
    from deskwatch.config.root import Config, DeviceConfig

__all__ = ["Config", "ConfigError", "ConfigIssue", "DeviceConfig", "load_config", "load_config_text"]


def __getattr__(name: str) -> Any:
    if name in ("Config", "DeviceConfig"):
        from deskwatch.config import root

        return getattr(root, name)
    raise AttributeError(name)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; every problem is reported at once."""
    from deskwatch.config.root import Config

    cfg: Config = load_section_file(Config, path, missing="copy config.example.yaml there and edit it")
    return cfg


def load_config_text(text: str, filename: str = "<string>") -> Config:
    from deskwatch.config.root import Config

    cfg: Config = load_section_tree(Config, text, filename)
    return cfg
