"""Real Mosquitto brokers on loopback for tests: plain, TLS, mutual TLS + ACL.

Fixtures (register with ``pytest_plugins = [..., "support.mosquitto"]``):

- ``pki``: a throwaway CA (the project's ``deskwatch-ca``) with a server certificate for
  127.0.0.1 and ``pki.client(cn)`` for device, companion and central certificates. Session-scoped.
- ``make_broker``: factory ``make_broker(tls=False, mutual=False, acl=None, passwords=None,
  extra="")`` returning a started :class:`Broker`; every broker is stopped at teardown.
- ``mosquitto``: a plain broker (anonymous, loopback only).
- ``mosquitto_tls``: TLS with the test CA, a password file (user ``desk-a`` / ``secret-a``).
- ``mosquitto_mtls``: mutual TLS, certificate CN = user name, the generated fleet ACL.

Also :class:`Collector`, a subscriber that records what arrives, and
:func:`device_config` for a ``Config`` pointing a device at a broker.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from deskwatch_contract import access, ca
from deskwatch_dev.devservers import MOSQUITTO, free_port, stop_process, wait_port


class Pki:
    """A test CA made by the project's own CA helper (``deskwatch-ca``), with a server
    certificate for 127.0.0.1 and ``pki.client(cn)`` for any identity: ``SITE/DEVICE``
    (a device), ``SITE/DEVICE/companion`` or a central service name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca_dir = root / "ca"
        self.ca_crt = ca.init(self.ca_dir, days=2, name="deskwatch-test-ca")
        self.ca_key = self.ca_dir / "ca.key"
        self.server_crt, self.server_key = ca.server(
            self.ca_dir, "localhost", root / "server", ips=["127.0.0.1"], days=2
        )

    def client(self, cn: str) -> tuple[Path, Path]:
        """(certificate, key) for ``cn``, issued once (and so listed in :meth:`acl`)."""
        out = self.root / "clients" / cn.replace("/", "__")
        found = sorted(out.glob("*.crt")) if out.exists() else []
        certs = [c for c in found if c.name != "ca.crt"]
        if certs:
            return certs[0], certs[0].with_suffix(".key")
        return ca.issue(self.ca_dir, access.parse_cn(cn), out, days=2)

    def acl(self, engine: str = "mosquitto") -> str:
        """The broker ACL ``deskwatch-ca acl`` renders from every certificate issued so far."""
        return ca.render_acl(self.ca_dir, engine)

    def other_ca(self) -> Path:
        """A second, unrelated CA certificate (for "wrong CA" tests)."""
        other = self.root / "other"
        if not (other / "ca" / "ca.crt").exists():
            Pki(other)
        return other / "ca" / "ca.crt"


@dataclass
class Broker:
    workdir: Path
    port: int
    conf: Path
    tls: bool = False
    pki: Pki | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "mosquitto.log"

    host = "127.0.0.1"

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, timeout, self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def write_conf(
    workdir: Path,
    port: int,
    *,
    tls: bool,
    mutual: bool,
    pki: Pki | None,
    acl: str | None,
    passwords: dict[str, str] | None,
    extra: str,
    persistent: bool = False,
) -> Path:
    persistence = ["persistence false"]
    if persistent:  # sessions and queued messages survive a (clean) broker restart
        persistence = ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
    lines = [
        f"listener {port} 127.0.0.1",
        *persistence,
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_dest stdout",
        "max_inflight_messages 0",
        "max_queued_messages 100000",
    ]
    if os.geteuid() == 0:
        lines.insert(0, "user root")
    if tls:
        assert pki is not None
        lines += [f"cafile {pki.ca_crt}", f"certfile {pki.server_crt}", f"keyfile {pki.server_key}"]
    if mutual:
        lines += ["require_certificate true", "use_identity_as_username true"]
    anonymous = not (mutual or passwords)
    lines.append(f"allow_anonymous {'true' if anonymous else 'false'}")
    if passwords:
        pw = workdir / "passwords"
        pw.write_text("")
        for user, password in passwords.items():
            subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
        lines.append(f"password_file {pw}")
    if acl is not None:
        acl_path = workdir / "acl"
        acl_path.write_text(acl)
        lines.append(f"acl_file {acl_path}")
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n" + extra + "\n")
    return conf


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


MakeBroker = Callable[..., Broker]


@pytest.fixture
def make_broker(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[MakeBroker]:
    started: list[Broker] = []

    def make(
        *,
        tls: bool = False,
        mutual: bool = False,
        acl: str | None = None,
        passwords: dict[str, str] | None = None,
        extra: str = "",
        start: bool = True,
        persistent: bool = False,
    ) -> Broker:
        ca = request.getfixturevalue("pki") if tls or mutual else None
        workdir = tmp_path_factory.mktemp("mosquitto")
        port = free_port()
        conf = write_conf(
            workdir,
            port,
            tls=tls or mutual,
            mutual=mutual,
            pki=ca,
            acl=acl,
            passwords=passwords,
            extra=extra,
            persistent=persistent,
        )
        broker = Broker(workdir, port, conf, tls=tls or mutual, pki=ca)
        started.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def mosquitto(make_broker: MakeBroker) -> Broker:
    return make_broker()


@pytest.fixture
def mosquitto_tls(make_broker: MakeBroker) -> Broker:
    return make_broker(tls=True, passwords={"desk-a": "secret-a"})


# The identities most broker tests use; fleet_acl() issues them before rendering.
FLEET = ("acme/desk-a", "acme/desk-b", "acme/desk-a/companion", "acme-support/desk-0042", "deskwatch-central")


def fleet_acl(pki: Pki, *more: str) -> str:
    """The fleet ACL as the project generates it, for FLEET and ``more`` identities."""
    for cn in (*FLEET, *more):
        pki.client(cn)
    return pki.acl()


@pytest.fixture
def mosquitto_mtls(make_broker: MakeBroker, pki: Pki) -> Broker:
    return make_broker(mutual=True, acl=fleet_acl(pki))


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    user_properties: dict[str, str]


class Collector:
    """A subscriber that records every message it receives (thread-safe)."""

    def __init__(
        self,
        broker: Broker,
        topics: str | list[str] = "#",
        *,
        protocol: int = mqtt.MQTTv5,
        client_id: str = "",
        cert: tuple[Path, Path] | None = None,
        username: str | None = None,
        password: str | None = None,
        persistent_session: bool = False,
    ) -> None:
        self.messages: list[Received] = []
        self.cond = threading.Condition()
        self.subscribed = threading.Event()
        self.granted: list[Any] = []
        if persistent_session:  # with a persistent broker: nothing is missed across broker restarts
            protocol, client_id = mqtt.MQTTv311, client_id or "collector"
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTProtocolVersion(protocol),
            clean_session=(not persistent_session) if protocol != mqtt.MQTTv5 else None,
        )
        self.client.reconnect_delay_set(0.05, 0.5)
        if broker.tls:
            assert broker.pki is not None
            self.client.tls_set(
                ca_certs=str(broker.pki.ca_crt),
                certfile=str(cert[0]) if cert else None,
                keyfile=str(cert[1]) if cert else None,
            )
        if username:
            self.client.username_pw_set(username, password)
        topics = [topics] if isinstance(topics, str) else topics
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("collector did not get its SUBACK")

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self.granted = list(rcs)
        self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, str] = {}
        if msg.properties is not None and hasattr(msg.properties, "UserProperty"):
            props = dict(msg.properties.UserProperty)
        with self.cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), props))
            self.cond.notify_all()

    def on(self, suffix: str) -> list[Received]:
        with self.cond:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.2))
            return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def device_config(
    state_dir: Path,
    broker: Broker,
    *,
    device_id: str = "desk-a",
    site: str = "acme",
    mqtt_extra: str = "",
    tls: str | None = None,
    extra: str = "",
) -> Any:
    """A validated ``Config`` for a device talking to ``broker`` (fast reconnects for tests)."""
    from deskwatch.config import load_config_text

    if tls is None:
        if broker.tls:
            assert broker.pki is not None
            tls = f"enabled: true\n    ca_file: {broker.pki.ca_crt}"
        else:
            tls = "enabled: false"
    text = f"""
device: {{id: {device_id}, site: {site}, worker_id: w-1}}
state_dir: {state_dir}
mqtt:
  host: 127.0.0.1
  port: {broker.port}
  reconnect_min_seconds: 0.1
  reconnect_max_seconds: 1.0
  connect_timeout_seconds: 3
  tls:
    {tls}
{mqtt_extra}
{extra}
"""
    return load_config_text(text, "test-config.yaml")
