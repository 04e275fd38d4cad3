"""Typed, validated configuration. ``load_config(path)`` or :class:`ConfigError`.

The root (``root.py``) imports every stage's section, and the stages import
``config.schema`` to declare them; so the root is imported lazily here to keep
``from deskwatch.config.schema import setting`` free of import cycles.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .schema import ConfigError, ConfigIssue, load_section_tree

if TYPE_CHECKING:
    from .root import Config, DeviceConfig

__all__ = ["Config", "ConfigError", "ConfigIssue", "DeviceConfig", "load_config", "load_config_text"]


def __getattr__(name: str) -> Any:
    if name in ("Config", "DeviceConfig"):
        from . import root

        return getattr(root, name)
    raise AttributeError(name)


def load_config(path: str | Path, *, only: tuple[str, ...] | None = None) -> Config:
    """Read and validate a config file; every problem is reported at once."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            name,
            [ConfigIssue(None, "(file)", None, "config file not found; copy config.example.yaml there and edit it")],
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, [ConfigIssue(None, "(file)", None, f"cannot read the config file: {exc}")]) from None
    return load_config_text(text, name, only=only)


def load_config_text(text: str, filename: str = "<string>", *, only: tuple[str, ...] | None = None) -> Config:
    from .root import Config

    cfg: Config = load_section_tree(Config, text, filename, only=only)
    return cfg
