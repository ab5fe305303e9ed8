"""Prometheus metrics (docs/integrations.md#prometheus): one registry per daemon, names with one
prefix and base units (seconds, bytes).

Counters and gauges are read from the daemon's own counters when a scrape comes (nothing is
counted twice, nothing costs a frame anything); the two latency histograms are fed by each
pipeline's observer, after the result's commit (one bucket search each).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psutil
from prometheus_client import (
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from edge_runtime.integrations.ports import DaemonView, Observer, PipelineView, models_of, pipeline_views
from edge_runtime.throttle import Throttle

logger = logging.getLogger(__name__)
_WRITES = Throttle(per_s=3600.0, burst=3)

PREFIX = "edge_runtime_"
# seconds: 1 ms to 500 ms where edge inference lives, then a few for the slow tail
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
UPDATE_STATES = ("idle", "downloading", "verifying", "testing", "active", "rejected", "rolled_back")


class Metrics:
    """The registry of one daemon: histograms fed by observers, the rest read at scrape time."""

    def __init__(self, daemon: DaemonView) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series (noise)
        self.registry = CollectorRegistry()
        self.inference = Histogram(
            PREFIX + "inference_latency_seconds",
            "Model call per frame (stage 2: the backend's run), seconds",
            ["pipeline"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.end_to_end = Histogram(
            PREFIX + "end_to_end_latency_seconds",
            "From a frame available (decoded) to its result committed to the outbox, seconds",
            ["pipeline"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_DaemonCollector(daemon))
        self._process = psutil.Process()

    def observer(self, pipeline: str) -> Observer:
        """The pipeline's observer: one observation per histogram per result."""
        inference, total = self.inference.labels(pipeline), self.end_to_end.labels(pipeline)

        def observe(_item: Any, _result: Any, stages: dict[str, float]) -> None:
            if "inference" in stages:
                inference.observe(stages["inference"] / 1e3)
            if "total" in stages:  # none when the outbox dropped the result (never committed)
                total.observe(stages["total"] / 1e3)

        return observe

    def exposition(self) -> bytes:
        """The text exposition format (what /metrics answers)."""
        return generate_latest(self.registry)


class _DaemonCollector(Collector):
    """Everything but the histograms, read from the daemon at scrape time."""

    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.process = psutil.Process()

    def collect(self) -> Iterator[Any]:
        yield from self._pipelines()
        yield from self._delivery()
        yield from self._models()
        yield from self._process_and_host()

    def _pipelines(self) -> Iterator[Any]:
        specs: dict[str, tuple[str, Callable[[PipelineView], int]]] = {
            "frames_captured": ("Frames the source handed to the pipeline", lambda p: p.metrics.frames),
            "frames_inferred": ("Frames through the model, results committed", lambda p: p.metrics.inferred),
            "frames_dropped": (
                "Frames a live source replaced before the pipeline took them",
                lambda p: p.source.handoff.dropped,
            ),
            "frame_errors": ("Frames that failed in a stage", lambda p: p.metrics.errors),
            "predictions_published": (
                "Prediction messages committed to the outbox for the broker",
                lambda p: p.metrics.inferred,
            ),
        }
        views = pipeline_views(self.daemon)
        for name, (doc, read) in specs.items():
            family = CounterMetricFamily(PREFIX + name, doc, labels=["pipeline"])
            for p in views:
                family.add_metric([p.name], float(read(p)))
            yield family
        up = GaugeMetricFamily(
            PREFIX + "pipeline_up", "1 while the pipeline's source runs", labels=["pipeline"]
        )
        for p in views:
            up.add_metric([p.name], 0.0 if p.source.state in ("failed", "ended") else 1.0)
        for name in self.daemon.failed_pipelines:
            up.add_metric([name], 0.0)
        yield up

    def _delivery(self) -> Iterator[Any]:
        outbox, link = self.daemon.outbox, self.daemon.link
        if outbox is not None:
            yield GaugeMetricFamily(
                PREFIX + "outbox_backlog_messages", "Messages waiting in the outbox", value=outbox.pending
            )
            yield GaugeMetricFamily(
                PREFIX + "outbox_backlog_bytes",
                "Payload bytes waiting in the outbox",
                value=outbox.pending_bytes,
            )
            yield CounterMetricFamily(
                PREFIX + "outbox_dropped",
                "Messages the outbox dropped (full, or unavailable)",
                value=outbox.dropped,
            )
            yield CounterMetricFamily(
                PREFIX + "outbox_rejected",
                "Messages the broker refused (PUBACK >= 0x80)",
                value=outbox.rejected,
            )
        if link is not None:
            connected = 1.0 if link.connected.is_set() else 0.0
            yield GaugeMetricFamily(
                PREFIX + "mqtt_connected", "1 while connected to the broker", value=connected
            )
            yield CounterMetricFamily(
                PREFIX + "mqtt_reconnects", "Reconnections to the broker", value=link.reconnects
            )

    def _models(self) -> Iterator[Any]:
        info = InfoMetricFamily(
            PREFIX + "model",
            "The model each slot serves",
            labels=["slot", "model", "version", "sha256", "backend", "accelerator"],
        )
        for slot, d in models_of(self.daemon).items():
            info.add_metric(
                [
                    slot,
                    *(str(d.get(k) or "") for k in ("name", "version", "sha256", "backend", "accelerator")),
                ],
                {},
            )
        yield info
        status = self.daemon.last_model_status or {}
        state = str(status.get("state") or "idle")
        gauge = GaugeMetricFamily(
            PREFIX + "update_state", "1 for the state of the latest model update", labels=["state"]
        )
        for s in sorted({*UPDATE_STATES, state}):
            gauge.add_metric([s], 1.0 if s == state else 0.0)
        yield gauge

    def _process_and_host(self) -> Iterator[Any]:
        with self.process.oneshot():
            cpu = self.process.cpu_times()
            rss = self.process.memory_info().rss
        yield CounterMetricFamily(
            PREFIX + "process_cpu_seconds",
            "CPU time of the daemon (user + system)",
            value=cpu.user + cpu.system,
        )
        yield GaugeMetricFamily(PREFIX + "process_resident_memory_bytes", "Resident memory", value=rss)
        system = (self.daemon.last_health or {}).get("system") or {}
        temps = system.get("temperatures_c") or {}
        if temps:
            family = GaugeMetricFamily(
                PREFIX + "host_temperature_celsius",
                "Board temperatures (health's system probe)",
                labels=["zone"],
            )
            for zone, value in sorted(temps.items()):
                family.add_metric([str(zone)], float(value))
            yield family
        if system.get("throttled") is not None:
            yield GaugeMetricFamily(
                PREFIX + "host_throttled",
                "1 while the board throttles (where it says)",
                value=float(bool(system["throttled"])),
            )


class MetricsExporter:
    """``metrics:`` of the config: the /metrics port and/or the textfile, written every interval."""

    def __init__(
        self, metrics: Metrics, host: str | None, port: int | None, textfile: Any, interval_s: float
    ) -> None:
        self.metrics, self.textfile, self.interval_s = metrics, textfile, interval_s
        self._server: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="metrics-textfile", daemon=True)
        if port is not None:
            from prometheus_client import start_http_server

            self._server, _ = start_http_server(port, addr=host or "127.0.0.1", registry=metrics.registry)
            logger.info("metrics: http://%s:%d/metrics", host, port)
        if textfile is not None:
            self._thread.start()

    def write(self) -> None:
        """Rewrite the textfile (atomically: a temp file renamed over it)."""
        write_to_textfile(str(self.textfile), self.metrics.registry)

    def _write_loop(self) -> None:
        self._tick()
        while not self._stop.wait(self.interval_s):
            self._tick()

    def _tick(self) -> None:
        try:
            self.write()
        except OSError as exc:  # a full disk or a missing folder: a few lines an hour, not one per write
            _WRITES.log(logger, logging.WARNING, "", "metrics: cannot write %s: %s", self.textfile, exc)

    def close(self) -> None:
        """Stop serving and writing (a last textfile first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
            self._tick()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
