"""A private mosquitto on a free loopback port and a recording subscriber, for the benchmarks.

Used by ``scripts/bench/benchmark.py`` and ``scripts/bench/bench_outbox.py``. The broker is started from a
generated config, stays the current user (so it can write its log where the benchmark does) and is
killed by its PID. Its queues are made large: a benchmark measures the device side, so the broker
must never be what drops or throttles messages.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """mosquitto on 127.0.0.1:``port`` (a free one by default), no persistence."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir, self.port = workdir, port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"mosquitto-{self.port}.log"

    def start(self) -> Broker:
        """Start and wait until it accepts connections (raises RuntimeError when it does not)."""
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            # run as the current user: dropping to `mosquitto` would lose access to the log folder
            f"user {getpass.getuser()}\n"
            "persistence false\n"
            # a replay burst of tens of thousands of messages must not hit the default per-client
            # queue (1000) or in-flight window (20) towards the subscriber
            "max_queued_messages 1000000\nmax_inflight_messages 1000\n"
        )
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not listening(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.kill()
                raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-1000:]}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL by PID."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


class Subscriber:
    """Records ``(receipt time, topic, payload)`` of every message on ``topic`` (QoS 1).

    The callback only appends: parsing happens after a measurement, so the subscriber takes as
    little CPU as possible from the process it measures.
    """

    def __init__(self, port: int, topic: str, client_id: str = "bench-subscriber") -> None:
        self.topic = topic
        self.records: list[tuple[float, str, bytes]] = []
        self.subscribed_at: float | None = None
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"subscriber could not subscribe on port {port}")

    def _on_subscribe(self, *_: Any) -> None:
        self.subscribed_at = time.time()
        self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.records.append((time.time(), msg.topic, msg.payload))

    def clear(self) -> None:
        """Forget what was received so far."""
        self.records = []

    def count(self) -> int:
        """Messages received since the last :meth:`clear`."""
        return len(self.records)

    def first_after(self, t: float, timeout: float, alive: Callable[[], bool] = lambda: True) -> float | None:
        """Receipt time of the first message received after ``t``, waiting up to ``timeout``.

        Gives up early once ``alive()`` is false (the publishing process has exited).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            for rt, _, _ in self.records:
                if rt >= t:
                    return rt
            time.sleep(0.02)
        return None

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()
