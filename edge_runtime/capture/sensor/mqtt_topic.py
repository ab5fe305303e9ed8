"""Samples published by other devices on an MQTT topic of the daemon's own broker.

Its own small paho client (mqttclient.py; client id ``<device>-sensor-<pipeline>``, MQTT v5, QoS 1, a session
that outlives short disconnects so the broker queues what arrives meanwhile). Each message holds
one or more lines in the source's format. paho's callbacks only enqueue; parsing happens on the
source thread. One topic should carry one stream: samples of two publishers interleaved on the
same topic would be windowed together.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.capture.sensor.drivers import Reading, parse_lines
from edge_runtime.capture.sensor.samples import LineParser, LineSplitter
from edge_runtime.config.sections import MqttConfig
from edge_runtime.errors import ConfigError, DeviceLostError
from edge_runtime.mqttclient import Broker, broker_of, connect_properties, make_client

SESSION_EXPIRY_S = 300  # the broker keeps our subscription and queued messages this long


class MqttTopicDriver:
    """Subscribes to ``topic``; a lost connection raises DeviceLostError (the source reconnects)."""

    def __init__(
        self,
        topic: str,
        parser: LineParser,
        cfg: MqttConfig,
        client_id: str,
        stop: threading.Event,
        *,
        subscribe_timeout_s: float = 10.0,
        max_queued: int = 100_000,
    ) -> None:
        self.topic, self.parser, self.cfg, self.client_id = topic, parser, cfg, client_id
        self.stop = stop
        self.subscribe_timeout_s = subscribe_timeout_s
        self.describe = f"mqtt {cfg.host}:{cfg.port} {topic}"
        self.dropped = 0  # messages refused because the queue was full
        self._messages: queue.Queue[bytes] = queue.Queue(maxsize=max_queued)
        self._subscribed = threading.Event()
        self._lost = threading.Event()
        self._client: mqtt.Client | None = None

    @property
    def idle_reason(self) -> str | None:
        """Always None while connected (a lost connection raises from read)."""
        return None

    def _new_client(self, broker: Broker) -> mqtt.Client:
        client = make_client(broker, self.client_id)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_disconnect = lambda *_: self._lost.set()
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._lost.set()
        else:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._messages.put_nowait(bytes(msg.payload))
        except queue.Full:
            self.dropped += 1

    def open(self) -> None:
        """Connect and subscribe (OSError or DeviceLostError when the broker is not there)."""
        self._subscribed.clear()
        self._lost.clear()
        broker = broker_of(self.cfg)  # the daemon link's limits too (mqtt.max_packet_bytes)
        try:
            self._client = self._new_client(broker)
        except ConfigError as exc:  # unusable TLS files: retried like an absent broker, and said
            raise DeviceLostError(f"{self.cfg.host}:{self.cfg.port}: {exc}") from exc
        props = connect_properties(broker, SESSION_EXPIRY_S)
        try:
            self._client.connect(
                self.cfg.host, self.cfg.port, self.cfg.keepalive, clean_start=False, properties=props
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise DeviceLostError(f"{self.cfg.host}:{self.cfg.port}: {exc}") from exc
        self._client.loop_start()
        deadline = time.monotonic() + self.subscribe_timeout_s
        # short slices that look at the stop flag: a stop is quick, the watchdog sees progress
        while not self._subscribed.wait(0.2):
            if self.stop.is_set() or self._lost.is_set() or time.monotonic() > deadline:
                raise DeviceLostError(f"{self.cfg.host}:{self.cfg.port}: no subscription to {self.topic}")

    def read(self, timeout: float) -> list[Reading]:
        """The lines of every message received within ``timeout``."""
        if self._lost.is_set():
            raise DeviceLostError(f"{self.cfg.host}:{self.cfg.port}: connection lost")
        try:
            payloads = [self._messages.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(payloads) < 1000:
            try:
                payloads.append(self._messages.get_nowait())
            except queue.Empty:
                break
        out: list[Reading] = []
        for payload in payloads:
            splitter = LineSplitter()  # a message is complete: its last line needs no newline
            out += parse_lines(self.parser, splitter.feed(payload) + splitter.flush())
        return out

    def close(self) -> None:
        """Disconnect (the broker keeps the session for a while)."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
