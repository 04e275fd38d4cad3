"""The ``service`` config section: logging and health reporting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deskwatch_contract.configfile import setting


@dataclass(frozen=True)
class ServiceConfig:
    """How the daemon reports on itself."""

    log_level: Literal["debug", "info", "warning", "error"] = setting(
        "info", doc="Least severe log level written to journald/stderr."
    )
    health_interval_seconds: int = setting(60, doc="How often the health topic is published.", minimum=10, maximum=3600)
