"""The status page's data (``/api/status``) and the ``/healthz`` rule, read from the daemon."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from edge_runtime.integrations.ports import DaemonView, PipelineView, models_of, pipeline_views
from edge_runtime.integrations.snapshots import SnapshotHolder

RUNNING = ("starting", "streaming", "reconnecting")


class RecentErrors(logging.Handler):
    """The last ``size`` WARNING-or-worse log lines (bounded; shown on the page, escaped there)."""

    def __init__(self, size: int = 20) -> None:
        super().__init__(logging.WARNING)
        self.lines: deque[dict[str, Any]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()[:500]
        except Exception:  # a bad format string must not break logging
            text = str(record.msg)[:500]
        self.lines.append({"ts": round(record.created, 3), "level": record.levelname, "message": text})


class RateMeter:
    """Inferences per second over the last ``span_s``, from samples of a counter taken on demand
    (the health message's own fps is reset by each reading: this one is separate)."""

    def __init__(self, span_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.span_s, self.clock = span_s, clock
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def rate(self, name: str, count: int) -> float | None:
        """The rate of ``name``'s counter, now at ``count``; None until two samples 0.5 s apart."""
        now = self.clock()
        with self._lock:
            samples = self._samples.setdefault(name, deque(maxlen=64))
            if not samples or now - samples[-1][0] >= 0.5:
                samples.append((now, count))
            while len(samples) > 2 and now - samples[1][0] >= self.span_s:
                samples.popleft()
            then, before = samples[0]
            if now - then < 0.5:
                return None
            return round((count - before) / (now - then), 2)


class StatusReader:
    """``/api/status`` and ``/healthz`` from one daemon."""

    def __init__(
        self, daemon: DaemonView, errors: RecentErrors, stall_s: float, holders: Mapping[str, SnapshotHolder]
    ) -> None:
        self.daemon, self.errors, self.stall_s, self.holders = daemon, errors, stall_s, holders
        self.meter = RateMeter()

    def problems(self) -> list[str]:
        """Why the daemon is not healthy (empty: healthy): the watchdog's stalls, a source that
        gave no frame for ``stall_s`` while it should run, a failed source or pipeline."""
        out = list(self.daemon.stalls(self.stall_s))
        now = time.monotonic()
        for p in pipeline_views(self.daemon):
            state = p.source.state
            quiet = now - p.metrics.last_progress
            if state in RUNNING and quiet > self.stall_s:
                out.append(f"pipeline {p.name}: no frame for {quiet:.0f}s (source {state})")
            elif state == "failed":
                out.append(f"pipeline {p.name}: source failed: {p.source.error}")
        out += [f"pipeline {n}: not started: {why}" for n, why in self.daemon.failed_pipelines.items()]
        return out

    def status(self) -> dict[str, Any]:
        """The JSON of ``/api/status`` (docs/integrations.md)."""
        daemon, problems = self.daemon, self.problems()
        outbox, link = daemon.outbox, daemon.link
        return {
            "ts": round(time.time(), 3),
            "device": daemon.cfg.device.id,
            "healthy": not problems,
            "problems": problems,
            "pipelines": {p.name: self._pipeline(p) for p in pipeline_views(daemon)}
            | {
                n: {"source_state": "failed", "source_error": why}
                for n, why in daemon.failed_pipelines.items()
            },
            "mqtt": None
            if link is None
            else {
                "connected": link.connected.is_set(),
                "reconnects": link.reconnects,
                "last_error": link.last_error,
            },
            "outbox": None
            if outbox is None
            else {
                "pending": outbox.pending,
                "pending_bytes": outbox.pending_bytes,
                "dropped": outbox.dropped,
                "rejected": outbox.rejected,
                "error": outbox.error,
            },
            "errors": list(self.errors.lines)[::-1],
        }

    def _pipeline(self, p: PipelineView) -> dict[str, Any]:
        m = p.metrics
        slot = next((pc.model for pc in self.daemon.cfg.pipelines if pc.name == p.name), "")
        model = models_of(self.daemon).get(slot, {})
        return {
            "fps": self.meter.rate(p.name, m.inferred),
            "frames": m.frames,
            "inferred": m.inferred,
            "errors": m.errors,
            "dropped_frames": p.source.handoff.dropped,
            "source_state": p.source.state,
            "source_error": p.source.error,
            "latency_ms": m.latency_report(),
            "model": f"{model.get('name', slot)}@{model.get('version', '?')}",
            "snapshot": f"/snapshot/{p.name}.jpg" if self._has_frame(p.name) else None,
        }

    def _has_frame(self, name: str) -> bool:
        holder = self.holders.get(name)
        return holder is not None and holder.has_frame
