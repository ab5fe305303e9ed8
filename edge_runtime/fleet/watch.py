"""An operator-side MQTT subscriber feeding a :class:`FleetState`, with a bounded inbox.

paho's callback only queues the message (topic, bytes, retain flag); the caller's thread parses
it in :meth:`FleetWatcher.drain`. The inbox holds at most ``max_queued_bytes``: beyond that a
flood is dropped and counted, not stored. The broker is told the largest packet we take (MQTT v5
Maximum Packet Size), so an oversized retained message never reaches this process at all.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.fleet.records import FleetState
from edge_runtime.mqttclient import Broker, connect_properties, make_client

Message = tuple[str, bytes, bool]  # topic, payload, retained


class FleetWatcher:
    """Subscribes to the fleet's status topics (and ``extra`` ones) and feeds ``state``.

    Messages on ``extra`` topics go to ``on_extra`` instead (e.g. chunk requests during a push).
    """

    def __init__(
        self,
        broker: Broker,
        state: FleetState,
        *,
        client_prefix: str = "edge-fleet",
        extra: tuple[str, ...] = (),
        on_extra: Callable[[str, bytes], None] | None = None,
        max_queued_bytes: int = 64 * 1024 * 1024,
        client: mqtt.Client | None = None,
    ) -> None:
        """``client``: an unconnected paho client to use (one that other code publishes with)."""
        self.state, self.extra, self.on_extra = state, extra, on_extra
        self.max_queued_bytes = max_queued_bytes
        self.broker = dataclasses.replace(broker, max_packet_bytes=state.max_bytes + 4096)
        self._inbox: deque[Message] = deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._arrived = threading.Event()
        self.dropped = 0  # messages dropped because the inbox was full
        self._refused: str | None = None  # the broker's reason when it refused the connection
        self.client = client or make_client(self.broker, f"{client_prefix}-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; raises EdgeRuntimeError when the broker cannot be reached."""
        b = self.broker
        try:
            self.client.connect(b.host, b.port, keepalive=b.keepalive, properties=connect_properties(b, 0))
        except (OSError, ValueError) as exc:
            raise EdgeRuntimeError(f"cannot connect to the broker {b}: {exc}") from exc
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1) and self._refused is None and time.monotonic() < deadline:
            pass
        if not self._ready.is_set():
            self.close()
            if self._refused:
                raise EdgeRuntimeError(f"the broker {b} refused the connection: {self._refused}")
            raise EdgeRuntimeError(f"the broker {b} did not take our subscriptions within {timeout:g} s")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            self._refused = str(reason)  # e.g. "Not authorized", "Bad user name or password"
            return
        client.subscribe([(t, 1) for t in (*self.state.topics(), *self.extra)])  # on every connect

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        size = len(msg.payload) + len(msg.topic)
        with self._lock:
            if self._queued + size > self.max_queued_bytes:
                self.dropped += 1
                return
            self._queued += size
            self._inbox.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
        self._arrived.set()

    def _pop(self) -> Message | None:
        with self._lock:
            if not self._inbox:
                self._arrived.clear()
                return None
            topic, payload, retained = self._inbox.popleft()
            self._queued -= len(payload) + len(topic)
            return topic, payload, retained

    def drain(self, until: float, quiet: float | None = None) -> int:
        """Handle messages until the monotonic time ``until``; with ``quiet``, stop earlier once
        no retained message came for that long (the burst that follows a subscription is over,
        however busy the live traffic). How many messages were handled."""
        handled = 0
        last = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= until or (quiet is not None and now - last >= quiet):
                return handled
            item = self._pop()
            if item is None:
                wait = until - now if quiet is None else min(until - now, quiet - (now - last))
                self._arrived.wait(max(0.0, wait))
                continue
            handled += 1
            topic, payload, retained = item
            if retained:
                last = now
            if self.on_extra is not None and self.state.classify(topic) is None:
                self.on_extra(topic, payload)
            else:
                self.state.feed(topic, payload, retained)

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, timeout: float = 10) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK (bounded)."""
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout)

    def close(self) -> None:
        """Disconnect and stop paho's thread."""
        self.client.disconnect()
        self.client.loop_stop()
