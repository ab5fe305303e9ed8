"""Composition root: Config -> models, outbox, MQTT link, pipelines, health; start/stop order.

Start: models (a model that fails to load fails only its pipelines) -> outbox -> MQTT link ->
publisher -> pipelines (sources start here) -> health reporter.
Stop: capture and pipelines (in-flight results reach the outbox) -> health -> a short flush ->
offline status -> disconnect -> outbox closed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from edge_runtime import __version__
from edge_runtime.capture import make_source
from edge_runtime.config.sections import Config, ModelConfig
from edge_runtime.errors import EdgeRuntimeError, ModelError
from edge_runtime.health.system import SystemProbe
from edge_runtime.inference import BackendOptions
from edge_runtime.model import load_model
from edge_runtime.pipeline import Pipeline, SharedModel
from edge_runtime.predictor import Predictor
from edge_runtime.publish import payloads
from edge_runtime.publish.mqtt import MqttLink
from edge_runtime.publish.outbox import Outbox
from edge_runtime.publish.publisher import Publisher
from edge_runtime.publish.topics import Topics

logger = logging.getLogger(__name__)


def _load(name: str, mc: ModelConfig, cache_dir: Path) -> SharedModel:
    options = BackendOptions(
        accelerator=mc.accelerator,
        threads=mc.threads,
        allow_cpu_fallback=mc.allow_cpu_fallback,
        provider_options=mc.provider_options,
        cache_dir=cache_dir,
        device=mc.device,
        delegate_path=mc.delegate_path,
        delegate_options=mc.delegate_options,
    )
    model = load_model(mc.path, mc.backend, options)
    logger.info(
        "model %s: %s v%s (%s/%s)",
        name,
        model.spec.name,
        model.spec.version,
        model.backend.kind,
        model.backend.accelerator,
    )
    return SharedModel(name, Predictor(model, top_k=mc.top_k, score_threshold=mc.score_threshold))


class Daemon:
    """The running daemon."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.session = uuid.uuid4().hex[:12]
        self.started = time.time()
        self.topics = Topics(cfg.mqtt.topic_prefix, cfg.device.id)
        self.models: dict[str, SharedModel] = {}
        self.model_errors: dict[str, str] = {}
        self.pipelines: list[Pipeline] = []
        self.failed_pipelines: dict[str, str] = {}
        self.stop_event = threading.Event()
        self.outbox: Outbox | None = None
        self.link: MqttLink | None = None
        self.publisher: Publisher | None = None
        self.probe = SystemProbe(cfg.outbox.path.parent)
        self._health_thread = threading.Thread(target=self._health_loop, name="health", daemon=True)

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        """Bring everything up; raises EdgeRuntimeError when nothing at all can run."""
        self._load_models()
        oc = self.cfg.outbox
        self.outbox = Outbox(
            oc.path,
            max_messages=oc.max_messages,
            max_bytes=oc.max_bytes,
            drop_policy=oc.drop_policy,
            synchronous=oc.synchronous,
        )
        self.link = MqttLink(
            self.cfg.mqtt,
            self.topics,
            client_id=self.cfg.device.id,
            groups=self.cfg.device.groups,
            status=self.status,
        )
        self.link.start()
        self.publisher = Publisher(self.outbox, self.link, max_inflight=self.cfg.mqtt.max_inflight)
        self.publisher.start()
        self._start_pipelines()
        if not self.pipelines:
            raise ModelError(
                "no pipeline could start: " + "; ".join(f"{k}: {v}" for k, v in self.failed_pipelines.items())
            )
        self.publish_health()
        self._health_thread.start()

    def _load_models(self) -> None:
        used = {p.model for p in self.cfg.pipelines}
        cache = self.cfg.updates.store.parent / "cache"
        for name, mc in self.cfg.models.items():
            if name not in used:
                continue
            try:
                self.models[name] = _load(name, mc, cache)
            except EdgeRuntimeError as exc:
                self.model_errors[name] = str(exc)
                logger.error("model %s: %s", name, exc)

    def _start_pipelines(self) -> None:
        assert self.outbox is not None
        for pc in self.cfg.pipelines:
            if pc.model not in self.models:
                self.failed_pipelines[pc.name] = f"model {pc.model}: {self.model_errors.get(pc.model)}"
                logger.error("pipeline %s not started: model %s did not load", pc.name, pc.model)
                continue
            pipeline = Pipeline(
                pc.name,
                make_source(pc.name, pc.source),
                self.models[pc.model],
                self.outbox,
                topic=self.topics.predictions(pc.name),
                device=self.cfg.device.id,
                every_n_frames=pc.every_n_frames,
                max_fps=pc.max_fps,
            )
            pipeline.start()
            self.pipelines.append(pipeline)
            logger.info("pipeline %s: %s -> %s", pc.name, pc.source.type, pc.model)

    # -- running -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The birth message body (also used by the will)."""
        return {
            "session": self.session,
            "version": __version__,
            "models": {n: m.predictor.model.describe() for n, m in self.models.items()},
            "pipelines": [p.name for p in self.cfg.pipelines],
        }

    def health(self) -> dict[str, Any]:
        """The health payload body (CONTRACT.md)."""
        assert self.outbox is not None and self.link is not None
        pipelines: dict[str, Any] = {}
        for p in self.pipelines:
            pipelines[p.name] = {
                "fps": p.metrics.fps(),
                "frames": p.metrics.frames,
                "inferred": p.metrics.inferred,
                "errors": p.metrics.errors,
                "dropped_frames": p.source.handoff.dropped,
                "source_state": p.source.state,
                "source_error": p.source.error,
                "latency_ms": p.metrics.latency_report(),
            }
        for name, reason in self.failed_pipelines.items():
            pipelines[name] = {
                "fps": None,
                "frames": 0,
                "inferred": 0,
                "errors": 0,
                "dropped_frames": 0,
                "source_state": "failed",
                "source_error": reason,
                "latency_ms": None,
            }
        return {
            "ts": round(time.time(), 3),
            "uptime_s": round(time.time() - self.started, 1),
            "device": self.cfg.device.id,
            "session": self.session,
            "pipelines": pipelines,
            "outbox": {
                "pending": self.outbox.pending,
                "pending_bytes": self.outbox.pending_bytes,
                "dropped": self.outbox.dropped,
                "rejected": self.outbox.rejected,
            },
            "mqtt": {
                "connected": self.link.connected.is_set(),
                "reconnects": self.link.reconnects,
                "last_error": self.link.last_error,
            },
            "system": self.probe.snapshot(),
            "models": {
                n: {k: v for k, v in m.predictor.model.describe().items() if k != "name"}
                for n, m in self.models.items()
            },
        }

    def _health_loop(self) -> None:
        while not self.stop_event.wait(self.cfg.health.interval_s):
            self.publish_health()

    def publish_health(self) -> None:
        """Commit one health message to the outbox."""
        assert self.outbox is not None
        try:
            body = self.health()
            self.outbox.put(self.topics.health, lambda seq: payloads.health(seq, body), qos=self.cfg.mqtt.qos)
        except Exception:
            logger.exception("health report failed")

    # -- stop --------------------------------------------------------------------------------
    def stop(self, flush_timeout: float = 2.0) -> None:
        """Orderly shutdown, bounded at about 8 s in the worst case (systemd waits 10 s or more)."""
        self.stop_event.set()
        for p in self.pipelines:
            p.source.stop_event.set()  # all sources at once, then wait for each pipeline
        for p in self.pipelines:
            p.stop(timeout=2.0)
        if self._health_thread.is_alive():
            self._health_thread.join(1.0)
        if self.outbox is not None and self.link is not None:
            self.publish_health()  # the final numbers
        if self.publisher is not None and self.link is not None and self.link.connected.is_set():
            deadline = time.monotonic() + flush_timeout
            while not self.publisher.idle() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.publisher is not None:
            self.publisher.stop()
        if self.link is not None:
            self.link.stop("shutdown", timeout=2.0)
        if self.outbox is not None:
            logger.info("outbox: %d message(s) kept for the next start", self.outbox.pending)
            self.outbox.close()
        for m in self.models.values():
            m.predictor.model.close()
