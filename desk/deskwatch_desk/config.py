"""The companion's own small config: which desk it belongs to and how it reaches the broker.

``desk.yaml`` (see :func:`deskwatch_desk.link.default_config_path`)::

    device: {id: desk-0042, site: acme-support}     # the appliance it pairs with; optional worker_id:
                                                    # the worker at it (no finding about another is shown)
    mqtt:                                           # the same keys as the appliance's mqtt section
      host: broker.example.com
      tls: {ca_file: ca.crt, cert_file: desk-0042-companion.crt, key_file: desk-0042-companion.key}
    collector:                                      # optional: the worker's findings and reviews
      url: https://collector.example.com
      username: w-1187                              # the worker's own account (asked for its password)

The companion has its own credentials (a companion certificate, or a user name and a
password file): never the appliance's. Every problem is reported at once with its
line, exactly like the appliance's ``check-config``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from deskwatch_contract.configfile import ConfigError, Report, load_section_file, load_section_tree, setting
from deskwatch_contract.mqttconfig import MqttConfig
from deskwatch_contract.topics import ID_HINT, ID_PATTERN

__all__ = ["ConfigError", "DeskCollector", "DeskConfig", "DeskDevice", "load_desk_config", "load_desk_config_text"]


@dataclass(frozen=True)
class DeskDevice:
    """The appliance this companion belongs to (its topics are the only ones it uses)."""

    id: str = setting(doc="The appliance's device id.", pattern=ID_PATTERN, hint=ID_HINT, example="desk-0042")
    site: str = setting(doc="The appliance's site.", pattern=ID_PATTERN, hint=ID_HINT, example="acme-support")
    worker_id: str | None = setting(
        None,
        doc="The worker at this desk (the appliance's device.worker_id). Set, the window shows no finding the "
        "appliance sends about another worker: those it queued before the desk was handed over to this one.",
        pattern=ID_PATTERN,
        hint=ID_HINT,
        example="w-1187",
    )


@dataclass(frozen=True)
class DeskCollector:
    """Where the window reads the worker's own findings: the picture sent, the review, how long it is kept."""

    url: str | None = setting(
        None,
        doc="The collector's web address (the worker's page). Without it the window shows only what arrives while it is open.",
        pattern=r"https?://[^\s/?#]+(/[^\s?#]*)?",
        hint="must be http(s)://host[:port][/path]",
        example="https://collector.example.com",
    )
    username: str | None = setting(None, doc="The worker's own account on the collector.", example="w-1187")
    password_file: str | None = setting(
        None,
        doc="File holding that account's password (mode 0600); without it the window asks for it and keeps it in memory only.",
        path="file",
        secret=True,
    )
    ca_file: str | None = setting(
        None, doc="PEM file with the CA of the collector's certificate (else the system store).", path="file"
    )

    def validate(self, report: Report) -> None:
        if self.url and not self.username:
            report("username", "with collector.url, give the worker's user name on the collector")
        if self.url and self.url.startswith("http://") and not _loopback_url(self.url):
            report("url", "the collector would see the password in clear: use https:// (plain http only on loopback)")


def _loopback_url(url: str) -> bool:
    host = re.sub(r"^https?://([^/:]+|\[[^]]+\]).*$", r"\1", url)
    return host in ("localhost", "[::1]") or host.startswith("127.")


@dataclass(frozen=True)
class DeskConfig:
    """deskwatch desk companion configuration (desk.yaml)."""

    device: DeskDevice = setting(doc="The desk's appliance.")
    mqtt: MqttConfig = setting(default_factory=MqttConfig, doc="The central broker, with the companion's credentials.")
    collector: DeskCollector = setting(
        default_factory=DeskCollector, doc="Optional: the collector, for the worker's findings and reviews."
    )


def load_desk_config_text(text: str, filename: str = "<string>") -> DeskConfig:
    cfg: DeskConfig = load_section_tree(DeskConfig, text, filename)
    return cfg


def load_desk_config(path: str | Path) -> DeskConfig:
    """Read and validate ``desk.yaml``; raises :class:`ConfigError` listing every problem."""
    cfg: DeskConfig = load_section_file(DeskConfig, path, missing="write device.id, device.site and mqtt there")
    return cfg
