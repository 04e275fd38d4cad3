"""The companion's broker link under the default ``mqtt.protocol: auto``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from deskwatch_desk.config import load_desk_config
from deskwatch_desk.link import DeskLink

pytestmark = pytest.mark.broker


def test_auto_reaches_a_broker_that_speaks_only_mqtt_3_1_1(nats_broker: Any, tmp_path: Path) -> None:
    """NATS refuses an MQTT 5 CONNECT as an unsupported version. The appliance and the
    technician's probe then speak 3.1.1; the worker's companion must too, or its pause
    button never reaches the desk."""
    path = tmp_path / "desk.yaml"
    path.write_text(
        "device: {id: desk-a, site: acme}\n"
        f"mqtt: {{host: 127.0.0.1, port: {nats_broker.port}, tls: {{enabled: false}}, "
        "reconnect_min_seconds: 0.1, reconnect_max_seconds: 1.0}\n"
    )
    cfg = load_desk_config(path)
    assert cfg.mqtt.protocol == "auto"
    link = DeskLink(cfg)
    link.start()
    try:
        assert link.wait_ready(15), link.problem
        assert link.protocol == MQTTProtocolVersion.MQTTv311
        assert link.publish("activity", {"probe": True}, wait=5)
    finally:
        link.close()
