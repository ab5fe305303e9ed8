"""One pipeline, top to bottom: capture -> preprocess -> infer -> postprocess -> publish.

The source runs in its own thread; this module's thread takes its frames, runs the model and
commits each result to the outbox (which publishes it when the broker is there).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from edge_runtime.capture import SourceThread
from edge_runtime.health.metrics import PipelineMetrics
from edge_runtime.predictor import Predictor, PredictorClosedError
from edge_runtime.publish import payloads
from edge_runtime.publish.outbox import Outbox
from edge_runtime.types import Frame, Window

logger = logging.getLogger(__name__)


class SharedModel:
    """A named Predictor that several pipelines can use (its ``predict`` serialises inference).

    A model update swaps the predictor while pipelines run: ``current`` is one attribute holding
    the predictor and its identity together, read once per frame, so every frame is inferred and
    labelled by the same model, and the swap lands between two frames.
    """

    def __init__(self, name: str, predictor: Predictor) -> None:
        self.name = name
        self.current = (predictor, _identity(predictor))

    @property
    def predictor(self) -> Predictor:
        """The predictor serving now."""
        return self.current[0]

    def swap(self, predictor: Predictor) -> Predictor:
        """Serve ``predictor`` from the next frame on; returns the one it replaces."""
        old = self.current[0]
        self.current = (predictor, _identity(predictor))
        return old


def _identity(predictor: Predictor) -> dict[str, str]:
    d = predictor.model.describe()
    return {"name": d["name"], "version": d["version"], "sha256": d["sha256"]}


class Pipeline:
    """Frames from ``source`` through ``model`` into ``outbox``."""

    def __init__(
        self,
        name: str,
        source: SourceThread,
        model: SharedModel,
        outbox: Outbox,
        *,
        topic: str,
        device: str,
        every_n_frames: int = 1,
        max_fps: float | None = None,
    ) -> None:
        self.name, self.source, self.model, self.outbox = name, source, model, outbox
        self.topic, self.device = topic, device
        self.every_n_frames, self.max_fps = every_n_frames, max_fps
        self.metrics = PipelineMetrics()
        self.stop_event = threading.Event()
        self._next_allowed = 0.0
        self.busy_since: float | None = None  # a frame in processing since (health/watchdog.py)
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{name}", daemon=True)

    def start(self) -> None:
        """Start the source, then this pipeline's thread."""
        self.source.start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop capture; let the frame in flight finish and reach the outbox."""
        self.source.stop(timeout=1.0)
        self.stop_event.set()
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        """The source ended and every frame it gave was handled."""
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            frame = self.source.handoff.get(timeout=0.2)
            if frame is None:
                logger.info(
                    "pipeline %s: source %s after %d frames",
                    self.name,
                    self.source.state,
                    self.metrics.frames,
                )
                return
            if frame is False:
                continue
            self.metrics.frame_seen()
            if self._skip(frame):
                continue
            self.busy_since = time.monotonic()
            try:
                self._process(frame)
            except Exception:  # one bad frame must not end the pipeline
                self.metrics.failed_one()
                logger.exception("pipeline %s: frame %d failed", self.name, frame.index)
            finally:
                self.busy_since = None

    def _skip(self, frame: Frame | Window) -> bool:
        if frame.index % self.every_n_frames:
            return True
        if self.max_fps:
            now = time.monotonic()
            if now < self._next_allowed:
                return True
            self._next_allowed = max(self._next_allowed + 1.0 / self.max_fps, now - 1.0 / self.max_fps)
        return False

    def _process(self, frame: Frame | Window) -> None:
        predictor, model = self.model.current
        try:
            result = predictor.predict(_input(frame))
        except PredictorClosedError:  # swapped out by an update after we picked it up
            predictor, model = self.model.current
            result = predictor.predict(_input(frame))
        stages = {"capture": frame.capture_ms, **result.latency_ms}
        stages["total"] = sum(stages.values())
        latency = {k: round(v, 3) for k, v in stages.items()}
        frame_info, window_info = _describe(frame)  # a sensor window replaces the frame
        body = result.payload()
        self.outbox.put(
            self.topic,
            lambda seq: payloads.prediction(
                seq,
                device=self.device,
                pipeline=self.name,
                frame=frame_info,
                window=window_info,
                model=model,
                task=result.task,
                result=body,
                latency_ms=latency,
            ),
        )
        self.metrics.inferred_one(stages)


def _input(item: Frame | Window) -> np.ndarray:
    """What the model takes: the image, or the window's ``[samples, channels]`` values."""
    return item.data if isinstance(item, Window) else item.image


def _describe(item: Frame | Window) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The payload's ``frame`` object, or its ``window`` object for a sensor window."""
    if isinstance(item, Window):
        window = {
            "index": item.index,
            "start_ts": round(item.start_ts, 3),
            "end_ts": round(item.end_ts, 3),
            "samples": item.samples,
            "first_sample": item.first_sample,
        }
        return None, window
    frame = {"index": item.index, "ts": round(item.ts, 3), "width": item.width, "height": item.height}
    return frame, None
