"""Counters and latency windows of one pipeline (updated by its thread, read by the reporter)."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

# docs/mqtt.md "latency_ms": where each starts and ends; "total" excludes "capture" and "interval"
STAGES = ("capture", "interval", "queue", "preprocess", "inference", "postprocess", "total")


class LatencyWindow:
    """The last ``size`` samples of one stage, in milliseconds."""

    def __init__(self, size: int = 512) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        """Record one sample."""
        self._samples.append(ms)

    def percentiles(self) -> dict[str, float | None]:
        """p50/p95/p99 of the window (None when empty)."""
        if not self._samples:
            return {"p50": None, "p95": None, "p99": None}
        p50, p95, p99 = np.percentile(np.fromiter(self._samples, float), [50, 95, 99])
        return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


class PipelineMetrics:
    """Frames seen, inferred, failed; throughput over the last interval; stage latencies."""

    def __init__(self) -> None:
        self.frames = 0
        self.inferred = 0
        self.errors = 0
        self.inference_ms = 0.0  # summed, for means over any interval (the update health window)
        self.latency = {stage: LatencyWindow() for stage in STAGES}
        self.last_progress = time.monotonic()
        self._lock = threading.Lock()
        self._rate_mark = (time.monotonic(), 0)

    def frame_seen(self) -> None:
        """A frame came out of the source."""
        self.frames += 1
        self.last_progress = time.monotonic()

    def inferred_one(self, stages_ms: dict[str, float]) -> None:
        """A frame went through the model."""
        with self._lock:
            self.inferred += 1
            self.inference_ms += stages_ms.get("inference", 0.0)
            for stage, ms in stages_ms.items():
                self.latency[stage].add(ms)
        self.last_progress = time.monotonic()

    def failed_one(self) -> None:
        """Inference or post-processing raised."""
        self.errors += 1

    def fps(self) -> float:
        """Inferences per second since the previous call."""
        now, inferred = time.monotonic(), self.inferred
        then, before = self._rate_mark
        self._rate_mark = (now, inferred)
        return round((inferred - before) / (now - then), 2) if now > then else 0.0

    def latency_report(self) -> dict[str, dict[str, float | None]]:
        """Percentiles per stage."""
        with self._lock:
            return {stage: window.percentiles() for stage, window in self.latency.items()}
