"""One pipeline, top to bottom: capture -> preprocess -> infer -> postprocess -> publish.

The source runs in its own thread; this module's worker threads take its frames, run the model
and commit each result to the outbox (which publishes it when the broker is there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.capture import SourceThread
from edge_runtime.health.metrics import PipelineMetrics
from edge_runtime.predictor import Predictor, PredictorClosedError
from edge_runtime.publish import payloads
from edge_runtime.publish.outbox import Outbox, Outgoing
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


@dataclass(slots=True)
class _Done:
    """One frame (or window) through the model, waiting for its turn to be committed."""

    item: Frame | Window
    model: dict[str, str]
    task: str
    body: dict[str, Any]
    stages: dict[str, float]


class Pipeline:
    """Frames from ``source`` through ``model`` into ``outbox``, in order, with overlapping frames.

    ``streams + 1`` worker threads (``infer-<name>[-i]``) each take the next frame, preprocess it,
    run it on a free copy of the model (``streams`` copies, inference/pool.py), decode it and hand
    the result to the commit step, which writes results to the outbox in frame order, several in
    one transaction when they are ready together. With one worker more than copies, a frame is
    always prepared and waiting when a copy of the model becomes free, and decoding, JSON and
    the outbox run while the runtime (which releases the GIL) computes the next frame. A frame
    goes from one thread to another only twice: source -> worker -> publisher.
    """

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
        streams: int = 1,
    ) -> None:
        self.name, self.source, self.model, self.outbox = name, source, model, outbox
        self.topic, self.device = topic, device
        self.every_n_frames, self.max_fps = every_n_frames, max_fps
        self.metrics = PipelineMetrics()
        self.stop_event = threading.Event()
        self._next_allowed = 0.0
        self._take_lock = threading.Lock()  # frames are taken and numbered in source order
        self._ended = False
        self._tickets = 0
        self._commit_lock = threading.Lock()  # results are committed in ticket order
        self._waiting: dict[int, _Done | None] = {}
        self._next_commit = 0
        keys = [f"infer-{name}-{i}" for i in range(streams + 1)]
        self._busy: dict[str, float | None] = dict.fromkeys(keys)
        self._threads = [threading.Thread(target=self._work, args=(k,), name=k, daemon=True) for k in keys]

    @property
    def busy_since(self) -> float | None:
        """Since when the longest-running worker has been on its current frame (health/watchdog.py)."""
        stamps = [t for t in self._busy.values() if t is not None]
        return min(stamps) if stamps else None

    def start(self) -> None:
        """Start the source, then the workers."""
        self.source.start()
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop capture; let the frames in flight finish and reach the outbox."""
        self.source.stop(timeout=1.0)
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def done(self) -> bool:
        """The source ended and every frame it gave was handled."""
        return not any(t.is_alive() for t in self._threads)

    # -- one worker: take -> preprocess -> infer -> postprocess -> commit --------------------------
    def _work(self, key: str) -> None:
        while (taken := self._take()) is not None:
            ticket, item = taken
            self._busy[key] = time.monotonic()
            try:
                done = self._process(item)
            except Exception:  # one bad frame must not end the pipeline
                self.metrics.failed_one()
                logger.exception("pipeline %s: frame %d failed", self.name, item.index)
                done = None
            try:
                self._commit(ticket, done)
            finally:
                self._busy[key] = None

    def _take(self) -> tuple[int, Frame | Window] | None:
        """The next frame to process and its place in the order; None when there are no more."""
        with self._take_lock:
            while not self._ended and not self.stop_event.is_set():
                frame = self.source.handoff.get(timeout=0.2)
                if frame is None:
                    self._ended = True
                    logger.info(
                        "pipeline %s: source %s after %d frames",
                        self.name,
                        self.source.state,
                        self.metrics.frames,
                    )
                elif frame is not False:
                    self.metrics.frame_seen()
                    if not self._skip(frame):
                        self._tickets += 1
                        return self._tickets - 1, frame
            return None

    def _skip(self, frame: Frame | Window) -> bool:
        if frame.index % self.every_n_frames:
            return True
        if self.max_fps:
            now = time.monotonic()
            if now < self._next_allowed:
                return True
            self._next_allowed = max(self._next_allowed + 1.0 / self.max_fps, now - 1.0 / self.max_fps)
        return False

    def _process(self, item: Frame | Window) -> _Done:
        data = _input(item)
        while True:
            predictor, model = self.model.current  # one model prepares, runs and labels the frame
            t0 = time.perf_counter()
            inputs, context = predictor.prepare(data)
            t1 = time.perf_counter()
            if predictor is not self.model.current[0]:  # an update swapped the model meanwhile
                continue
            try:
                outputs = predictor.run(inputs)
            except PredictorClosedError:
                if predictor is self.model.current[0]:  # closed, not replaced: nothing to run on
                    raise
                continue  # swapped and closed before the call got a copy of the model
            t2 = time.perf_counter()
            result = predictor.finish(outputs, context)
            t3 = time.perf_counter()
            stages = {
                "capture": item.capture_ms,
                "preprocess": (t1 - t0) * 1e3,
                "inference": (t2 - t1) * 1e3,
                "postprocess": (t3 - t2) * 1e3,
            }
            stages["total"] = sum(stages.values())
            return _Done(item, model, result.task, result.payload(), stages)

    def _commit(self, ticket: int, done: _Done | None) -> None:
        """Queue a result; commit every result whose turn has come, in one transaction."""
        with self._commit_lock:
            self._waiting[ticket] = done
            ready: list[_Done] = []
            while self._next_commit in self._waiting:
                found = self._waiting.pop(self._next_commit)
                self._next_commit += 1
                if found is not None:
                    ready.append(found)
            if ready:
                self.outbox.put_many([Outgoing(self.topic, self._payload(d)) for d in ready])
        for d in ready:
            self.metrics.inferred_one(d.stages)

    def _payload(self, done: _Done) -> Callable[[int], bytes]:
        frame_info, window_info = _describe(done.item)  # a sensor window replaces the frame
        latency = {k: round(v, 3) for k, v in done.stages.items()}
        return lambda seq: payloads.prediction(
            seq,
            device=self.device,
            pipeline=self.name,
            frame=frame_info,
            window=window_info,
            model=done.model,
            task=done.task,
            result=done.body,
            latency_ms=latency,
        )


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
