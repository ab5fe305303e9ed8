"""A short operator session on the broker: connect, subscribe, publish, collect the answers."""

from __future__ import annotations

import queue
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.mqttclient import Broker, make_client


class Session:
    """One paho client in its own loop thread; messages on ``subscribe`` land in ``inbox``."""

    def __init__(self, broker: Broker, subscribe: list[str], *, what: str) -> None:
        self.broker, self.topics = broker, subscribe
        self.inbox: queue.SimpleQueue[mqtt.MQTTMessage] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: str | None = None
        self.client = make_client(broker, f"edge-runtime-{what}-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = lambda _c, _u, m: self.inbox.put(m)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._error = f"broker {self.broker} refused the connection: {reason}"
            self._ready.set()
            return
        client.subscribe([(t, 1) for t in self.topics])

    def __enter__(self) -> Session:
        try:
            self.client.connect(self.broker.host, self.broker.port, self.broker.keepalive)
        except OSError as exc:
            raise EdgeRuntimeError(f"cannot connect to {self.broker}: {exc}") from exc
        self.client.loop_start()
        if not self._ready.wait(10.0) or self._error:
            self.close()
            raise EdgeRuntimeError(self._error or f"no answer from broker {self.broker} within 10 s")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, props: Any = None) -> None:
        """Publish at QoS 1 and wait until the broker has it."""
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        info.wait_for_publish(10.0)
        if not info.is_published():
            raise EdgeRuntimeError(f"broker {self.broker} did not take the message on {topic}")

    def close(self) -> None:
        """Disconnect and stop the loop."""
        self.client.disconnect()
        self.client.loop_stop()
