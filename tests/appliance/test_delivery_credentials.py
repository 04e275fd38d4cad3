"""Unusable TLS files: one clear line naming the file, 'degraded', and healing once fixed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deskwatch.app import build_delivery
from tests.support.mosquitto import MakeBroker, device_config

pytestmark = pytest.mark.broker


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_a_corrupt_ca_file_is_named_once_and_heals(
    tmp_path: Path, make_broker: MakeBroker, pki: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(tls=True)
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    cfg = device_config(tmp_path / "state", broker, tls=f"enabled: true\n    ca_file: {ca}")
    delivery = build_delivery(cfg, version="test", models={})
    caplog.set_level(logging.DEBUG, logger="deskwatch.delivery.client")
    delivery.start()
    try:
        assert wait_for(lambda: delivery.state() == "degraded")
        assert any("cannot load the TLS files" in r for r in delivery.reasons())
        assert delivery.wait_first_attempt(1.0)  # READY is not held back by a broken file

        def mentions() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "cannot load the TLS files" in r.getMessage()]

        assert wait_for(lambda: len(mentions()) >= 3)  # three attempts so far...
        errors = [r for r in mentions() if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info is None  # ...one ERROR line, no traceback
        assert str(ca) in errors[0].getMessage()
        ca.write_bytes(pki.ca_crt.read_bytes())  # the technician puts the right file there
        assert wait_for(lambda: delivery.connected and delivery.state() == "online")
    finally:
        delivery.stop(timeout=5.0)


def test_a_passphrase_protected_key_is_named_and_never_prompted_for(tmp_path: Path, pki: Any) -> None:
    """A daemon started by hand would wait at OpenSSL's 'Enter PEM pass phrase:' for ever (and
    under systemd fail with an unclear error): the key's passphrase is named instead, in a
    process without a terminal as under systemd."""
    import subprocess
    import sys

    cert, key = pki.client("acme/desk-a")
    encrypted = tmp_path / "device.key"
    subprocess.run(["openssl", "pkey", "-in", key, "-out", encrypted, "-aes256", "-passout", "pass:secret"], check=True)
    probe = f"""
import paho.mqtt.client as mqtt
from deskwatch_contract.credentials import CredentialsError, apply_credentials
from deskwatch_contract.mqttconfig import MqttConfig, TlsConfig
m = MqttConfig(host="127.0.0.1", tls=TlsConfig(enabled=True, ca_file="{pki.ca_crt}", cert_file="{cert}", key_file="{encrypted}"))
try:
    apply_credentials(mqtt.Client(mqtt.CallbackAPIVersion.VERSION2), m)
except CredentialsError as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, start_new_session=True
    )
    assert f"mqtt.tls key_file {encrypted} is protected by a passphrase" in done.stdout, done.stdout + done.stderr
    assert "pass phrase" not in done.stdout + done.stderr
