"""One pipeline's analytics from its config: output modes, topics of events and states, close."""

from __future__ import annotations

from typing import Any

from edge_runtime.analytics import Analytics
from edge_runtime.config.sections import PipelineConfig
from edge_runtime.types import BBox, Classification, Detection


def make(**keys: Any) -> Analytics:
    pc = PipelineConfig.model_validate(
        {"name": "front", "model": "m", "source": {"type": "synthetic"}, **keys}
    )
    return Analytics(pc, device="cam", events_topic="e/cam/events/front", state_topic="e/cam/state/front")


def person(x: float, score: float = 0.9) -> Detection:
    return Detection(0, "person", score, BBox(x, 0.5, x + 0.1, 0.9))


def test_a_pipeline_without_analytics_keys_is_idle() -> None:
    assert make().idle and not make(output="changes").idle and not make(motion={"enabled": True}).idle


def test_output_changes_without_tracking_publishes_when_the_labels_change() -> None:
    analytics = make(output="changes")
    frames = [[person(0.1)], [person(0.2)], [person(0.2), person(0.6)], [person(0.3), person(0.5)], []]
    published = [analytics.observe(d, [], i, i / 15).predict for i, d in enumerate(frames)]
    assert published == [True, False, True, False, True]
    top = [Classification(1, "cat", 0.9)], [Classification(1, "cat", 0.8)], [Classification(2, "dog", 0.7)]
    assert [analytics.observe([], c, 9, 1.0).predict for c in top] == [True, False, True]


def test_events_mode_tracks_publishes_no_predictions_and_closes_every_track() -> None:
    gate = {"gate": {"points": [[0.5, 1], [0.5, 0]]}}
    analytics = make(output="events", lines=gate, tracking={"update_interval_s": 0})
    seen = [analytics.observe([person(0.3 + 0.02 * i)], [], i, i / 15) for i in range(10)]
    assert not any(s.predict for s in seen)
    assert seen[0].track_ids == [1] and {s.track_ids[0] for s in seen} == {1}
    messages = [m for s in seen for m in s.messages]
    events = [m.body for m in messages if m.topic == "e/cam/events/front"]
    states = [m for m in messages if m.topic == "e/cam/state/front/lines/gate"]
    assert [e["type"] for e in events] == ["start", "update"] and events[0]["device"] == "cam"
    assert states and states[-1].retain and states[-1].body["forward"] == 1
    closed = analytics.close(2.0)
    assert [m.body["type"] for m in closed] == ["end"] and closed[0].body["reason"] == "stopped"
    assert analytics.report()["analytics"]["events_open"] == 0 and analytics.close(3.0) == []
