"""Composition root: Config -> model slots, outbox, MQTT link, update manager, pipelines, health.

Start: model slots (an installed update's version when one is committed and loads; a model that
fails to load fails only its pipelines) -> outbox -> MQTT link and the update manager's routes
(registered before the link connects, so nothing that arrives at connect is missed) ->
publisher -> pipelines (sources start here) -> update manager (it resumes an interrupted update)
-> integrations (snapshots, metrics, status page, Home Assistant) -> health reporter. Control's
routes (commands, desired configs) are registered with the update manager's, before the link
connects.
Stop: control -> update manager -> capture and pipelines (in-flight results reach the outbox) ->
health -> integrations -> a short flush -> offline status -> disconnect -> outbox closed.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from typing import Any

import numpy as np

from edge_runtime import __version__, control
from edge_runtime.config.sections import Config
from edge_runtime.control.ports import Remote
from edge_runtime.errors import EdgeRuntimeError, ModelError, OutboxClosedError, OutboxUnavailableError
from edge_runtime.health import telemetry
from edge_runtime.health.system import SystemProbe
from edge_runtime.health.watchdog import progress_of, stalls
from edge_runtime.integrations.start import Integrations, start_integrations
from edge_runtime.model import ModelSlot, open_slot, source_mismatch, summary
from edge_runtime.pipeline import Pipeline, build_pipeline
from edge_runtime.publish import payloads
from edge_runtime.publish.mqtt import MqttLink
from edge_runtime.publish.outbox import Outbox, open_outbox
from edge_runtime.publish.publisher import Publisher
from edge_runtime.publish.topics import Topics
from edge_runtime.update.manager import UpdateManager, open_manager
from edge_runtime.update.ports import Slot
from edge_runtime.update.startup import installed_folder, settle
from edge_runtime.update.store import ModelStore

logger = logging.getLogger(__name__)


class Daemon:
    """The running daemon."""

    def __init__(self, cfg: Config, remote: Remote | None = None) -> None:
        self.cfg, self._remote = cfg, remote  # remote configs and reload: the service's, for control
        self.topics = Topics(cfg.mqtt.topic_prefix, cfg.device.id)
        self.identity = telemetry.Identity(
            cfg.device.id, uuid.uuid4().hex[:12], __version__, time.time(), tuple(cfg.device.groups)
        )
        self.models: dict[str, ModelSlot] = {}
        self.model_errors: dict[str, str] = {}
        self.pipelines: list[Pipeline] = []
        self.failed_pipelines: dict[str, str] = {}
        self.stop_event = threading.Event()
        self.outbox: Outbox | None = None
        self.link: MqttLink | None = None
        self.publisher: Publisher | None = None
        self.updates: UpdateManager | None = None
        self.store: ModelStore | None = None
        self.control: control.Control | None = None
        self.probe = SystemProbe(cfg.outbox.path.parent)
        self.integrations: Integrations | None = None  # snapshots, metrics, status page, Home Assistant
        self.last_health: dict[str, Any] | None = None
        self.last_model_status: dict[str, Any] | None = None
        self._health_thread = threading.Thread(target=self._health_loop, name="health", daemon=True)

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        """Bring everything up; raises EdgeRuntimeError when nothing at all can run."""
        self.store = ModelStore(self.cfg.updates.store, keep=self.cfg.updates.keep)
        self._open_models()
        self.outbox = open_outbox(self.cfg.outbox)
        self.link = MqttLink(
            self.cfg.mqtt,
            self.topics,
            client_id=self.cfg.device.id,
            groups=self.cfg.device.groups,
            status=self.status,
        )
        self.updates = self._updates(self.link)
        self.control = control.start(
            self.cfg,
            self,
            self.link,
            commands_topic=self.topics.commands,
            frames=self.latest_frame,
            remote=self._remote,
        )
        self.link.start()
        self.publisher = Publisher(self.outbox, self.link, max_inflight=self.cfg.mqtt.max_inflight)
        self.publisher.start()
        self._start_pipelines()
        if not self.pipelines:
            raise ModelError(
                "no pipeline could start: " + "; ".join(f"{k}: {v}" for k, v in self.failed_pipelines.items())
            )
        self.updates.start()
        self.integrations = start_integrations(self)
        self.publish_health()
        self._health_thread.start()

    def _open_models(self) -> None:
        used = {p.model for p in self.cfg.pipelines}
        cache = self.cfg.updates.store.parent / "cache"
        assert self.store is not None
        settle(self.store)  # before any model loads: roll back what a crash left uncommitted
        installed = functools.partial(installed_folder, self.store)
        for name, mc in self.cfg.models.items():
            if name not in used:
                continue
            try:
                self.models[name] = open_slot(name, mc, cache, installed)
                logger.info("model %s: %s", name, summary(self.models[name].runner))
            except EdgeRuntimeError as exc:
                self.model_errors[name] = str(exc)
                logger.error("model %s: %s", name, exc)

    def _updates(self, link: MqttLink) -> UpdateManager:
        """The update manager, with its inbound topics routed to it (it starts later)."""
        assert self.store is not None
        slots: dict[str, list[Slot]] = {}  # updates address a bundle by the name in its model.yaml
        for slot in self.models.values():
            slots.setdefault(slot.runner.model.spec.name, []).append(slot)
        updates = open_manager(
            self.cfg.updates,
            device=self.cfg.device,
            store=self.store,
            slots=slots,
            link=link,
            topic_prefix=self.cfg.mqtt.topic_prefix,
            publish_status=self._publish_model_status,
        )
        updates.listen([self.topics.model_update, *map(self.topics.group_update, self.cfg.device.groups)])
        return updates

    def _publish_model_status(self, body: dict[str, Any]) -> None:
        assert self.outbox is not None
        self.last_model_status = body
        try:
            self.outbox.put(self.topics.model_status, lambda _seq: payloads.encode(body), qos=1, retain=True)
        except OutboxClosedError:  # an update step that outlived the stop: its job is on disk, it resumes
            logger.warning("update status %s not sent: the daemon stopped", body.get("state"))

    def _start_pipelines(self) -> None:
        assert self.outbox is not None
        for pc in self.cfg.pipelines:
            slot = self.models.get(pc.model)
            reason = (
                f"model {pc.model}: {self.model_errors.get(pc.model)}"
                if slot is None
                else source_mismatch(pc.source, slot.runner.model)
            )
            if reason is not None:
                self.failed_pipelines[pc.name] = reason
                logger.error("pipeline %s not started: %s", pc.name, reason)
                continue
            assert slot is not None
            pipeline = build_pipeline(pc, slot, self.outbox, self.cfg, self.topics.predictions(pc.name))
            pipeline.start()
            self.pipelines.append(pipeline)
            logger.info("pipeline %s: %s -> %s", pc.name, pc.source.type, pc.model)

    # -- running -----------------------------------------------------------------------------
    def _described(self) -> dict[str, dict[str, Any]]:
        return {n: s.runner.model.describe() for n, s in self.models.items()}

    def status(self) -> dict[str, Any]:
        """The birth message body (also used by the will)."""
        names = [p.name for p in self.cfg.pipelines]
        return telemetry.status(self.identity, models=self._described(), pipelines=names)

    def health(self) -> dict[str, Any]:
        """The health payload body (docs/mqtt.md)."""
        assert self.outbox is not None and self.link is not None
        body = telemetry.health(
            self.identity,
            pipelines=self.pipelines,
            failed=self.failed_pipelines,
            outbox=self.outbox,
            link=self.link,
            probe=self.probe,
            models=self._described(),
            updates=self.updates.counters() if self.updates is not None else None,
        )
        if self.control is not None:
            body["control"] = self.control.counters()
        return body

    def latest_frame(self, pipeline: str) -> np.ndarray | None:
        """The image a snapshot of ``pipeline`` sends (control's seam): its latest result drawn on
        its frame; the frame as read while no result is kept yet (the first request starts that)."""
        annotated = self.integrations.annotated(pipeline) if self.integrations is not None else None
        if annotated is not None:
            return annotated
        frame = next((p.latest for p in self.pipelines if p.name == pipeline), None)
        return None if frame is None else frame.image

    def rebirth(self) -> list[str]:
        """Publish the birth message and the retained model status again (the ``rebirth`` command)."""
        assert self.link is not None
        topics = [self.topics.status] if self.link.rebirth() else []
        if self.last_model_status is not None:  # the last retained one, for a rebirth
            self._publish_model_status(self.last_model_status)
            topics.append(self.topics.model_status)
        return topics

    def _health_loop(self) -> None:
        while not self.stop_event.wait(self.cfg.health.interval_s):
            self.publish_health()

    def publish_health(self) -> None:
        """Commit one health message to the outbox; while it cannot store one (a full disk), send
        it directly through the link, without a seq, saying why (``outbox.error``)."""
        assert self.outbox is not None and self.link is not None
        try:
            body = self.last_health = self.health()
            qos = self.cfg.mqtt.qos
            try:
                self.outbox.put(
                    self.topics.health, lambda seq: payloads.health(seq, body), qos=qos, drop=False
                )
            except OutboxClosedError:  # a health thread that outlived the stop's wait
                return
            except OutboxUnavailableError:
                body["outbox"]["error"] = self.outbox.error  # the refusal may be news to this body
                self.link.publish(self.topics.health, payloads.health(None, body), qos)
        except Exception:
            logger.exception("health report failed")

    def stalls(self, limit_s: float) -> list[str]:
        """What the watchdog's progress rule finds hung now (health/watchdog.py; for /healthz)."""
        return [str(s) for s in stalls(progress_of(self.pipelines), time.monotonic(), limit_s)]

    def pipeline_model(self, name: str) -> tuple[str, list[str]]:
        """A running pipeline's model task and labels (Home Assistant's entities)."""
        model = next(p for p in self.pipelines if p.name == name).slot.runner.model
        return model.spec.task, list(model.labels or [])

    def put_retained(self, topic: str, payload: bytes) -> None:
        """A retained state through the outbox (a newer one replaces one still queued)."""
        assert self.outbox is not None
        self.outbox.put(topic, lambda _seq: payload, qos=1, retain=True)

    # -- stop --------------------------------------------------------------------------------
    def stop(self, flush_timeout: float = 2.0, wait_s: float = 4.0, update_wait_s: float = 30.0) -> None:
        """Orderly shutdown, bounded at about 12 s in the worst case (the unit allows 15 s).

        Pipelines and health get ``wait_s`` together to end; a thread still running then (inside
        a call nothing can interrupt) is named in a warning and detached: the outbox and models
        refuse it once closed (docs/architecture.md, Start and stop order). An update step in
        progress (checks of a large bundle on a slow board) gets up to ``update_wait_s``: a
        reload's next daemon must not share the model store with it.
        """
        self.stop_event.set()
        if self.control is not None:
            self.control.close()
        if self.updates is not None:
            self.updates.stop()
            if self.updates.running:  # a step that does not check the flag; the store is not shared
                logger.warning("stop: waiting up to %.0fs for the update step in progress", update_wait_s)
                self.updates.stop(update_wait_s)
        for p in self.pipelines:
            p.source.stop_event.set()  # all sources at once, then wait for each pipeline
        deadline = time.monotonic() + wait_s
        lingering = [name for p in self.pipelines for name in p.stop(max(0.0, deadline - time.monotonic()))]
        if self._health_thread.is_alive():
            self._health_thread.join(max(0.5, deadline - time.monotonic()))
        lingering += ["health"] if self._health_thread.is_alive() else []
        lingering += ["updates"] if self.updates is not None and self.updates.running else []
        if lingering:
            logger.warning("stop: detached, still in a call that did not return: %s", ", ".join(lingering))
        if self.integrations is not None:
            self.integrations.close()
        if self.outbox is not None and self.link is not None:
            self.publish_health()  # the final numbers
        if self.publisher is not None:
            self.publisher.drain(flush_timeout)  # what is still queued, while the broker is there
            self.publisher.stop()
        if self.link is not None:
            self.link.stop("shutdown", timeout=2.0)
        if self.outbox is not None:
            logger.info("outbox: %d message(s) kept for the next start", self.outbox.pending)
            self.outbox.close()
        for slot in self.models.values():
            slot.runner.close()
