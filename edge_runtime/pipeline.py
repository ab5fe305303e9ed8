"""One pipeline, top to bottom: capture -> prepare -> infer -> finish -> outbox.

The source runs in its own thread; this module's stage threads take its frames, run the model
(a :class:`~edge_runtime.model.ModelSlot`'s current runner) and commit each result to the outbox,
which the publisher sends when the broker is there.

Which thread runs what. Each hop below was measured as a win (docs/performance.md); where a line
may run on either of two threads, the rule that decides is in the method named:

=================================  ===============================================================
work                               thread
=================================  ===============================================================
read/decode a frame                ``source-<name>`` (capture/)
stage 1: count, skip, prepare      a file source's own thread (``_accept``: the frame is still in
                                   cache and one queue hop is saved); else ``pipeline-<name>``
stage 2: the model call            ``infer-<name>`` (``infer-<i>-<name>``: one per copy, streams)
stage 3: finish, JSON, commit      ``post-<name>``; or the inference thread itself when it waited
                                   for its frame and nothing is queued (``_infer_loop``: a low
                                   rate, one wake-up less)
the payload factory (seq -> bytes) the committing thread, inside the outbox's transaction
                                   (``Outbox.put_many``: seq is assigned there)
sending rows to paho               ``publisher``; or the committing thread when nothing is in
                                   flight (``Publisher._rows_added``, via ``Outbox.on_added``)
acks, inbound messages             paho's network thread: they only enqueue (publish/mqtt.py)
=================================  ===============================================================

With analytics (analytics/), the motion gate is part of stage 1's skip, and tracking and events
part of stage 3, which sees results in frame order; the post thread commits the last ``end``
events when the stream ends.

A source's stop flag stamps the watchdog's progress on every check (capture/base.py
``StopFlag``): a loop that checks it is alive.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.analytics import Analytics, Message
from edge_runtime.capture import SourceThread, make_source
from edge_runtime.channel import Channel
from edge_runtime.config.sections import Config, PipelineConfig
from edge_runtime.errors import BackendClosedError, OutboxClosedError, OutboxUnavailableError
from edge_runtime.health.metrics import PipelineMetrics
from edge_runtime.model import InferenceResult, ModelSlot, Runner
from edge_runtime.publish import payloads
from edge_runtime.publish.outbox import Outbox, Outgoing
from edge_runtime.publish.topics import Topics
from edge_runtime.scheduling import yield_to_inference
from edge_runtime.throttle import Throttle
from edge_runtime.types import Frame, Window

logger = logging.getLogger(__name__)
_PAUSES = Throttle(per_s=60.0, burst=10)  # pause/resume lines: one per outbox state change, bounded


@dataclass(slots=True)
class _Job:
    """One frame (or window) on its way through the stages."""

    item: Frame | Window | None  # None once inferred: the image is not kept for the post stage
    index: int
    runner: Runner
    identity: dict[str, str]  # the payload's model object: name, version, sha256
    inputs: list[Any]
    context: Any
    stages: dict[str, float]
    ticket: int = -1  # the order of publication (copies of the model may finish out of order)
    outputs: list[Any] | None = None
    described: tuple[dict[str, Any] | None, dict[str, Any] | None] = (None, None)  # see _describe
    kept: Frame | Window | None = None  # the frame, for observers only (see Pipeline.observers)
    available: float = 0.0  # the frame's perf_counter stamp when decoded (the start of "total")
    result: Any = None  # the decoded result (set by _decode)


_END = object()  # passed down the stages after the last job


class Pipeline:
    """Frames from ``source`` through ``model`` into ``outbox``, in three overlapping stages.

    Stage 1 preprocesses: in the source's own thread for a file source (the frame is still in the
    cache decoding filled, and one queue hop is saved), otherwise in ``pipeline-<name>``.
    ``infer-<name>`` runs the model (one thread per copy of the model, ``streams``, each on its
    own frame), ``post-<name>`` puts results back in frame order, decodes, encodes JSON and
    commits to the outbox (at a low rate an inference thread that waited for its frame does that
    itself: one wake-up less). Small queues between them keep each frame's latency low and let
    preprocessing and publishing of neighbouring frames run while the runtime (which releases the
    GIL) computes, instead of after it.
    """

    def __init__(
        self,
        name: str,
        source: SourceThread,
        slot: ModelSlot,
        outbox: Outbox,
        *,
        topic: str,
        device: str,
        every_n_frames: int = 1,
        max_fps: float | None = None,
        streams: int = 1,
        pause_s: float = 0.5,
        analytics: Analytics | None = None,
    ) -> None:
        self.name, self.source, self.slot, self.outbox = name, source, slot, outbox
        self.topic, self.device = topic, device
        self.every_n_frames, self.max_fps = every_n_frames, max_fps
        # while the outbox cannot store, a file source's results try it again this often
        self.pause_s = pause_s
        self.analytics = analytics  # motion gate in stage 1; tracking, events in stage 3 (analytics/)
        self.metrics = PipelineMetrics()
        # Called with (frame, result, stages) after each commit, in the committing thread; they
        # must only keep references (integrations/: snapshots, metrics, Home Assistant state).
        self.observers: list[Callable[[Frame | Window | None, Any, dict[str, float]], None]] = []
        self.keep_frames = False  # observers get the frame too (else None: the frame is freed sooner)
        slot.track(self.metrics)  # the update health window reads the counters through the slot
        self.stop_event = threading.Event()
        # control/: while set, frames are read and counted but not inferred (the threads stay up)
        self.paused = threading.Event()
        self.latest: Frame | None = None  # the last frame read (snapshots); one reference, no copy
        self._next_allowed = 0.0
        self._last_available = 0.0  # the previous frame's, for the frame interval
        self._tickets = 0
        infer = [f"infer-{i}" if streams > 1 else "infer" for i in range(streams)]
        self._busy: dict[str, float | None] = dict.fromkeys(["prepare", *infer, "post"])
        # Up to two frames more than there are copies of the model wait, ready to infer; the
        # preprocessing thread wakes again only when just one frame per copy is left, and then
        # prepares two in a row (channel.py).
        self._to_infer: Channel[Any] = Channel(maxsize=streams + 2, resume_at=streams)
        self._to_post: Channel[Any] = Channel(maxsize=2 * streams)
        self._prepare_thread = threading.Thread(target=self._run, name=f"pipeline-{name}", daemon=True)
        self._infer_threads = [
            threading.Thread(target=self._infer_loop, args=(key,), name=f"{key}-{name}", daemon=True)
            for key in infer
        ]
        self._order = threading.Lock()  # results are committed in ticket order (_deliver)
        self._waiting: dict[int, _Job | None] = {}  # results that finished before an earlier ticket
        self._next_ticket = 0
        self._post_thread = threading.Thread(target=self._post_loop, name=f"post-{name}", daemon=True)
        self._threads = [self._prepare_thread, *self._infer_threads, self._post_thread]

    @property
    def busy_since(self) -> float | None:
        """Since when the longest-running stage has been on its current frame (health/watchdog.py)."""
        stamps = [t for t in self._busy.values() if t is not None]
        return min(stamps) if stamps else None

    def start(self) -> None:
        """Start the stages, then the source (an attached source needs the inference threads)."""
        if self.source.hosts_first_stage:  # stage 1 runs in the source's thread (SourceThread.attach)
            self.source.attach(self._accept)
        for thread in self._threads:
            thread.start()
        self.source.start()

    def stop(self, timeout: float = 5.0) -> list[str]:
        """Stop capture; let the frames in flight finish and reach the outbox, within ``timeout``.

        Returns the threads still running then (:attr:`lingering`): a source inside a call no
        flag can interrupt (a camera's open or read in OpenCV/FFmpeg), or a model call slower
        than the wait. They are detached: once the daemon closes the outbox and the models, what
        they still produce is refused (``OutboxClosedError``, ``BackendClosedError``) and dropped.
        """
        deadline = time.monotonic() + timeout
        self.source.stop(timeout=min(1.0, timeout))
        self.stop_event.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.lingering

    @property
    def lingering(self) -> list[str]:
        """The names of this pipeline's threads (its source's included) that are still running."""
        alive = [t.name for t in self._threads if t.is_alive()]
        return [f"source-{self.name}", *alive] if self.source.running else alive

    @property
    def done(self) -> bool:
        """The source ended and every frame it gave was handled."""
        return not any(t.is_alive() for t in self._threads)

    # -- stage 1: capture -> preprocess ---------------------------------------------------------
    def _accept(self, item: Frame | Window, stop: threading.Event) -> bool:
        """Stage 1 in a file source's own thread, right after decoding; False once stopped.

        A prepared frame is handed over even when the stop comes meanwhile (the inference threads
        run until every frame before the end marker is done, as :meth:`stop` promises); it is
        dropped only if no inference thread is left to take it.
        """
        job = self._admit(item)
        if job is None:
            return not stop.is_set()
        while not self._to_infer.put(job, timeout=0.1):  # lossless back-pressure
            stop.is_set()  # a turn on the stop flag: the watchdog sees this thread alive
            if not any(t.is_alive() for t in self._infer_threads):
                return False
        return not stop.is_set()

    def _admit(self, item: Frame | Window) -> _Job | None:
        """Count, skip or preprocess a frame; a prepared one gets the next ticket."""
        self.metrics.frame_seen()
        interval = (item.available - self._last_available) * 1e3 if self._last_available else None
        self._last_available = item.available
        if isinstance(item, Frame):
            self.latest = item
        if self.paused.is_set() or self._skip(item):
            return None
        if self.analytics is not None and not self.analytics.admit(item):
            return None
        job = self._stage("prepare", self._prepare, item)
        if job is not None:
            job.ticket, self._tickets = self._tickets, self._tickets + 1
            if interval is not None and item.available:
                job.stages["interval"] = interval
        return job

    def _run(self) -> None:
        """Stage 1 for the other sources (an attached one only sends its end of stream here)."""
        yield_to_inference()
        try:
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
                job = self._admit(frame)
                if job is not None:
                    self._pass(self._to_infer, job, self._infer_threads)
        finally:
            for _ in self._infer_threads:
                self._pass(self._to_infer, _END, self._infer_threads)

    def _skip(self, frame: Frame | Window) -> bool:
        if frame.index % self.every_n_frames:
            return True
        if self.max_fps:
            now = time.monotonic()
            if now < self._next_allowed:
                return True
            # one period after the previous slot (a late frame does not push the schedule back),
            # but never earlier than now: at most one frame of credit after a pause. (It was
            # ``now - period``: two frames of credit, three inferences at once after each pause.)
            self._next_allowed = max(self._next_allowed + 1.0 / self.max_fps, now)
        return False

    def _prepare(self, item: Frame | Window, ticket: int = -1) -> _Job:
        runner, identity = self.slot.current
        t0 = time.perf_counter()
        inputs, context = runner.prepare(_input(item))
        stages = {"capture": item.capture_ms, "preprocess": (time.perf_counter() - t0) * 1e3}
        if item.available:  # from decoded to taken by stage 1 (the hand-off's wait)
            stages["queue"] = (t0 - item.available) * 1e3
        return _Job(item, item.index, runner, identity, inputs, context, stages, ticket)

    # -- stage 2: inference ------------------------------------------------------------------------
    def _infer_loop(self, key: str) -> None:
        while True:
            try:
                job, waited = self._to_infer.get_nowait(), False
            except queue.Empty:
                job, waited = self._to_infer.get(), True
            if job is _END:
                break
            done = self._stage(key, self._infer, job)  # a new job if the model was swapped; None: failed
            # A thread that had to wait for its frame, with nothing queued now, is on a low rate:
            # it posts its own result rather than wake the post thread (the result leaves sooner).
            # Under load it hands over: post work here would hold the GIL other streams return to.
            if waited and not self._to_infer.waiting and not self._to_post.waiting:
                self._deliver([(job.ticket, done)], key)
            else:
                self._pass(self._to_post, (job.ticket, done), [self._post_thread])
        self._pass(self._to_post, _END, [self._post_thread])

    def _infer(self, job: _Job) -> _Job:
        item = job.item
        assert item is not None
        if job.runner is not self.slot.current[0]:  # an update swapped the model since stage 1
            job = self._prepare(item, job.ticket)
        t0 = time.perf_counter()
        try:
            outputs = job.runner.run(job.inputs)
        except BackendClosedError:  # swapped and closed between the check and the call
            job = self._prepare(item, job.ticket)
            t0 = time.perf_counter()
            outputs = job.runner.run(job.inputs)
        job.stages["inference"] = (time.perf_counter() - t0) * 1e3
        job.outputs = outputs
        # What the payload says of the frame; the frame itself (a full decoded image) and the
        # input tensors are released here rather than after the post stage: less memory held.
        job.described, job.item, job.inputs, job.available = _describe(item), None, [], item.available
        job.kept = item if self.keep_frames else None
        return job

    # -- stage 3: decode -> JSON -> outbox -----------------------------------------------------------
    def _post_loop(self) -> None:
        """Results from the inference threads, committed in ticket order (:meth:`_deliver`)."""
        yield_to_inference()
        ends = 0
        while ends < len(self._infer_threads):
            item = self._to_post.get()
            arrived = []
            while True:
                if item is _END:
                    ends += 1
                else:
                    arrived.append(item)
                try:
                    item = self._to_post.get_nowait()
                except queue.Empty:
                    break
            if arrived:
                self._deliver(arrived, "post")
        if self.analytics is not None:
            self._close_analytics()

    def _close_analytics(self) -> None:
        """Commit the ``end`` event of every open track: the stream ended, or the daemon stops."""
        assert self.analytics is not None
        ended = _outgoing(self.analytics.close(time.time()))
        with self._order:
            try:
                if ended:
                    self._commit(ended, "post")
            except OutboxClosedError:  # a late thread, detached at the stop (see stop)
                logger.warning(
                    "pipeline %s: %d end event(s) after the stop; not stored", self.name, len(ended)
                )

    def _deliver(self, arrived: list[tuple[int, _Job | None]], stage: str) -> None:
        """Publish in ticket order: a later frame's result waits for the earlier ones.

        Results that are ready together are committed in one outbox transaction. Called by the
        post thread, and by an inference thread that has no next frame waiting (it then spares
        the post thread a wake-up: a result at a low frame rate leaves sooner).
        """
        with self._order:
            for ticket, job in arrived:
                self._waiting[ticket] = job
            ready: list[_Job] = []
            while self._next_ticket in self._waiting:
                job = self._waiting.pop(self._next_ticket)
                self._next_ticket += 1
                if job is not None:
                    ready.append(job)
            if not ready:
                return
            self._busy[stage] = time.monotonic()
            try:
                self._publish(ready, stage)
            except OutboxClosedError:  # a late thread, detached at the stop (see stop)
                logger.warning(
                    "pipeline %s: %d result(s) finished after the stop; not stored", self.name, len(ready)
                )
            except Exception:  # e.g. a payload that cannot be encoded: these results are lost, say so
                for _ in ready:
                    self.metrics.failed_one()
                logger.exception("pipeline %s: %d result(s) failed in post", self.name, len(ready))
            finally:
                self._busy[stage] = None

    def _publish(self, jobs: list[_Job], stage: str) -> None:
        """Decode, then commit the results in one transaction."""
        messages, done = [], []
        for job in jobs:
            try:
                messages += self._messages(job)
                done.append(job)
            except Exception:  # one bad frame must not cost the others
                self.metrics.failed_one()
                logger.exception("pipeline %s: frame %d failed in post", self.name, job.index)
        self._commit(messages, stage)
        for job in done:
            self.metrics.inferred_one(job.stages)
            if self.observers:
                self._observe(job)

    def _observe(self, job: _Job) -> None:
        item, job.kept = job.kept, None
        for observer in self.observers:
            try:
                observer(item, job.result, job.stages)
            except Exception as exc:  # an observer's bug must not cost results, nor fill the log
                _PAUSES.log(logger, logging.ERROR, f"observe-{self.name}", "pipeline %s: %r", self.name, exc)

    def _messages(self, job: _Job) -> list[Outgoing]:
        """One frame's prediction and, with analytics, its events and counter states."""
        result = _decode(job)
        if self.analytics is None:
            return [Outgoing(self.topic, _prediction(job, result, self.device, self.name))]
        ts = (job.described[0] or {}).get("ts", time.time())
        seen = self.analytics.observe(result.detections, result.classes, job.index, ts)
        predictions = (
            [_prediction(job, result, self.device, self.name, seen.track_ids)] if seen.predict else []
        )
        return [Outgoing(self.topic, p) for p in predictions] + _outgoing(seen.messages)

    def analytics_report(self) -> dict[str, Any]:
        """Health's ``motion`` and ``analytics`` objects of this pipeline (none without analytics)."""
        return {} if self.analytics is None else self.analytics.report()

    def _commit(self, messages: list[Outgoing], stage: str) -> None:
        """Commit results to the outbox, or wait while it cannot store them (a full disk).

        A file source's results wait here and the source waits behind them (back-pressure): its
        frames are still in the file. A live source's are dropped by the outbox, counted in
        ``outbox.dropped`` with their seqs used (the world does not wait), as are a file
        source's once the pipeline stops.
        """
        paused = False
        while True:
            try:
                self.outbox.put_many(messages, drop=not self.source.pausable or self.stop_event.is_set())
                break
            except OutboxUnavailableError as exc:
                if not paused:
                    _PAUSES.log(
                        logger, logging.WARNING, self.name, "pipeline %s: paused while %s", self.name, exc
                    )
                    paused = True
                self._busy[stage] = None  # a wait by design, not a hang (health/watchdog.py)
                self.stop_event.wait(self.pause_s)
                self._busy[stage] = time.monotonic()
        if paused:
            _PAUSES.log(
                logger, logging.INFO, self.name, "pipeline %s: results are stored again; going on", self.name
            )

    # -- plumbing ------------------------------------------------------------------------------------
    def _stage(self, stage: str, work: Callable[[Any], _Job], arg: Any) -> _Job | None:
        """Run one stage on one frame; a failure costs that frame only."""
        self._busy[stage] = time.monotonic()
        try:
            return work(arg)
        except Exception as exc:  # one bad frame must not end the pipeline
            self.metrics.failed_one()
            index = arg.index
            if isinstance(exc, BackendClosedError) and self.stop_event.is_set():  # detached (stop)
                logger.warning(
                    "pipeline %s: frame %d not inferred: the model closed at the stop", self.name, index
                )
            else:
                logger.exception("pipeline %s: frame %d failed in %s", self.name, index, stage)
            return None
        finally:
            self._busy[stage] = None

    @staticmethod
    def _pass(q: Channel[Any], item: Any, consumers: list[threading.Thread]) -> None:
        """Hand ``item`` to the next stage, waiting while it is busy (lossless back-pressure)."""
        while not q.put(item, timeout=0.5):
            if not any(c.is_alive() for c in consumers):
                return


def _decode(job: _Job) -> InferenceResult:
    """Decode one frame's outputs (timed: the ``postprocess`` stage)."""
    assert job.outputs is not None
    t0 = time.perf_counter()
    result = job.result = job.runner.finish(job.outputs, job.context)
    stages = job.stages
    stages["postprocess"] = (time.perf_counter() - t0) * 1e3
    return result


def _prediction(
    job: _Job, result: InferenceResult, device: str, pipeline: str, track_ids: list[int | None] | None = None
) -> Callable[[int], bytes]:
    """One frame's result as a payload factory for the outbox (seq -> bytes); ``track_ids``: one
    per detection, added to each tracked one."""
    stages = job.stages
    frame_info, window_info = job.described  # a sensor window replaces the frame
    body, model, task = result.payload(), job.identity, result.task
    for detection, track_id in zip(body.get("detections", ()), track_ids or (), strict=False):
        if track_id is not None:
            detection["track_id"] = track_id
    available = job.available

    def encode(seq: int) -> bytes:
        # Called in the outbox's transaction: "total" ends here, as the result is committed.
        if available:
            stages["total"] = (time.perf_counter() - available) * 1e3
        else:  # a frame nobody stamped: the stages' work, summed
            stages["total"] = sum(stages.get(k, 0.0) for k in ("preprocess", "inference", "postprocess"))
        latency = {k: round(v, 3) for k, v in stages.items()}
        return payloads.prediction(
            seq,
            device=device,
            pipeline=pipeline,
            frame=frame_info,
            window=window_info,
            model=model,
            task=task,
            result=body,
            latency_ms=latency,
        )

    return encode


def _outgoing(messages: list[Message]) -> list[Outgoing]:
    """Analytics' events and retained counter states, for the outbox."""
    return [
        Outgoing(m.topic, functools.partial(payloads.event, body=m.body), retain=m.retain) for m in messages
    ]


def build_pipeline(pc: PipelineConfig, slot: ModelSlot, outbox: Outbox, cfg: Config, topic: str) -> Pipeline:
    """The pipeline ``pc`` describes: its source, ``slot``'s model, results to ``topic``."""
    topics = Topics(cfg.mqtt.topic_prefix, cfg.device.id)
    analytics = Analytics(
        pc, device=cfg.device.id, events_topic=topics.events(pc.name), state_topic=topics.state(pc.name)
    )
    return Pipeline(
        pc.name,
        make_source(pc.name, pc.source, mqtt=cfg.mqtt, device=cfg.device.id),
        slot,
        outbox,
        topic=topic,
        device=cfg.device.id,
        every_n_frames=pc.every_n_frames,
        max_fps=pc.max_fps,
        streams=slot.runner.streams,
        analytics=None if analytics.idle else analytics,
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
