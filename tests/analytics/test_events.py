"""Zones, lines and events, with tracks from detections fed directly (known ground truth)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from edge_runtime.analytics.events import EventLog
from edge_runtime.analytics.regions import Line, Zone
from edge_runtime.analytics.tracker import Observed, Tracker

FPS = 15.0
DRIVEWAY = Zone("driveway", ((0.4, 0.0), (0.7, 0.0), (0.7, 1.0), (0.4, 1.0)))
GATE = Line("gate", (0.5, 1.0), (0.5, 0.0))  # drawn bottom to top: moving right is forward


def walk(
    log: EventLog, paths: list[dict[int, float]], frames: int, tracker: Tracker | None = None
) -> tuple[list[dict[str, Any]], Tracker]:
    """Each path maps frame -> the left edge of a 0.1 x 0.2 person box at y 0.5 (absent frames:
    not detected); returns every event, the stream closed after ``frames`` frames."""
    tracker = tracker or Tracker(max_misses=5)
    events: list[dict[str, Any]] = []
    for i in range(frames):
        dets = [Observed("person", 0.9, (p[i], 0.5, p[i] + 0.1, 0.7)) for p in paths if i in p]
        _, ended = tracker.update(dets, i, i / FPS)
        events += log.observe(tracker.tracks, ended, i, i / FPS)
    return events + log.close(tracker.clear(), frames / FPS), tracker


def test_line_directions_and_a_move_beside_the_segment() -> None:
    across = Line("a", (0.0, 0.5), (1.0, 0.5))  # drawn left to right: moving down is forward
    assert across.crossing((0.5, 0.4), (0.5, 0.6)) == "forward"
    assert across.crossing((0.5, 0.6), (0.5, 0.4)) == "backward"
    assert GATE.crossing((0.45, 0.5), (0.55, 0.5)) == "forward"
    assert GATE.crossing((0.55, 0.5), (0.45, 0.5)) == "backward"
    short = Line("s", (0.5, 0.0), (0.5, 0.3))
    assert short.crossing((0.4, 0.6), (0.6, 0.6)) is None  # crosses the extension only
    assert across.crossing((0.5, 0.4), (0.5, 0.5)) is None  # onto the line: not over it yet
    assert across.crossing((0.5, 0.5), (0.5, 0.6)) == "forward"  # ... counted when it leaves


def test_zone_contains_by_the_even_odd_rule() -> None:
    l_shape = Zone("l", ((0, 0), (0.5, 0), (0.5, 0.5), (1, 0.5), (1, 1), (0, 1)))
    assert l_shape.contains((0.25, 0.25)) and l_shape.contains((0.75, 0.75))
    assert not l_shape.contains((0.75, 0.25))


def test_a_walk_through_a_zone_and_over_a_line_gives_start_updates_end_and_dwell() -> None:
    """Left to right at 0.01 per frame: the box's bottom centre is at x = left + 0.05, inside the
    driveway (0.4..0.7) from left 0.35 to 0.65: frames 35..64, 30 frames = 2.0 s at 15 fps; it
    crosses the gate (x 0.5) between frames 45 and 46."""
    log = EventLog([DRIVEWAY], [GATE], update_interval_s=0.0)
    events, _ = walk(log, [{i: 0.01 * i for i in range(90)}], 100)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and set(kinds[1:-1]) == {"update"}
    end = events[-1]
    assert end["reason"] == "gone" and end["entered_zones"] == ["driveway"] and end["zones"] == []
    assert abs(end["dwell_s"]["driveway"] - 30 / FPS) <= 1 / FPS + 1e-6
    assert [(c["line"], c["direction"], c["frame"]) for c in end["lines"]] == [("gate", "forward", 46)]
    assert end["first_frame"] == 0 and end["last_frame"] == 89
    reasons = [why for e in events for why in e["changes"]]
    assert reasons == ["entered:driveway", "crossed:gate:forward", "left:driveway"]
    assert log.counters.zones["driveway"] == {"occupancy": 0, "entered": 1, "left": 1}
    assert log.counters.lines["gate"] == {"forward": 1, "backward": 0}


def test_every_start_has_an_end_also_for_tracks_open_at_shutdown() -> None:
    paths = [
        {i: 0.005 * i for i in range(40)},  # gone at frame 40
        {i: 0.8 - 0.005 * i for i in range(10, 100)},  # still there when the stream stops
        dict.fromkeys(range(50, 51), 0.2),  # one frame only: never confirmed, never started
    ]
    log = EventLog([DRIVEWAY], [GATE])
    events, _ = walk(log, paths, 80)
    starts = {e["track_id"] for e in events if e["type"] == "start"}
    ends = [e for e in events if e["type"] == "end"]
    assert len(starts) == 2 and sorted(e["track_id"] for e in ends) == sorted(starts)
    assert sorted(e["reason"] for e in ends) == ["gone", "stopped"]
    assert log.active == 0 and log.counters.zones["driveway"]["occupancy"] == 0


def test_the_second_walker_crosses_backwards_and_occupancy_counts_both() -> None:
    paths = [dict.fromkeys(range(60), 0.45), {i: 0.9 - 0.01 * i for i in range(60)}]
    log = EventLog([DRIVEWAY], [GATE])
    tracker = Tracker(max_misses=5)
    occupancy = []
    for i in range(60):
        _, ended = tracker.update(
            [Observed("person", 0.9, (p[i], 0.5, p[i] + 0.1, 0.7)) for p in paths], i, i / FPS
        )
        log.observe(tracker.tracks, ended, i, i / FPS)
        occupancy.append(log.counters.zones["driveway"]["occupancy"])
    assert max(occupancy) == 2 and occupancy[-1] == 1
    assert log.counters.lines["gate"] == {"forward": 0, "backward": 1}


def test_updates_are_rate_limited_and_changes_wait_for_the_interval() -> None:
    """A person jittering across a line every frame: crossings all count, updates at most one per
    second (the changes of the frames between are reported together)."""
    log = EventLog([], [GATE], update_interval_s=1.0)
    path = {i: 0.44 + (0.02 if i % 2 else 0.0) for i in range(60)}
    events, _ = walk(log, [path], 60)
    updates = [e for e in events if e["type"] == "update"]
    stamps = [e["last_seen"] for e in events if e["type"] != "end"]
    assert all(b - a >= 1.0 - 1e-6 for a, b in itertools.pairwise(stamps))
    assert 2 <= len(updates) <= 4
    total = log.counters.lines["gate"]
    assert total["forward"] + total["backward"] == 59 and abs(total["forward"] - total["backward"]) <= 1
    assert sum(len(e["changes"]) for e in updates) < 59  # batched, not one message per crossing
    assert len(events[-1]["lines"]) == 50  # the last ones listed; the counters count them all


@pytest.mark.parametrize("labels", [frozenset({"car"}), frozenset({"person"})])
def test_zone_labels_filter(labels: frozenset[str]) -> None:
    zone = Zone("z", DRIVEWAY.points, labels)
    log = EventLog([zone], [])
    walk(log, [dict.fromkeys(range(10), 0.5)], 10)
    assert log.counters.zones["z"]["entered"] == (1 if "person" in labels else 0)


def test_start_in_zone_reports_only_objects_that_enter_a_zone_but_lines_count_all() -> None:
    """One walker passes through the driveway; the other stays left of it and crosses a line
    there. Only the first makes events; both are counted."""
    left_line = Line("path", (0.2, 1.0), (0.2, 0.0))
    log = EventLog([DRIVEWAY], [left_line], start_in_zone=True)
    through = {i: 0.2 + 0.01 * i for i in range(60)}  # bottom centre 0.25 + 0.01 i: inside from 16
    outside = {i: 0.05 + 0.003 * i for i in range(60)}  # bottom centre 0.10 -> 0.28: crosses 0.2 only
    events, _ = walk(log, [through, outside], 60)
    assert {e["track_id"] for e in events} == {1}
    start = next(e for e in events if e["type"] == "start")
    assert start["zones"] == ["driveway"] and start["first_frame"] == 0 and start["last_frame"] == 16
    assert [e["type"] for e in events].count("end") == 1
    assert log.counters.lines["path"] == {"forward": 1, "backward": 0}  # the walker outside counted
    assert log.counters.zones["driveway"] == {"occupancy": 0, "entered": 1, "left": 1}
