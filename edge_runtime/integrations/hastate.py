"""Home Assistant at run time: the discovery message, entity states, Home Assistant's birth
message, and the removal of what an earlier config published (docs/integrations.md).

What was published is recorded in ``home-assistant.json`` next to the outbox, so a later start
with the section disabled (or a pipeline gone) removes exactly that: an empty retained config
removes the device, a component reduced to its ``p`` removes that entity.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edge_runtime.config.integrations import HomeAssistantConfig
from edge_runtime.integrations import homeassistant as ha
from edge_runtime.integrations.ports import DaemonView, models_of, pipeline_views
from edge_runtime.integrations.snapshots import SnapshotHolder
from edge_runtime.integrations.status import RateMeter
from edge_runtime.throttle import Throttle

logger = logging.getLogger(__name__)
_FAILURES = Throttle(per_s=60.0, burst=3)
MAX_LABELS = 10


class HomeAssistant:
    """Discovery and states for one daemon; the ``home-assistant`` thread publishes states."""

    def __init__(
        self,
        cfg: HomeAssistantConfig,
        daemon: DaemonView,
        holders: Mapping[str, SnapshotHolder],
        version: str,
        *,
        record: Path,
        announce_min_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg, self.daemon, self.holders, self.version, self.record = cfg, daemon, holders, version, record
        self.announce_min_s, self.clock = announce_min_s, clock
        self.topic = ha.discovery_topic(cfg.discovery_prefix, cfg.node_id or daemon.cfg.device.id)
        self.birth_topic = f"{cfg.discovery_prefix}/status"
        self.announcements = 0  # birth messages acted on (tests, health of the integration)
        self.meter = RateMeter()
        self._announced = threading.Event()
        self._due = False  # discovery and every state still to publish (at start; after a failure)
        self._next_announce = 0.0
        self._sent: dict[str, bytes] = {}  # state topic -> last payload
        self._infos = {p.name: self._info(p.name) for p in pipeline_views(daemon)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="home-assistant", daemon=True)

    def _info(self, pipeline: str) -> ha.PipelineInfo:
        task, model_labels = self.daemon.pipeline_model(pipeline)
        pc = next(p for p in self.daemon.cfg.pipelines if p.name == pipeline)
        labels = (
            self.cfg.labels.get(pipeline) or (pc.snapshots.labels if pc.snapshots else []) or model_labels
        )
        return ha.PipelineInfo(pipeline, task, tuple(labels[:MAX_LABELS]))

    # -- discovery ------------------------------------------------------------------------------
    def body(self) -> dict[str, Any]:
        """The discovery message, with the components a previous start published and this one
        no longer has reduced to their platform (that removes them)."""
        body = ha.discovery(
            node_id=self.cfg.node_id or self.daemon.cfg.device.id,
            device=self.daemon.cfg.device.id,
            version=self.version,
            base=self.daemon.topics.base,
            status_topic=self.daemon.topics.status,
            pipelines=list(self._infos.values()),
            models=sorted(models_of(self.daemon)),
            origin_url=self.cfg.origin_url,
        )
        previous = self._read_record()
        if previous.get("topic") == self.topic:
            gone = {k: v for k, v in previous.get("components", {}).items() if k not in body["cmps"]}
            body["cmps"].update(ha.removal(gone)["cmps"])
        return body

    def publish_discovery(self) -> None:
        """The discovery message (retained, through the outbox), and the record of it."""
        body = self.body()
        previous = self._read_record()
        if previous.get("topic") not in (None, self.topic):  # prefix or node id changed
            self.daemon.put_retained(str(previous["topic"]), b"")
        self.daemon.put_retained(self.topic, json.dumps(body, separators=(",", ":")).encode())
        live = {k: v for k, v in ha.platforms(body).items() if len(body["cmps"][k]) > 1}
        self._write_record({"topic": self.topic, "components": live})

    def remove_previous(self) -> None:
        """The section is disabled: remove the device an earlier start published, if any."""
        previous = self._read_record()
        if previous.get("topic"):
            self.daemon.put_retained(str(previous["topic"]), b"")
            logger.info("home assistant: removed the device published on %s", previous["topic"])
        self.record.unlink(missing_ok=True)

    # -- states ---------------------------------------------------------------------------------
    def states(self) -> dict[str, bytes]:
        """State topic -> payload, now."""
        out: dict[str, bytes] = {}
        for p in pipeline_views(self.daemon):
            info = self._infos.get(p.name)
            holder = self.holders.get(p.name)
            if info is None or holder is None:
                continue
            fps = self.meter.rate(p.name, p.metrics.inferred)
            p50 = p.metrics.latency_report().get("inference", {}).get("p50")
            state = ha.pipeline_state(holder.result, info.labels, fps, None if p50 is None else round(p50, 1))
            out[ha.state_topic(self.daemon.topics.base, p.name)] = _encode(state)
        outbox = self.daemon.outbox
        device = {
            "outbox_backlog": outbox.pending if outbox is not None else None,
            "models": {slot: d.get("version") for slot, d in models_of(self.daemon).items()},
        }
        out[ha.state_topic(self.daemon.topics.base, None)] = _encode(device)
        return out

    def publish_states(self, force: bool = False) -> int:
        """The states that changed since last sent (all with ``force``); how many were sent."""
        sent = 0
        for topic, payload in self.states().items():
            if force or self._sent.get(topic) != payload:
                self.daemon.put_retained(topic, payload)
                self._sent[topic] = payload
                sent += 1
        return sent

    # -- Home Assistant's birth message -----------------------------------------------------------
    def on_birth(self, _topic: str, payload: bytes) -> None:
        """Paho's thread: only exactly ``online`` counts, and it only sets a flag (anyone may
        publish there; the thread acts at most every ``announce_min_s``)."""
        if payload == b"online":
            self._announced.set()

    def tick(self) -> None:
        """One turn of the thread: answer a birth message if one came and is allowed, then states."""
        now = self.clock()
        if self._announced.is_set() and now >= self._next_announce:
            self._announced.clear()
            self._next_announce = now + self.announce_min_s
            self.announcements += 1
            self._due = True
        if self._due:  # stays due until it went through (the outbox may refuse: a full disk)
            self.publish_discovery()
            self.publish_states(force=True)
            self._due = False
            return
        self.publish_states()

    def start(self) -> None:
        """Listen for Home Assistant's birth; the thread publishes discovery and states first."""
        self._due = True
        self.daemon.link.route(self.birth_topic, self.on_birth)
        self._thread.start()
        logger.info("home assistant: device discovery on %s", self.topic)

    def close(self) -> None:
        """Stop listening and publishing."""
        self._stop.set()
        if self.daemon.link is not None:
            self.daemon.link.route(self.birth_topic, None)
        if self._thread.is_alive():
            self._thread.join(2.0)

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception as exc:  # a supervisor loop; a full disk would repeat this every turn
                _FAILURES.log(logger, logging.WARNING, "", "home assistant: publishing failed: %s", exc)
            if self._stop.wait(self.cfg.state_interval_s):
                return

    # -- the record -----------------------------------------------------------------------------
    def _read_record(self) -> dict[str, Any]:
        try:
            data = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_record(self, data: dict[str, Any]) -> None:
        tmp = self.record.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(data, sort_keys=True))
            tmp.replace(self.record)
        except OSError as exc:
            logger.warning("home assistant: cannot record what was published in %s: %s", self.record, exc)


def _encode(state: Mapping[str, Any]) -> bytes:
    return json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
