"""The whole configuration: one section per stage, assembled here."""

from __future__ import annotations

import os
from dataclasses import dataclass

from deskwatch.camera.config import CameraConfig
from deskwatch.delivery.config import OutboxConfig
from deskwatch.evidence.config import EvidenceConfig
from deskwatch.policy.config import PolicyConfig
from deskwatch.schedule import ScheduleConfig
from deskwatch.system.config import ServiceConfig
from deskwatch.vision.config import VisionConfig
from deskwatch_contract.configfile import Report, setting
from deskwatch_contract.mqttconfig import MqttConfig
from deskwatch_contract.problems import is_loopback
from deskwatch_contract.topics import ID_HINT, ID_PATTERN


@dataclass(frozen=True)
class DeviceConfig:
    """Who this appliance is. Set by provisioning; used in every MQTT topic."""

    id: str = setting(
        doc="Device id, unique in the fleet; the client certificate's CN.",
        pattern=ID_PATTERN,
        hint=ID_HINT,
        example="desk-0042",
    )
    site: str = setting(
        doc="Site (employer or team) the desk belongs to; first topic level after the prefix.",
        pattern=ID_PATTERN,
        hint=ID_HINT,
        example="acme-support",
    )
    worker_id: str = setting(
        doc="The worker enrolled at this desk (an opaque id, not a name).",
        pattern=ID_PATTERN,
        hint=ID_HINT,
        example="w-1187",
    )


@dataclass(frozen=True)
class Config:
    """deskwatch configuration (usually /etc/deskwatch/config.yaml)."""

    device: DeviceConfig = setting(doc="Identity of this appliance.")
    mqtt: MqttConfig = setting(default_factory=MqttConfig, doc="Central broker.")
    camera: CameraConfig = setting(default_factory=CameraConfig, doc="Camera and burst.")
    schedule: ScheduleConfig = setting(default_factory=ScheduleConfig, doc="When scans happen.")
    vision: VisionConfig = setting(default_factory=VisionConfig, doc="On-device detectors.")
    policy: PolicyConfig = setting(default_factory=PolicyConfig, doc="Rules and jurisdiction profile.")
    evidence: EvidenceConfig = setting(default_factory=EvidenceConfig, doc="Evidence thumbnails.")
    outbox: OutboxConfig = setting(default_factory=OutboxConfig, doc="Durable outgoing queue.")
    service: ServiceConfig = setting(default_factory=ServiceConfig, doc="Logging and health reporting.")
    state_dir: str = setting(
        "/var/lib/deskwatch",
        doc="Where the device keeps its queue, audit trail and the worker's face templates (mode 0700).",
        path="parent",
    )

    def validate(self, report: Report) -> None:
        if self.policy.profile == "uk" and self.schedule.mode == "random":
            report(
                "policy.profile",
                "the uk profile allows no random scans, but schedule.mode is 'random' (the default): "
                "set schedule.mode to 'fixed' with fixed_times (or 'interval' for a technician's test)",
            )
        if os.path.exists(self.state_dir) and not os.path.isdir(self.state_dir):
            report("state_dir", "exists but is not a directory")
        if (
            self.evidence.enabled
            and self.evidence.seal_to is None
            and not self.evidence.allow_unsealed
            and not is_loopback(self.mqtt.host)
        ):
            report(
                "evidence.seal_to",
                f"thumbnails would reach {self.mqtt.host} readable by whoever runs the broker: set evidence.seal_to "
                "to the collector's public key (deskwatch-ca evidence-key), or evidence.allow_unsealed: true for a lab",
            )
