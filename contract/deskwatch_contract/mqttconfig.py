"""The ``mqtt`` config section: where the broker is and how the device proves who it is."""

from __future__ import annotations

from dataclasses import dataclass

from deskwatch_contract.configfile import Report, setting


def is_loopback(host: str) -> bool:
    """A broker on this machine: plain MQTT to it never crosses a network."""
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass(frozen=True)
class TlsConfig:
    """TLS to the broker. Without ``ca_file`` the system trust store is used."""

    enabled: bool = setting(
        True, doc="Use TLS. Plain TCP is refused unless the broker is on loopback or mqtt.allow_insecure is true."
    )
    ca_file: str | None = setting(
        None,
        doc="PEM file with the CA that signed the broker's certificate.",
        path="file",
        example="/etc/deskwatch/ca.crt",
    )
    cert_file: str | None = setting(
        None,
        doc="This device's client certificate (PEM) for mutual TLS; its CN is SITE/DEVICE (deskwatch-ca issues it).",
        path="file",
        example="/etc/deskwatch/device.crt",
    )
    key_file: str | None = setting(
        None,
        doc="Private key for cert_file (PEM, mode 0600).",
        path="file",
        secret=True,
        example="/etc/deskwatch/device.key",
    )

    def validate(self, report: Report) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            report(
                "key_file" if self.key_file is None else "cert_file",
                "cert_file and key_file go together: set both for mutual TLS, or neither",
            )


@dataclass(frozen=True)
class MqttConfig:
    """Connection to the central broker."""

    host: str = setting("localhost", doc="Broker host name or address.", example="broker.example.com")
    port: int = setting(8883, doc="Broker port (8883 is MQTT over TLS, 1883 plain).", minimum=1, maximum=65535)
    tls: TlsConfig = setting(default_factory=TlsConfig, doc="TLS settings.")
    username: str | None = setting(
        None, doc="User name, when the broker uses passwords (with mutual TLS it is usually the certificate CN)."
    )
    password_file: str | None = setting(
        None, doc="File holding the password (mode 0600). Passwords are never written inline.", path="file", secret=True
    )
    allow_insecure: bool = setting(
        False,
        doc="Allow plain TCP to a broker that is not on loopback. Only for lab setups: everything is readable on the network.",
    )
    keepalive_seconds: int = setting(
        30,
        doc="MQTT keep-alive; the broker publishes the Last Will after 1.5 x this without traffic.",
        minimum=5,
        maximum=600,
    )
    reconnect_min_seconds: float = setting(
        1.0,
        doc="First delay before reconnecting after the broker went away; doubles per failed attempt (with random jitter).",
        minimum=0.05,
        maximum=60,
    )
    reconnect_max_seconds: float = setting(
        120.0, doc="Longest delay between reconnection attempts.", minimum=0.1, maximum=600
    )
    connect_timeout_seconds: float = setting(
        10.0, doc="How long to wait for the broker's CONNACK before giving up on an attempt.", minimum=1, maximum=120
    )
    max_inflight: int = setting(
        32,
        doc="Messages published but not yet acknowledged at any time (bounds memory and broker load while draining the outbox).",
        minimum=1,
        maximum=1000,
    )
    protocol: str = setting(
        "auto", doc="MQTT version: '5', '3.1.1', or 'auto' (try 5, fall back to 3.1.1).", pattern=r"auto|5|3\.1\.1"
    )

    def validate(self, report: Report) -> None:
        if self.tls.enabled is False and not self.allow_insecure and not is_loopback(self.host):
            report(
                "tls.enabled",
                f"plain MQTT to {self.host} would send everything readable on the network: enable TLS, "
                "or set mqtt.allow_insecure: true for a lab",
            )
        if self.password_file and not self.username:
            report("username", "password_file is set but username is not; set the user name the password belongs to")
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            report("reconnect_max_seconds", "must not be smaller than reconnect_min_seconds")
