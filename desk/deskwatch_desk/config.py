"""The companion's own small config: which desk it belongs to and how it reaches the broker.

``desk.yaml`` (see :func:`deskwatch_desk.link.default_config_path`)::

    device: {id: desk-0042, site: acme-support}     # the appliance it pairs with
    mqtt:                                           # the same keys as the appliance's mqtt section
      host: broker.example.com
      tls: {ca_file: ca.crt, cert_file: desk-0042-companion.crt, key_file: desk-0042-companion.key}

The companion has its own credentials (a companion certificate, or a user name and a
password file): never the appliance's. Every problem is reported at once with its
line, exactly like the appliance's ``check-config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deskwatch_contract.configfile import ConfigError, load_section_file, load_section_tree, setting
from deskwatch_contract.mqttconfig import MqttConfig
from deskwatch_contract.topics import ID_HINT, ID_PATTERN

__all__ = ["ConfigError", "DeskConfig", "DeskDevice", "load_desk_config", "load_desk_config_text"]


@dataclass(frozen=True)
class DeskDevice:
    """The appliance this companion belongs to (its topics are the only ones it uses)."""

    id: str = setting(doc="The appliance's device id.", pattern=ID_PATTERN, hint=ID_HINT, example="desk-0042")
    site: str = setting(doc="The appliance's site.", pattern=ID_PATTERN, hint=ID_HINT, example="acme-support")


@dataclass(frozen=True)
class DeskConfig:
    """deskwatch desk companion configuration (desk.yaml)."""

    device: DeskDevice = setting(doc="The desk's appliance.")
    mqtt: MqttConfig = setting(default_factory=MqttConfig, doc="The central broker, with the companion's credentials.")


def load_desk_config_text(text: str, filename: str = "<string>") -> DeskConfig:
    cfg: DeskConfig = load_section_tree(DeskConfig, text, filename)
    return cfg


def load_desk_config(path: str | Path) -> DeskConfig:
    """Read and validate ``desk.yaml``; raises :class:`ConfigError` listing every problem."""
    cfg: DeskConfig = load_section_file(DeskConfig, path, missing="write device.id, device.site and mqtt there")
    return cfg
