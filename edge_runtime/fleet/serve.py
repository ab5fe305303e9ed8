"""``fleet serve``: a long-running server of the MQTT chunks of every signed bundle in a folder.

With manifests retained on the broker (desired state), devices start downloading whenever they
connect, long after ``push`` has exited; this process answers their chunk requests for as long as
it runs. The folder holds bundles as ``bundle sign`` leaves them (``X`` and ``X.manifest.json``);
it is scanned again every ``rescan_s`` and when a device asks for an update not known yet (at
most once per ``rescan_s / 10``), so a bundle copied in later is served without a restart. A
bundle whose bytes do not match its signed manifest (still being copied, or damaged) is not
offered until they do. Requests are handled by one thread from a bounded queue; a flood costs
dropped requests, never memory (fleet/chunks.py bounds each answer).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.errors import EdgeRuntimeError, InputError, UpdateError
from edge_runtime.fleet.chunks import MANIFEST_SUFFIX, ChunkSender, Offer
from edge_runtime.mqttclient import Broker, make_client
from edge_runtime.throttle import Throttle

logger = logging.getLogger(__name__)
_THROTTLE = Throttle(per_s=60.0, burst=5)  # lines that requests from anyone can cause
_UPDATE_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_QUEUED = 1000  # requests waiting; more are dropped (devices ask again)
MAX_OUTGOING = 256  # chunks queued in the MQTT client; more wait for the next request


class Catalog:
    """The signed bundles of one folder, by update id; ``rescan`` picks up what changed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.offers: dict[str, Offer] = {}
        self._seen: dict[Path, tuple[float, float, int]] = {}  # manifest -> (mtime, bundle mtime, size)
        self._by_file: dict[Path, Offer] = {}

    def rescan(self) -> list[str]:
        """Read the folder again; one line per change (a bundle offered, withdrawn or refused)."""
        notes: list[str] = []
        present = set(self.folder.glob(f"*{MANIFEST_SUFFIX}"))
        for gone in set(self._seen) - present:
            self._seen.pop(gone)
            old = self._by_file.pop(gone, None)
            if old is not None:
                notes.append(f"withdrawn: {old.path.name} (update {old.update})")
        for path in sorted(present):
            bundle = path.with_name(path.name.removesuffix(MANIFEST_SUFFIX))
            try:
                stamp = (path.stat().st_mtime, bundle.stat().st_mtime, bundle.stat().st_size)
            except OSError:
                stamp = (0.0, 0.0, -1)
            if self._seen.get(path) == stamp:
                continue
            self._seen[path] = stamp
            self._by_file.pop(path, None)
            note = self._load(path, bundle)
            if note:
                notes.append(note)
        self.offers = {offer.update: offer for offer in self._by_file.values()}
        return notes

    def _load(self, manifest: Path, bundle: Path) -> str:
        try:
            offer = Offer.load(bundle)
        except InputError as exc:
            return f"not served: {exc}"
        if not offer.matches():
            return f"not served (yet): {bundle.name} does not match its signed size and sha256"
        self._by_file[manifest] = offer
        m = offer.manifest
        return f"serving {bundle.name}: update {offer.update}, {m.name} {m.version}, {offer.count} chunks"


class ChunkServer:
    """Connects, subscribes to every update's chunk requests and answers them until ``stop``."""

    def __init__(
        self,
        folder: Path,
        broker: Broker,
        *,
        prefix: str,
        rescan_s: float = 10.0,
        max_bytes_per_s: float = 8 * 1024 * 1024,
    ) -> None:
        self.catalog, self.broker, self.prefix, self.rescan_s = Catalog(folder), broker, prefix, rescan_s
        self.stop_event = threading.Event()
        self.requests: queue.Queue[tuple[str, bytes]] = queue.Queue(MAX_QUEUED)
        self.dropped = 0
        self.client = make_client(broker, f"edge-fleet-serve-{uuid.uuid4().hex[:8]}")
        self.client.max_queued_messages_set(MAX_OUTGOING)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.sender = ChunkSender(self._publish, prefix=prefix, max_bytes_per_s=max_bytes_per_s)
        self._last_scan = self._last_unknown_scan = 0.0

    def run(self) -> None:
        """Serve until ``stop_event`` is set (SIGTERM in the command); reconnects on its own."""
        self._scan()
        if not self.catalog.offers:
            logger.warning("fleet serve: no signed bundle in %s yet (watching it)", self.catalog.folder)
        b = self.broker
        try:
            self.client.connect(b.host, b.port, keepalive=b.keepalive)
        except (OSError, ValueError) as exc:
            raise EdgeRuntimeError(f"cannot connect to the broker {b}: {exc}") from exc
        self.client.loop_start()
        try:
            while not self.stop_event.is_set():
                self._step()
        finally:
            self.client.disconnect()
            self.client.loop_stop()

    def _step(self) -> None:
        try:
            topic, payload = self.requests.get(timeout=0.5)
        except queue.Empty:
            topic = ""
        now = time.monotonic()
        if now - self._last_scan >= self.rescan_s:
            self._scan()
        if topic:
            self._answer(topic, payload)

    def _scan(self) -> None:
        self._last_scan = time.monotonic()
        for note in self.catalog.rescan():
            logger.info("fleet serve: %s", note)

    def _answer(self, topic: str, payload: bytes) -> None:
        update = topic[len(self.prefix) + len("/updates/") :].removesuffix("/request")
        if not _UPDATE_ID.match(update):
            return  # not an update id: nobody's request
        offer = self.catalog.offers.get(update)
        now = time.monotonic()
        if offer is None and now - self._last_unknown_scan >= self.rescan_s / 10:
            self._last_unknown_scan = now
            self._scan()
            offer = self.catalog.offers.get(update)
        if offer is None:
            _THROTTLE.log(logger, logging.INFO, "unknown", "fleet serve: update %s is not in DIR", update)
            return
        try:
            self.sender.answer(offer, payload)
        except UpdateError as exc:
            _THROTTLE.log(logger, logging.INFO, "bad", "fleet serve: request for %s ignored: %s", update, exc)
        except OSError as exc:  # the file went away between the scan and now
            _THROTTLE.log(logger, logging.WARNING, "io", "fleet serve: %s: %s", offer.path, exc)

    # -- paho's thread: enqueue only ---------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            _THROTTLE.log(logger, logging.WARNING, "connect", "fleet serve: broker refused: %s", reason)
            return
        count = len(self.catalog.offers)
        logger.info("fleet serve: connected to %s, serving %d bundle(s)", self.broker, count)
        client.subscribe(f"{self.prefix}/updates/+/request", qos=0)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.requests.put_nowait((msg.topic, bytes(msg.payload)))
        except (queue.Full, UnicodeDecodeError):
            self.dropped += 1

    def _publish(self, topic: str, data: bytes) -> bool:
        return self.client.publish(topic, data, qos=1).rc == mqtt.MQTT_ERR_SUCCESS
