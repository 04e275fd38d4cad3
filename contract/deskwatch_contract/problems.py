"""Why a connection to the broker failed, in one sentence that says what to check.

One classifier for every client: the appliance's delivery (which logs each kind of
problem once per outage, at ERROR when a person has to fix something — credentials,
certificates, ACLs, client id — else at WARNING, and keeps retrying with
:func:`backoff_delay`), the technician's selftest probe (a FAIL row with the remedy)
and the desk companion.
"""

from __future__ import annotations

import random
import socket
import ssl
from dataclasses import dataclass

from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from deskwatch_contract.mqttconfig import MqttConfig, is_loopback

__all__ = [
    "Problem",
    "backoff_delay",
    "connect_exception",
    "is_loopback",
    "lost",
    "no_connack",
    "protocol_fallback",
    "refusal",
]

# CONNACK reason codes (MQTT 3.1.1 return codes are mapped onto these by paho).
RC_UNSUPPORTED_PROTOCOL = 132
RC_CLIENT_ID_INVALID = 133
RC_BAD_CREDENTIALS = 134
RC_NOT_AUTHORIZED = 135
RC_SERVER_UNAVAILABLE = 136
FALLBACK = "fallback"  # Problem.kind: try the other MQTT version at once


@dataclass(frozen=True)
class Problem:
    kind: str  # stable key: logged once per outage per kind
    detail: str  # what happened
    remedy: str  # what to check or do
    needs_fixing: bool  # credentials/TLS/ACL: a person must act (ERROR); else transient (WARNING)

    @property
    def message(self) -> str:
        """The one line for the journal."""
        return f"{self.detail}: {self.remedy}"


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): doubling, capped, with jitter in [50%, 100%]."""
    ceiling = min(high, low * (2 ** min(attempt, 30)))
    return ceiling * (0.5 + 0.5 * rng.random())


def _where(m: MqttConfig) -> str:
    return f"{m.host}:{m.port}"


def connect_exception(m: MqttConfig, exc: BaseException) -> Problem:
    """The name lookup, TCP connect or TLS handshake raised ``exc``."""
    where = _where(m)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Problem(
            "tls-verify",
            f"TLS: the certificate of broker {where} was not accepted ({exc.verify_message})",
            f"check that mqtt.tls.ca_file ({m.tls.ca_file or 'system store'}) is the CA that signed it "
            f"and that mqtt.host matches a name in it",
            True,
        )
    if isinstance(exc, ssl.SSLError):
        return Problem(
            "tls",
            f"TLS handshake with broker {where} failed ({exc.reason or exc})",
            "check that mqtt.port is the broker's TLS port, mqtt.tls.cert_file/key_file "
            "(a device certificate the broker's CA signed) and mqtt.tls.ca_file",
            True,
        )
    if isinstance(exc, socket.gaierror):
        return Problem("dns", f"cannot resolve broker host {m.host} ({exc})", "check mqtt.host and the DNS", False)
    if isinstance(exc, ConnectionRefusedError):
        return Problem(
            "refused",
            f"broker {where} refused the TCP connection",
            "is it running and is mqtt.port right? retrying with backoff",
            False,
        )
    if isinstance(exc, TimeoutError):
        return Problem("timeout", f"no answer from broker {where}", "check the network path and firewall", False)
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return Problem("network", f"cannot reach broker {where} ({text})", "check the network and mqtt.host/port", False)


def no_connack(m: MqttConfig) -> Problem:
    hint = "is it a TLS port? with mutual TLS: is this device's certificate accepted?" if m.tls.enabled else "retrying"
    return Problem("no-connack", f"broker {_where(m)} closed the connection before accepting it", hint, False)


def protocol_fallback(
    m: MqttConfig, tried: MQTTProtocolVersion, refused: ReasonCode | None, answered: bool
) -> tuple[MQTTProtocolVersion, Problem] | None:
    """With ``mqtt.protocol: auto``, the MQTT version to try next after a CONNECT of version ``tried`` got no connection, and why; None when
    the other version would not help (another setting, a refusal for another reason).

    Some 3.1.1-only brokers close the socket on an MQTT 5 CONNECT (``answered`` False), others
    (NATS, RabbitMQ) refuse it as "Unsupported protocol version". One decision for the daemon's
    delivery and the technician's broker probe, so the selftest reaches the broker as the daemon does."""
    if m.protocol != "auto":
        return None
    v5 = tried == MQTTProtocolVersion.MQTTv5
    if refused is None and not answered:
        if not v5:
            return None
        return MQTTProtocolVersion.MQTTv311, Problem(
            FALLBACK, f"broker {_where(m)} did not answer an MQTT 5 CONNECT", "trying MQTT 3.1.1", False
        )
    if refused is not None and refused.value == RC_UNSUPPORTED_PROTOCOL:
        version = "5" if v5 else "3.1.1"
        other = MQTTProtocolVersion.MQTTv311 if v5 else MQTTProtocolVersion.MQTTv5
        return other, Problem(FALLBACK, f"broker {_where(m)} refused MQTT {version}", "trying the other version", False)
    return None


def refusal(m: MqttConfig, refused: ReasonCode, client_id: str) -> Problem:
    """The broker answered CONNECT with a failure reason code."""
    where, code = _where(m), refused.value
    if code == RC_BAD_CREDENTIALS:
        return Problem(
            "credentials",
            f"broker {where} refused the login ({refused})",
            "check mqtt.username and the password in mqtt.password_file",
            True,
        )
    if code == RC_NOT_AUTHORIZED:  # Mosquitto answers this for bad passwords and refused client ids too
        login = (
            "mqtt.username and the password in mqtt.password_file, and "
            if m.username
            else "whether the broker needs mqtt.username + mqtt.password_file, and "
        )
        cert = " with this certificate (mqtt.tls.cert_file)" if m.tls.cert_file else ""
        return Problem(
            "not-authorized",
            f"broker {where} refused this device ({refused})",
            f"check {login}that it allows client id '{client_id}' (from device.site and device.id){cert}",
            True,
        )
    if code == RC_CLIENT_ID_INVALID:
        return Problem(
            "client-id",
            f"broker {where} refused client id '{client_id}' ({refused})",
            "check device.site and device.id against the broker's allowed client ids",
            True,
        )
    return Problem(
        "connack", f"broker {where} refused the connection ({refused})", "retrying", code != RC_SERVER_UNAVAILABLE
    )


def lost(m: MqttConfig, rc_name: str, queued: int) -> Problem:
    return Problem(
        "lost",
        f"lost the connection to broker {_where(m)} ({rc_name}); {queued} messages queued",
        "reconnecting with backoff",
        False,
    )
