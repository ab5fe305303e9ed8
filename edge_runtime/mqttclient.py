"""The one paho-mqtt client factory: MQTT v5, auth and TLS set the same way for every client.

Used by the daemon's link (publish/mqtt.py), the sensor MQTT driver (capture/sensor/mqtt_topic.py)
and the operator commands (commands/push.py). A leaf module: it imports nothing from the package
but errors and the config's section models (config/ is a leaf too), so every stage may use it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.config.sections import MqttConfig
from edge_runtime.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """TLS to the broker: the CA that signed its certificate, and an optional client certificate."""

    ca_file: Path | None = None  # None: the system's trust store
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip the host name check (test brokers only)


@dataclass(frozen=True, slots=True)
class Broker:
    """Where a client connects and as whom."""

    host: str
    port: int = 1883
    keepalive: int = 30
    username: str | None = None
    password: str | None = None
    tls: BrokerTls | None = None
    tls_source: str = "mqtt.tls"  # where the TLS settings came from, for error messages
    # MQTT v5 Maximum Packet Size: the broker drops larger messages for this client instead of
    # sending them, so an oversized publish on a subscribed topic never reaches the process
    max_packet_bytes: int | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def broker_of(cfg: MqttConfig) -> Broker:
    """The daemon config's ``mqtt:`` section as connection settings (the password already read)."""
    tls = cfg.tls
    return Broker(
        host=cfg.host,
        port=cfg.port,
        keepalive=cfg.keepalive,
        username=cfg.username,
        password=cfg.password,
        tls=BrokerTls(tls.ca_file, tls.cert_file, tls.key_file, tls.insecure) if tls else None,
        max_packet_bytes=cfg.max_packet_bytes,
    )


def make_client(broker: Broker, client_id: str, *, reconnect_on_failure: bool = True) -> mqtt.Client:
    """A paho 2.x client (MQTT v5, callback API 2) with ``broker``'s auth and TLS set.

    Raises ConfigError when the TLS files cannot be used (missing, unreadable, not a certificate).
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=reconnect_on_failure,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls is not None:
        tls = broker.tls
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{broker.tls_source}: cannot use the TLS files: {exc}") from exc
        client.tls_insecure_set(tls.insecure)
    return client


def connect_properties(broker: Broker, expiry_s: int) -> Properties:
    """CONNECT properties: keep the session ``expiry_s`` seconds (0: not at all), and the largest
    packet this client takes (``broker.max_packet_bytes``; the broker drops larger messages for it).
    """
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry_s
    if broker.max_packet_bytes is not None:
        props.MaximumPacketSize = broker.max_packet_bytes
    return props
