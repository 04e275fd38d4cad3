"""TLS and credentials for a paho client from the ``mqtt`` config section.

One place for the daemon's publisher, the selftest's broker probe and the desk
companion, so all three verify the broker the same way (CERT_REQUIRED, TLS client
protocol) and turn unusable files into one sentence saying which file and why.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt

from deskwatch_contract.mqttconfig import MqttConfig


class CredentialsError(Exception):
    """An mqtt.* file cannot be used as it is; the message names it and says why."""


def read_password(m: MqttConfig) -> str | None:
    """The password from ``mqtt.password_file`` (re-read on every connect: a fixed file heals)."""
    if not m.password_file:
        return None
    try:
        return Path(m.password_file).read_text(encoding="utf-8").strip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read mqtt.password_file {m.password_file}: {exc}") from None


class _Passphrase(Exception):
    """The key file asked for a passphrase."""


def _no_passphrase() -> str:
    """OpenSSL's password callback: without one it prompts on the terminal, where a daemon
    started by hand would wait for ever (and under systemd fail with an unclear error)."""
    raise _Passphrase


def apply_credentials(client: mqtt.Client, m: MqttConfig) -> None:
    """TLS (when enabled) and user name/password on ``client``, or CredentialsError."""
    if m.tls.enabled:
        try:
            client.tls_set(
                ca_certs=m.tls.ca_file,
                certfile=m.tls.cert_file,
                keyfile=m.tls.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
                keyfile_password=_no_passphrase,  # type: ignore[arg-type]  # ssl takes a callable too
            )
        except _Passphrase:
            key = m.tls.key_file or m.tls.cert_file
            raise CredentialsError(
                f"mqtt.tls key_file {key} is protected by a passphrase, which nobody can type at every start: "
                f"export it without one (openssl pkey -in {key} -out {key}.nopass, then move {key}.nopass to {key}; "
                "keep it mode 0600, owned by the service user)"
            ) from None
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise CredentialsError(
                f"cannot load the TLS files (mqtt.tls ca_file {m.tls.ca_file}, cert_file {m.tls.cert_file}, "
                f"key_file {m.tls.key_file}): {exc}; check they are PEM and the key belongs to the certificate"
            ) from None
    if m.username:
        client.username_pw_set(m.username, read_password(m))
