"""Why a connection attempt failed, in one log line that says what to check.

The delivery logs each kind of problem once per outage (at ERROR when a person has
to fix something — credentials, certificates, ACLs, client id — else at WARNING),
marks itself ``degraded`` and keeps retrying with :func:`backoff_delay`.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass

from paho.mqtt.reasoncodes import ReasonCode

from ..config import Config

# CONNACK reason codes (MQTT 3.1.1 return codes are mapped onto these by paho).
RC_UNSUPPORTED_PROTOCOL = 132
RC_CLIENT_ID_INVALID = 133
RC_BAD_CREDENTIALS = 134
RC_NOT_AUTHORIZED = 135
RC_SERVER_UNAVAILABLE = 136


@dataclass(frozen=True)
class Problem:
    kind: str  # stable key: logged once per outage per kind
    message: str  # the one line for the journal
    needs_fixing: bool  # credentials/TLS/ACL: a person must act (ERROR); else transient (WARNING)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): doubling, capped, with jitter in [50%, 100%]."""
    ceiling = min(high, low * (2 ** min(attempt, 30)))
    return ceiling * (0.5 + 0.5 * rng.random())


def _where(cfg: Config) -> str:
    return f"{cfg.mqtt.host}:{cfg.mqtt.port}"


def connect_exception(cfg: Config, exc: OSError) -> Problem:
    """The TCP connect or TLS handshake raised ``exc``."""
    m, where = cfg.mqtt, _where(cfg)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Problem(
            "tls-verify",
            f"TLS: the certificate of broker {where} was not accepted ({exc.verify_message}): "
            f"check that mqtt.tls.ca_file ({m.tls.ca_file or 'system store'}) is the CA that signed it "
            f"and that mqtt.host matches a name in it",
            True,
        )
    if isinstance(exc, ssl.SSLError):
        return Problem(
            "tls",
            f"TLS handshake with broker {where} failed ({exc.reason or exc}): check mqtt.tls.cert_file/key_file "
            f"(a device certificate the broker's CA signed) and mqtt.tls.ca_file",
            True,
        )
    if isinstance(exc, ConnectionRefusedError):
        return Problem(
            "refused",
            f"broker {where} refused the TCP connection: is it running and is mqtt.port right? retrying with backoff",
            False,
        )
    return Problem("network", f"cannot reach broker {where}: {exc}; retrying with backoff", False)


def no_connack(cfg: Config) -> Problem:
    hint = " (is it a TLS port? mutual TLS: is this device's certificate accepted?)" if cfg.mqtt.tls.enabled else ""
    return Problem(
        "no-connack", f"broker {_where(cfg)} closed the connection before accepting it{hint}; retrying", False
    )


def refusal(cfg: Config, refused: ReasonCode) -> Problem:
    """The broker answered CONNECT with a failure reason code."""
    m, where, code = cfg.mqtt, _where(cfg), refused.value
    if code == RC_BAD_CREDENTIALS:
        return Problem(
            "credentials",
            f"broker {where} refused the login ({refused}): check mqtt.username and the password in mqtt.password_file",
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
            f"broker {where} refused this device ({refused}): check {login}"
            f"that it allows client id '{cfg.device.id}' (device.id){cert}",
            True,
        )
    if code == RC_CLIENT_ID_INVALID:
        return Problem(
            "client-id",
            f"broker {where} refused client id '{cfg.device.id}' ({refused}): check device.id against the "
            f"broker's allowed client ids",
            True,
        )
    return Problem(
        "connack", f"broker {where} refused the connection ({refused}); retrying", code != RC_SERVER_UNAVAILABLE
    )


def lost(cfg: Config, rc_name: str, queued: int) -> Problem:
    return Problem(
        "lost",
        f"lost the connection to broker {_where(cfg)} ({rc_name}); {queued} messages queued; reconnecting with backoff",
        False,
    )
