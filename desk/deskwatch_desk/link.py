"""The companion's connection to the broker, and where it keeps its small state.

The companion reads its own small config (``config.py``: the desk's ``device`` id and
site, and an ``mqtt`` section with the companion's own credentials) and talks only to
its desk's topics: ``deskwatch/v1/{site}/{device_id}/...``.

Its MQTT client id is ``{device_id}-companion-{random}``: never the device id
itself, which would make the broker disconnect the appliance.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from deskwatch_contract import problems, topics
from deskwatch_contract.credentials import CredentialsError, apply_credentials
from deskwatch_contract.jsonutil import dumps_bytes
from deskwatch_contract.mqttconfig import is_loopback
from deskwatch_desk.config import DeskConfig

logger = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]  # (topic suffix, payload)


class LinkSetupError(Exception):
    """The mqtt settings cannot be used as they are (the message says which and why)."""


def default_config_path() -> Path:
    """``$DESKWATCH_DESK_CONFIG``, else the per-user config dir's ``deskwatch/desk.yaml``."""
    env = os.environ.get("DESKWATCH_DESK_CONFIG")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "deskwatch" / "desk.yaml"


def user_state_dir() -> Path:
    """Where the companion keeps its queue: the per-user state dir, never the appliance's."""
    env = os.environ.get("DESKWATCH_DESK_STATE")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "deskwatch-desk"


encode = dumps_bytes


class DeskLink:
    """One paho client (MQTT 5, or 3.1.1 when ``mqtt.protocol`` says so) with automatic reconnects.

    Under ``mqtt.protocol: auto`` a broker that refuses MQTT 5 as an unsupported version (NATS,
    RabbitMQ: brokers the fleet may run) is asked again with 3.1.1, once, as the appliance and
    the technician's probe do (:func:`deskwatch_contract.problems.protocol_fallback`): paho
    keeps a client's version for good, so a new client takes over."""

    def __init__(
        self, cfg: DeskConfig, *, subscriptions: tuple[str, ...] = (), on_message: MessageHandler | None = None
    ):
        self.cfg = cfg
        self.prefix = topics.prefix(cfg.device.site, cfg.device.id)
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.problem: str | None = None
        self._started = False
        self._lock = threading.Lock()  # the client is replaced (protocol fallback) or closed under it
        self._fell_back = False
        m = cfg.mqtt
        if not m.tls.enabled and not is_loopback(m.host):
            if not m.allow_insecure:
                raise LinkSetupError(
                    f"mqtt.tls.enabled is false but broker {m.host} is not on loopback; "
                    "set mqtt.allow_insecure: true only for a lab setup"
                )
            logger.warning("MQTT WITHOUT TLS to %s:%d (mqtt.allow_insecure)", m.host, m.port)
        self.client_id = f"{cfg.device.id}-companion-{uuid.uuid4().hex[:8]}"
        self.protocol = MQTTProtocolVersion.MQTTv311 if m.protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
        self.client = self._new_client(self.protocol)

    def _new_client(self, protocol: MQTTProtocolVersion) -> mqtt.Client:
        m = self.cfg.mqtt
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            clean_session=True if protocol != MQTTProtocolVersion.MQTTv5 else None,
        )
        client.connect_timeout = m.connect_timeout_seconds
        client.reconnect_delay_set(
            min_delay=max(1, round(m.reconnect_min_seconds)), max_delay=max(1, round(m.reconnect_max_seconds))
        )
        try:
            apply_credentials(client, m)
        except CredentialsError as exc:
            raise LinkSetupError(str(exc)) from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        client.on_message = self._on_message
        return client

    @property
    def where(self) -> str:
        return f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (keeps retrying while the broker is away)."""
        if self._started:
            return
        self._started = True
        m = self.cfg.mqtt
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive_seconds)
        self.client.loop_start()

    def wait_ready(self, timeout: float) -> bool:
        """Connected and (if there are subscriptions) subscribed, within ``timeout`` seconds."""
        if not self.connected.wait(timeout):
            return False
        return not self.subscriptions or self.subscribed.wait(timeout)

    def close(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._closing = True
            try:
                self.client.disconnect()
            finally:
                self.client.loop_stop()

    def _fall_back(self, protocol: MQTTProtocolVersion) -> None:
        """Replace the client by one speaking ``protocol`` (on a thread of its own: paho's
        network thread cannot stop its own loop)."""
        with self._lock:
            if not self._started:
                return
            old = self.client
            old.loop_stop()
            self.protocol = protocol
            self.client = self._new_client(protocol)
            m = self.cfg.mqtt
            self.client.connect_async(m.host, m.port, keepalive=m.keepalive_seconds)
            self.client.loop_start()

    # -- publishing -----------------------------------------------------------------------
    def publish(self, suffix: str, payload: dict[str, Any], *, wait: float | None = None) -> bool:
        """Publish QoS 1 to ``prefix + suffix``. With ``wait``, True only once the broker acknowledged."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(self.prefix + suffix, encode(payload), qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if wait is None:
            return True
        try:
            info.wait_for_publish(wait)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    # -- callbacks (paho's network thread) --------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            fallback = None if self._fell_back else problems.protocol_fallback(self.cfg.mqtt, self.protocol, rc, True)
            if fallback is not None:
                self._fell_back = True
                protocol, why = fallback
                logger.warning("%s", why.message)
                threading.Thread(
                    target=self._fall_back, args=(protocol,), name="desk-mqtt-fallback", daemon=True
                ).start()
                return
            # the same words the appliance and the selftest use for the same refusal
            self.problem = problems.refusal(self.cfg.mqtt, rc, self.client_id).message
            logger.error("%s", self.problem)
            return
        self.problem = None
        logger.info("connected to broker %s as %s", self.where, self.cfg.mqtt.username or "(anonymous/certificate)")
        if self.subscriptions:
            client.subscribe([(self.prefix + s, 1) for s in self.subscriptions])
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if self.connected.is_set() and not getattr(self, "_closing", False):
            logger.warning("lost the broker %s (%s); reconnecting", self.where, rc)
        self.connected.clear()
        self.subscribed.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        if rc is not None and rc.is_failure:
            logger.error("broker refused a publish (%s): check the broker ACL for this companion's user", rc)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.topic.startswith(self.prefix) or self.on_message is None:
            return
        try:
            self.on_message(msg.topic[len(self.prefix) :], bytes(msg.payload))
        except Exception:
            logger.exception("handling a message on %s failed", msg.topic)
