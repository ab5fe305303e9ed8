"""A real mosquitto per test on a free 127.0.0.1 port, killed by PID; a recording subscriber."""

from __future__ import annotations

import getpass
import json
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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.timeouts import scaled

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (scaled: tests/timeouts.py); the last value."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Broker:
    """mosquitto with a generated config; ``kill`` is SIGKILL, ``start`` reuses the same port."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = "") -> None:
        self.workdir, self.port, self.extra = workdir, port or free_port(), extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.log = workdir / f"mosquitto-{self.port}.log"

    def start(self) -> Broker:
        """Start and wait until it accepts connections."""
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            # started as root, mosquitto drops to user `mosquitto`, which can neither read nor
            # write the test's private temp folder: stay the user who runs the tests
            f"user {getpass.getuser()}\n"
            # persistence saved on every change: a test subscriber's session (and what is queued
            # for it) survives a SIGKILL of the broker, so nothing published after a restart is
            # missed because the subscriber reconnected a moment later than the daemon
            f"persistence true\npersistence_location {self.workdir}/\n"
            f"persistence_file mosquitto-{self.port}.db\nautosave_on_changes true\nautosave_interval 1\n"
            f"max_queued_messages 100000\n{self.extra}\n"
        )
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        if not wait_for(self._listening, 10):
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL by PID (no clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


class Recorder:
    """A paho v5 subscriber that records every message (parsed as JSON where possible)."""

    def __init__(self, port: int, topic: str = "#", host: str = "127.0.0.1") -> None:
        self.messages: list[tuple[str, Any, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"recorder-{id(self)}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.subscriptions = 0
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = self._on_subscribe
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # keep our subscription across broker restarts
        self.client.connect(host, port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(scaled(10)):
            raise RuntimeError("subscriber did not subscribe")

    def _on_subscribe(self, *_: Any) -> None:
        self.subscriptions += 1
        self.subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload: Any = json.loads(msg.payload)
        except (ValueError, RecursionError):  # anything may arrive: hostile-input tests send deep nesting
            payload = msg.payload
        with self._lock:
            self.messages.append((msg.topic, payload, bool(msg.retain)))

    def on(self, suffix: str) -> list[Any]:
        """Payloads of messages whose topic ends with ``suffix``."""
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()
