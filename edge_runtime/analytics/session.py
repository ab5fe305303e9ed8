"""One pipeline's analytics: the motion gate before the model, tracking and events after it.

``admit`` runs in the pipeline's prepare stage (any frame, in capture order); ``observe`` and
``close`` in its post stage, which sees inferred frames in order (pipeline.py's tickets). The
messages it returns are bodies with their topics: pipeline.py commits them to the outbox with
the frame's prediction, in one transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_runtime.analytics.events import EventLog
from edge_runtime.analytics.motion import MotionDetector, MotionGate
from edge_runtime.analytics.regions import Line, Zone
from edge_runtime.analytics.tracker import Observed, Tracker
from edge_runtime.config.sections import PipelineConfig
from edge_runtime.types import Classification, Detection, Frame, Window


@dataclass(frozen=True, slots=True)
class Message:
    """A body for the outbox: an event (``retain`` false) or a counter's state (retained)."""

    topic: str
    body: dict[str, Any]
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Seen:
    """What analytics made of one inferred frame."""

    predict: bool  # publish the frame's prediction (the output mode says)
    track_ids: list[int | None]  # one per detection; None: not tracked
    messages: list[Message]


class Analytics:
    """The motion gate, the tracker and the event log of one pipeline, from its config."""

    def __init__(self, pc: PipelineConfig, *, device: str, events_topic: str, state_topic: str) -> None:
        self.pipeline, self.device, self.output = pc.name, device, pc.output
        self.events_topic, self.state_topic = events_topic, state_topic
        m, t = pc.motion, pc.tracking
        self.gate = (
            MotionGate(
                MotionDetector(
                    height=m.height,
                    threshold=m.threshold,
                    min_area=m.min_area,
                    alpha=m.alpha,
                    recalibrate=m.recalibrate,
                    masks=m.masks,
                ),
                keyframe_every=m.keyframe_every,
            )
            if m.enabled
            else None
        )
        self.tracker = (
            Tracker(
                high_score=t.high_score,
                low_score=t.low_score,
                match_iou=t.match_iou,
                min_hits=t.min_hits,
                max_misses=t.max_misses,
                max_age_s=t.max_age_s,
                labels=t.labels,
            )
            if pc.tracks
            else None
        )
        zones = [Zone(n, tuple(z.points), frozenset(z.labels)) for n, z in pc.zones.items()]
        lines = [Line(n, ln.points[0], ln.points[1], frozenset(ln.labels)) for n, ln in pc.lines.items()]
        self.events = EventLog(
            zones,
            lines,
            update_interval_s=t.update_interval_s,
            min_score_gain=t.min_score_gain,
            start_in_zone=t.start == "zone",
        )
        self._last_seen: object = None  # output: changes: what the last published prediction showed

    @property
    def idle(self) -> bool:
        """Nothing to do: every frame is inferred and published as before."""
        return self.gate is None and self.tracker is None and self.output == "every"

    # -- prepare stage -----------------------------------------------------------------------------
    def admit(self, item: Frame | Window) -> bool:
        """Whether the model runs on this frame (motion gating; sensor windows always)."""
        return self.gate is None or not isinstance(item, Frame) or self.gate.admit(item.image)

    # -- post stage ----------------------------------------------------------------------------
    def observe(
        self, detections: Sequence[Detection], classes: Sequence[Classification], index: int, ts: float
    ) -> Seen:
        """Track one inferred frame's detections; its events, counters and whether to publish it."""
        ids: list[int | None] = [None] * len(detections)
        messages: list[Message] = []
        if self.tracker is not None:
            observed = [
                Observed(d.label, d.score, (d.box.x1, d.box.y1, d.box.x2, d.box.y2)) for d in detections
            ]
            ids, ended = self.tracker.update(observed, index, ts)
            events = self.events.observe(self.tracker.tracks, ended, index, ts)
            messages = self._messages(events, ts)
        return Seen(self._publishes(detections, classes, ids), ids, messages)

    def close(self, ts: float) -> list[Message]:
        """The stream ended: ``end`` events for every open track, and the counters' last states."""
        if self.tracker is None:
            return []
        return self._messages(self.events.close(self.tracker.clear(), ts), ts)

    def _publishes(
        self, detections: Sequence[Detection], classes: Sequence[Classification], ids: list[int | None]
    ) -> bool:
        if self.output != "changes":
            return self.output == "every"
        seen: object = (
            tuple(
                sorted(Counter(d.label for d, i in zip(detections, ids, strict=True) if i is None).items())
            ),
            frozenset(i for i in ids if i is not None),
            classes[0].label if classes else None,
        )
        if seen == self._last_seen:
            return False
        self._last_seen = seen
        return True

    def _messages(self, events: list[dict[str, Any]], ts: float) -> list[Message]:
        out = [
            Message(self.events_topic, {"device": self.device, "pipeline": self.pipeline, **e})
            for e in events
        ]
        for kind, name, values in self.events.counters.take_changed():
            body = {"pipeline": self.pipeline, kind: name, **values, "ts": round(ts, 3)}
            out.append(Message(f"{self.state_topic}/{kind}s/{name}", body, retain=True))
        return out

    def report(self) -> dict[str, Any]:
        """The health objects: ``motion`` (when gating) and ``analytics`` (when tracking)."""
        out: dict[str, Any] = {}
        if self.gate is not None:
            out["motion"] = self.gate.report()
        if self.tracker is not None:
            out["analytics"] = {
                "tracks": len(self.tracker.tracks),
                "events_open": self.events.active,
                **self.events.counters.report(),
            }
        return out
