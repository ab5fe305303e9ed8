"""What every source shares: a state, a thread, and a hand-off to the pipeline.

File sources hand frames over through a bounded queue (back-pressure: nothing is dropped); live
sources through a one-frame slot that keeps only the freshest frame and counts what it replaced.
A file source can instead be given a sink (:meth:`SourceThread.attach`): the pipeline's first
stage, run on each frame in the source's own thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from edge_runtime.channel import Channel
from edge_runtime.scheduling import yield_to_inference
from edge_runtime.throttle import Throttle
from edge_runtime.types import Frame, Window

logger = logging.getLogger(__name__)

SourceState = Literal["starting", "streaming", "reconnecting", "failed", "ended"]
Sink = Callable[[Frame | Window, threading.Event], bool]  # (item, stop flag) -> False if stopped first

# A lost camera or device is a problem worth `journalctl -p warning`; giving up is an error.
_STATE_LEVELS = {"reconnecting": logging.WARNING, "failed": logging.ERROR}


class Handoff:
    """Frames (or sensor windows) from the source thread to the pipeline thread."""

    def __init__(self, lossless: bool, depth: int = 3) -> None:
        self.lossless = lossless
        # Lossless: a source ahead of the pipeline sleeps until one frame is left, then reads the
        # rest in a row (channel.py); live: one slot, always the freshest frame.
        self._queue: Channel[Frame | Window | None] = (
            Channel(maxsize=depth, resume_at=1) if lossless else Channel(maxsize=1)
        )
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, frame: Frame | Window | None, stop: threading.Event) -> bool:
        """Hand over a frame (None = end of stream). False when ``stop`` was set first."""
        if self.lossless or frame is None:
            while not stop.is_set():
                if self._queue.put(frame, timeout=0.1):
                    return True
            return False
        with self._lock:  # keep only the freshest frame
            try:
                if self._queue.get_nowait() is not None:
                    self.dropped += 1
            except queue.Empty:
                pass
            self._queue.put_nowait(frame)
        return True

    def get(self, timeout: float) -> Frame | Window | Literal[False] | None:
        """The next frame, None at end of stream, False when nothing came within ``timeout``."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return False


class SourceThread:
    """Base of all sources: runs :meth:`produce` in a named daemon thread."""

    lossless = False
    hosts_first_stage = False  # file sources may run the pipeline's first stage (attach)
    # A file waits where it is: the pipeline may hold such a source back (back-pressure) for as
    # long as its results cannot be stored, instead of dropping them. Live sources and sensors
    # cannot wait (the world goes on), so their results are dropped and counted then.
    pausable = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.handoff = Handoff(self.lossless)
        self.state: SourceState = "starting"
        self.frames = 0
        self.error: str | None = None
        self.stop_event: threading.Event = StopFlag(self)
        self.last_frame_at = time.monotonic()
        self.last_alive = time.monotonic()  # progress stamps for the watchdog (health/watchdog.py)
        self._waits = 0
        self._sink: Sink | None = None
        # A camera or stream server that drops each connection after one frame would otherwise
        # cost two log lines per reconnect for as long as it keeps doing so.
        self._state_lines = Throttle(per_s=60.0, burst=6)
        self._thread = threading.Thread(target=self._main, name=f"source-{name}", daemon=True)

    def start(self) -> None:
        """Start capturing."""
        self._thread.start()

    def attach(self, sink: Sink) -> None:
        """Before :meth:`start`, file sources only: give each frame to ``sink`` in this thread.

        The pipeline preprocesses a frame right after it was decoded, while it is still in this
        core's cache, and hands it straight to inference: one queue and one thread wake-up less
        per frame (measured at ``fps: 0``: 6% less CPU outside inference, 2% more predictions/s;
        at 15 fps: 0.24 ms less latency). ``sink`` blocks while the pipeline is full
        (back-pressure) and returns False if the stop flag was set first. The end of the stream
        still goes through :attr:`handoff`. A paced source must wait for its next slot before it
        decodes, not after: work done right after a hand-over keeps the woken thread off its core.
        """
        if not self.hosts_first_stage:
            raise ValueError(f"source {self.name}: only a file source runs the pipeline's first stage")
        self._sink = sink

    def deliver(self, item: Frame | Window) -> bool:
        """Hand a frame or window to the pipeline; False when stopped first."""
        if self._sink is not None:
            return self._sink(item, self.stop_event)
        return self.handoff.put(item, self.stop_event)

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to stop and wait a little (a hung driver call cannot be interrupted)."""
        self.stop_event.set()
        self._thread.join(timeout)

    def set_state(self, state: SourceState, reason: str | None = None) -> None:
        """Record and log a state change (``reconnecting`` at WARNING, ``failed`` at ERROR)."""
        if state != self.state:
            level = _STATE_LEVELS.get(state, logging.INFO)
            detail = f" ({reason})" if reason else ""
            self._state_lines.log(logger, level, "", "source %s: %s%s", self.name, state, detail)
        self.state = state
        self.last_alive = time.monotonic()
        if reason:
            self.error = reason

    @property
    def running(self) -> bool:
        """The thread is alive (it may be stuck: see :attr:`last_alive`)."""
        return self._thread.is_alive()

    @property
    def waiting(self) -> bool:
        """The thread is in a wait that may last by design (pacing, backoff, back-pressure)."""
        return self._waits > 0

    @contextmanager
    def idle(self) -> Iterator[None]:
        """Mark a wait that may last by design, so the watchdog does not take it for a hang.

        Waits on :attr:`stop_event` are marked already; use this only for a deliberate wait that
        cannot check the stop flag within the watchdog's stall limit. Only the source's own thread
        is tracked.
        """
        own = threading.current_thread() is self._thread
        self._waits += own
        try:
            yield
        finally:
            self.beat()  # before the flag drops: a reader never sees "not waiting" with a stale stamp
            self._waits -= own

    def beat(self) -> None:
        """Stamp :attr:`last_alive`, when called from the source's own thread (a sign of progress)."""
        if threading.current_thread() is self._thread:
            self.last_alive = time.monotonic()

    def stats(self) -> dict[str, Any]:
        """Source-specific counters merged into the pipeline's health (none by default)."""
        return {}

    def emit(self, image: object, capture_ms: float) -> bool:
        """Wrap an image as the next Frame and hand it over."""
        frame = Frame(self.frames, time.time(), image, capture_ms, time.perf_counter())  # type: ignore[arg-type]
        self.frames += 1
        self.last_frame_at = self.last_alive = time.monotonic()
        return self.deliver(frame)

    def _main(self) -> None:
        yield_to_inference()
        try:
            self.produce()
        except Exception as exc:  # a source must never take the daemon down
            logger.exception("source %s crashed", self.name)
            self.set_state("failed", str(exc))
        finally:
            if self.state not in ("failed",):
                self.set_state("ended")
            self.handoff.put(None, self.stop_event)

    def produce(self) -> None:
        """Read frames and call :meth:`emit` until done or stopped."""
        raise NotImplementedError


class StopFlag(threading.Event):
    """A source's stop flag, and the watchdog's view of its thread (health/watchdog.py).

    Every loop of a source checks this flag, so each check by the source's own thread stamps
    progress (one turn of a loop, including the hand-off's back-pressure loop); time spent in
    ``wait`` (pacing, reconnect backoff) is idle by design, not a hang.
    """

    def __init__(self, source: SourceThread) -> None:
        super().__init__()
        self._source = source

    def is_set(self) -> bool:
        """The flag; a check by the source's thread is a sign of progress."""
        self._source.beat()
        return super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the flag (pacing, reconnect backoff) as an idle wait."""
        with self._source.idle():
            return super().wait(timeout)


def pace(next_due: float, fps: float, stop: threading.Event) -> float:
    """Sleep until ``next_due`` (monotonic) for ``fps`` pacing; returns the next due time."""
    if fps <= 0:
        return next_due
    delay = next_due - time.monotonic()
    if delay > 0:
        stop.wait(delay)
    return max(next_due + 1.0 / fps, time.monotonic() - 1.0 / fps)
