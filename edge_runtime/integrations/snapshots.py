"""The latest frame of each pipeline, rendered on demand, and the snapshot publisher.

A pipeline hands each result with its frame to :meth:`SnapshotHolder.offer` (the post stage:
a few attribute writes and, when triggers are configured, a label check). Rendering happens later,
in whichever thread asks for an image (the status page, the ``snapshot`` command) or in the
``snapshots`` thread for the MQTT topic, and at most ``min_render_s`` apart per pipeline: the
inference path never draws or encodes a JPEG.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_runtime.integrations.render import ResultView, render_snapshot
from edge_runtime.types import Frame

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One rendered snapshot: JPEG bytes of frame ``index`` taken at ``ts`` (wall clock)."""

    jpeg: bytes
    ts: float
    index: int


class SnapshotTrigger:
    """When a frame is worth publishing: one of ``labels`` seen (at most every ``min_interval_s``),
    and/or every ``every_s`` seconds."""

    def __init__(
        self,
        labels: Sequence[str],
        min_interval_s: float,
        every_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.labels, self.min_interval_s, self.every_s, self.clock = (
            set(labels),
            min_interval_s,
            every_s,
            clock,
        )
        self._next_label = 0.0
        self._next_every = clock() + every_s if every_s is not None else float("inf")

    def fires(self, result: ResultView) -> bool:
        """True when this result's frame should be published now."""
        now = self.clock()
        if self.labels and now >= self._next_label and self._seen(result):
            self._next_label = now + self.min_interval_s
            return True
        if now >= self._next_every:
            assert self.every_s is not None
            self._next_every = now + self.every_s
            return True
        return False

    def _seen(self, result: ResultView) -> bool:
        if any(d.label in self.labels for d in result.detections):
            return True
        return bool(result.classes) and result.classes[0].label in self.labels


class SnapshotHolder:
    """The latest frame and result of one pipeline (one frame held, never a queue)."""

    def __init__(
        self,
        pipeline: str,
        *,
        max_height: int = 480,
        quality: int = 80,
        min_render_s: float = 0.5,
        trigger: SnapshotTrigger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline, self.max_height, self.quality = pipeline, max_height, quality
        self.min_render_s, self.trigger, self.clock = min_render_s, trigger, clock
        self.result: Any = None  # the latest result of any kind (sensor windows too)
        self.result_at: float | None = None  # monotonic time of that result
        # one reference, swapped at once: a reader never pairs a frame with another frame's result
        self._latest: tuple[Frame, ResultView] | None = None
        self._due: tuple[Frame, ResultView] | None = None
        self._cached: Snapshot | None = None
        self._rendered_at = float("-inf")
        self._render_lock = threading.Lock()

    def offer(self, item: object, result: Any, _stages: Mapping[str, float] | None = None) -> None:
        """A pipeline's new result (its post stage): keep references only, no copy, no drawing."""
        self.result, self.result_at = result, self.clock()
        if not isinstance(item, Frame):  # a sensor window has no picture
            return
        self._latest = (item, result)
        if self.trigger is not None and self.trigger.fires(result):
            self._due = (item, result)

    def latest_pair(self) -> tuple[Frame, ResultView] | None:
        """The latest frame with its own result (never another frame's), or None."""
        return self._latest

    @property
    def has_frame(self) -> bool:
        """A frame has come (an image can be rendered)."""
        return self._latest is not None

    def take_due(self) -> tuple[Frame, ResultView] | None:
        """The frame a trigger chose since the last call (the later one if it fired twice)."""
        due, self._due = self._due, None
        return due

    def latest(self) -> Snapshot | None:
        """The latest frame rendered; a cached image while the last render is under
        ``min_render_s`` old (however often this is asked). None before the first frame."""
        with self._render_lock:
            latest = self._latest
            if latest is None:
                return None
            frame, result = latest
            cached = self._cached
            if cached is not None and (
                cached.index == frame.index or self.clock() - self._rendered_at < self.min_render_s
            ):
                return cached
            return self._render(frame, result)

    def render(self, frame: Frame, result: ResultView | None) -> Snapshot:
        """Render ``frame`` (a triggered one); it becomes the cached latest image."""
        with self._render_lock:
            return self._render(frame, result)

    def _render(self, frame: Frame, result: ResultView | None) -> Snapshot:
        jpeg = render_snapshot(frame, result, self.max_height, self.quality, title=self.pipeline)
        snap = Snapshot(jpeg, frame.ts, frame.index)
        if self._cached is None or frame.index >= self._cached.index:
            self._cached, self._rendered_at = snap, self.clock()
        return snap


Publish = Callable[[str, bytes, bool], object]  # (topic, payload, retain)


class SnapshotPublisher:
    """The ``snapshots`` thread: every ``check_s``, renders what a trigger chose and publishes it
    on each pipeline's snapshot topic (QoS 0: an old picture is worth nothing after an outage)."""

    def __init__(
        self,
        holders: Mapping[str, SnapshotHolder],
        topics: Mapping[str, tuple[str, bool]],
        publish: Publish,
        check_s: float = 0.25,
    ) -> None:
        self.holders, self.topics, self.publish, self.check_s = holders, topics, publish, check_s
        self.published = dict.fromkeys(topics, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def tick(self) -> None:
        """One round: publish each pipeline's due snapshot."""
        for name, (topic, retain) in self.topics.items():
            due = self.holders[name].take_due()
            if due is None:
                continue
            snap = self.holders[name].render(*due)
            self.publish(topic, snap.jpeg, retain)
            self.published[name] += 1

    def _run(self) -> None:
        while not self._stop.wait(self.check_s):
            try:
                self.tick()
            except Exception:  # a supervisor loop: one bad frame must not end snapshots
                logger.exception("snapshots: publishing failed")
