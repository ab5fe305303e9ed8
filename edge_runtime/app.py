"""Composition root: Config -> models, outbox, MQTT link, pipelines, health; start/stop order.

Start: models (the store's active version when an update installed one; a model that fails to
load fails only its pipelines) -> outbox -> MQTT link -> publisher -> pipelines (sources start
here) -> update manager and inbound dispatcher -> health reporter.
Stop: update manager -> capture and pipelines (in-flight results reach the outbox) -> health ->
a short flush -> offline status -> disconnect -> outbox closed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from edge_runtime import __version__, model_golden
from edge_runtime.capture import make_source
from edge_runtime.config.sections import Config, ModelConfig
from edge_runtime.errors import EdgeRuntimeError, ModelError
from edge_runtime.health.system import SystemProbe
from edge_runtime.inference import BackendOptions
from edge_runtime.model import load_model, resolve
from edge_runtime.pipeline import Pipeline, SharedModel
from edge_runtime.predictor import Predictor
from edge_runtime.publish import payloads
from edge_runtime.publish.mqtt import MqttLink
from edge_runtime.publish.outbox import Outbox
from edge_runtime.publish.publisher import Publisher
from edge_runtime.publish.topics import Topics
from edge_runtime.update import faults
from edge_runtime.update.manager import UpdateManager, UpdatePolicy
from edge_runtime.update.manifest import load_public_key
from edge_runtime.update.startup import installed_folder, settle
from edge_runtime.update.store import ModelStore
from edge_runtime.window_predictor import make_predictor, source_mismatch

logger = logging.getLogger(__name__)


def model_options(mc: ModelConfig, cache_dir: Path) -> BackendOptions:
    """How the runtime runs a configured model."""
    return BackendOptions(
        accelerator=mc.accelerator,
        threads=mc.threads,
        allow_cpu_fallback=mc.allow_cpu_fallback,
        provider_options=mc.provider_options,
        cache_dir=cache_dir,
        device=mc.device,
        delegate_path=mc.delegate_path,
        delegate_options=mc.delegate_options,
        spin_wait=mc.spin_wait,
        exact_int8=mc.exact_int8,
        streams=None if mc.streams == "auto" else mc.streams,
    )


def _load(name: str, mc: ModelConfig, cache_dir: Path) -> Predictor:
    model = load_model(mc.path, mc.backend, model_options(mc, cache_dir))
    logger.info(
        "model %s: %s v%s (%s/%s, %d stream(s))",
        name,
        model.spec.name,
        model.spec.version,
        model.backend.kind,
        model.backend.accelerator,
        model.backend.streams,
    )
    return make_predictor(model, top_k=mc.top_k, score_threshold=mc.score_threshold)


class ModelSlot:
    """A configured model as the update manager sees it (update/ports.py ``Slot``)."""

    def __init__(self, key: str, shared: SharedModel, mc: ModelConfig, cache: Path, daemon: Daemon) -> None:
        self.key, self.shared, self.mc, self.cache, self._daemon = key, shared, mc, cache, daemon

    def version(self) -> str:
        """The version serving now."""
        return str(self.shared.predictor.model.spec.version)

    def trial(self, folder: Path, *, max_latency_ms: float | None, latency_factor: float) -> Predictor:
        """A candidate from ``folder`` (a fresh backend with this model's options) that passed its
        golden vectors and latency budget (model_golden.trial); UpdateError otherwise."""
        mc = self.mc.model_copy(update={"path": folder})
        return model_golden.trial(
            lambda: _load(self.key, mc, self.cache),
            self.shared.predictor,
            folder,
            label=self.key,
            max_latency_ms=max_latency_ms,
            latency_factor=latency_factor,
        )

    def swap(self, candidate: Predictor) -> Predictor:
        """Serve ``candidate`` from the next frame on."""
        return self.shared.swap(candidate)

    def counters(self) -> tuple[int, int, float]:
        """(inferred, failed, inference ms) summed over the pipelines using this model."""
        ps = [p for p in self._daemon.pipelines if p.model is self.shared]
        return (
            sum(p.metrics.inferred for p in ps),
            sum(p.metrics.errors for p in ps),
            sum(p.metrics.inference_ms for p in ps),
        )

    def close(self, candidate: Predictor) -> None:
        """Release a predictor that no longer serves."""
        candidate.close()


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
        self.store: ModelStore | None = None
        self.updates: UpdateManager | None = None
        self._inbound_thread = threading.Thread(target=self._inbound_loop, name="inbound", daemon=True)
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
        self._start_updates()
        self.publish_health()
        self._health_thread.start()

    def _load_models(self) -> None:
        used = {p.model for p in self.cfg.pipelines}
        self.store = ModelStore(self.cfg.updates.store, keep=self.cfg.updates.keep)
        settle(self.store)  # before any model loads: roll back what a crash left uncommitted
        for name, mc in self.cfg.models.items():
            if name not in used:
                continue
            try:
                self.models[name] = SharedModel(name, self._load_installed(name, mc))
            except EdgeRuntimeError as exc:
                self.model_errors[name] = str(exc)
                logger.error("model %s: %s", name, exc)

    @property
    def _cache(self) -> Path:
        return self.cfg.updates.store.parent / "cache"

    def _load_installed(self, name: str, mc: ModelConfig) -> Predictor:
        """The version an update installed (if any, and if it loads), else the configured one."""
        assert self.store is not None
        try:
            ref = resolve(mc.path)
        except EdgeRuntimeError:
            ref = None
        if ref is None or ref.spec is None:  # updates address bundles (model.yaml) by name
            return _load(name, mc, self._cache)
        path, note = installed_folder(self.store, ref.spec.name)
        if note:
            logger.warning("model %s: %s", name, note)
        if path is not None:
            try:
                return _load(name, mc.model_copy(update={"path": path}), self._cache)
            except EdgeRuntimeError as exc:
                logger.error(
                    "model %s: installed update at %s does not load (%s); using %s", name, path, exc, mc.path
                )
        return _load(name, mc, self._cache)

    def _start_updates(self) -> None:
        """The update manager (it resumes an interrupted update) and the inbound dispatcher."""
        assert self.store is not None and self.link is not None
        uc = self.cfg.updates
        slots: dict[str, list[ModelSlot]] = {}
        for key, shared in self.models.items():
            spec_name = shared.predictor.model.spec.name
            slot = ModelSlot(key, shared, self.cfg.models[key], self._cache, self)
            slots.setdefault(spec_name, []).append(slot)
        link = self.link
        self.updates = UpdateManager(
            device=self.cfg.device.id,
            groups=self.cfg.device.groups,
            keys=[load_public_key(p) for p in uc.public_keys],
            store=self.store,
            slots=slots,  # type: ignore[arg-type]
            policy=UpdatePolicy(
                max_bundle_bytes=uc.max_bundle_bytes,
                download_timeout_s=uc.download_timeout_s,
                chunk_window=uc.chunk_window,
                chunk_retry_s=uc.chunk_retry_s,
                health_window_s=uc.health_window_s,
                max_errors=uc.max_errors,
                max_latency_ms=uc.max_latency_ms,
                latency_factor=uc.latency_factor,
                keep=uc.keep,
            ),
            publish_status=self._publish_model_status,
            send=lambda topic, body: link.publish(topic, body, qos=0) is not None,
            subscribe=link.subscribe,
            checkpoint=faults.from_environment(),  # None unless EDGE_RUNTIME_FAULT is set (tests)
        )
        self.updates.start()
        self._inbound_thread.start()

    def _publish_model_status(self, body: dict[str, Any]) -> None:
        assert self.outbox is not None
        self.outbox.put(self.topics.model_status, lambda _seq: payloads.encode(body), qos=1, retain=True)

    def _inbound_loop(self) -> None:
        """Route what the broker sends us: manifests and chunks to the update manager."""
        assert self.link is not None and self.updates is not None
        groups = self.cfg.device.groups
        update_topics = {self.topics.model_update, *(self.topics.group_update(g) for g in groups)}
        while not self.stop_event.is_set():
            try:
                message = self.link.inbound.get(timeout=0.5)
            except queue.Empty:
                continue
            topic = message.topic
            if topic in update_topics:
                self.updates.submit(bytes(message.payload))
            elif "/chunk/" in topic:
                self.updates.chunk_message(topic, bytes(message.payload))
            else:
                logger.warning("inbound: nothing handles %s (commands: see the README)", topic)

    def _start_pipelines(self) -> None:
        assert self.outbox is not None
        for pc in self.cfg.pipelines:
            if pc.model not in self.models:
                self.failed_pipelines[pc.name] = f"model {pc.model}: {self.model_errors.get(pc.model)}"
                logger.error("pipeline %s not started: model %s did not load", pc.name, pc.model)
                continue
            mismatch = source_mismatch(pc.source, self.models[pc.model].predictor.model)
            if mismatch:
                self.failed_pipelines[pc.name] = mismatch
                logger.error("pipeline %s not started: %s", pc.name, mismatch)
                continue
            pipeline = Pipeline(
                pc.name,
                make_source(pc.name, pc.source, mqtt=self.cfg.mqtt, device=self.cfg.device.id),
                self.models[pc.model],
                self.outbox,
                topic=self.topics.predictions(pc.name),
                device=self.cfg.device.id,
                every_n_frames=pc.every_n_frames,
                max_fps=pc.max_fps,
                streams=self.models[pc.model].predictor.streams,
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
            "groups": self.cfg.device.groups,
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
                **p.source.stats(),  # sensor sources: samples, malformed, reconnects
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
        if self.updates is not None:
            self.updates.stop()
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
            m.predictor.close()
