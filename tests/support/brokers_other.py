"""A second broker engine for the delivery tests: NATS with its MQTT 3.1.1 listener.

Debian's ``nats-server`` (2.9) speaks MQTT 3.1.1 only and starts in ~0.05 s; QoS 1
needs JetStream, which keeps sessions and retained messages in ``store_dir``. The
tests install nothing: without the binary they skip and say which package to add.

Fixture (register with ``pytest_plugins = [..., "tests.support.brokers_other"]``):
``nats_broker`` -> a started :class:`NatsBroker` with ``port`` (MQTT), ``stop()``,
``start()``, ``restart()``; stopped at teardown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deskwatch_dev.devservers import free_port, stop_process, wait_port
from tests.support.mosquitto import Pki

NATS_SERVER = shutil.which("nats-server")


@dataclass
class NatsBroker:
    workdir: Path
    port: int  # MQTT listener
    client_port: int
    proc: subprocess.Popen[bytes] | None = None
    pki: Pki | None = None  # set: mutual TLS, the user is the certificate subject (verify_and_map)
    authorization: str = ""  # a NATS ``authorization { ... }`` block (deskwatch-ca acl --engine nats)
    host = "127.0.0.1"

    @property
    def tls(self) -> bool:
        return self.pki is not None

    @property
    def conf(self) -> Path:
        return self.workdir / "nats.conf"

    def write_conf(self) -> None:
        tls = ""
        if self.pki is not None:
            tls = (
                f', tls {{ cert_file: "{self.pki.server_crt}", key_file: "{self.pki.server_key}", '
                f'ca_file: "{self.pki.ca_crt}", verify_and_map: true, timeout: 3 }}'
            )
        self.conf.write_text(
            "server_name: deskwatch-test\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f'jetstream {{ store_dir: "{self.workdir / "js"}" }}\n'
            f'mqtt {{ listen: 127.0.0.1:{self.port}, ack_wait: "2s"{tls} }}\n' + self.authorization
        )

    def start(self) -> None:
        assert NATS_SERVER is not None
        with open(self.workdir / "nats.log", "ab") as log:
            self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, 10, self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _need_nats() -> None:
    if NATS_SERVER is None:
        why = "nats-server is not installed (Debian package nats-server; tools/bootstrap.sh installs it)"
        if os.environ.get("CI"):  # in CI the second engine is a requirement, not an option
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def nats_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsBroker]:
    _need_nats()
    broker = NatsBroker(tmp_path_factory.mktemp("nats"), free_port(), free_port())
    broker.write_conf()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def make_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., NatsBroker]]:
    """``make_nats(pki=..., authorization=...)``: a started NATS with mutual TLS and an ACL."""
    _need_nats()
    started: list[NatsBroker] = []

    def make(*, pki: Pki | None = None, authorization: str = "") -> NatsBroker:
        broker = NatsBroker(
            tmp_path_factory.mktemp("nats"), free_port(), free_port(), pki=pki, authorization=authorization
        )
        broker.write_conf()
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()
