"""Analytics end to end: the real daemon, the bundled person detector, a real broker.

A generated video with known ground truth (a person crop pasted on a still scene, walking left
to right over a counting line into a zone), and the real demo video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.broker import Broker, Recorder, wait_for
from tests.daemon import ROOT, DaemonProcess, make_config, make_video

from .scenes import linear, render

pytestmark = pytest.mark.slow
EVENTS, HEALTH = "/events/front", "/health"


def check_well_formed(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Every track's events: a start first, one end last, seqs increasing; by track id."""
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    tracks: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        tracks.setdefault(e["track_id"], []).append(e)
    for story in tracks.values():
        kinds = [e["type"] for e in story]
        assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("end") == 1, kinds
        assert story[-1]["first_frame"] <= story[-1]["last_frame"]
        assert story[-1]["best_score"] >= max(e["score"] for e in story) - 1e-9
    return tracks


def test_a_walker_crosses_the_line_into_the_zone_with_gating_and_events_only(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """Frames 0-29 still, 30-99 the person walks right (left edge 0.0 -> 0.6), hidden for frames
    60-63 (a brief occlusion), 100-149 still and empty. Its box's bottom centre passes x 0.5 (the
    gate, drawn bottom to top: forward) and enters the right part (the zone). One track all along."""
    video = tmp_path / "walk.mp4"
    path = linear((0.0, 0.2), (0.6, 0.2), 30, 99)
    scene = render(video, 150, lambda i: None if 60 <= i <= 63 else path(i), person_h=200)
    front = {
        "name": "front",
        "model": "person",
        "source": {"type": "video", "path": str(video), "fps": 0, "loop": False},
        "motion": {"enabled": True, "keyframe_every": 10},
        "zones": {
            "right": {"points": [[0.6, 0.0], [1.0, 0.0], [1.0, 1.0], [0.6, 1.0]], "labels": ["person"]}
        },
        "lines": {"gate": {"points": [[0.5, 1.0], [0.5, 0.0]]}},
        "output": "events",
    }
    daemon = DaemonProcess(make_config(tmp_path, broker.port, video, pipelines=[front]), tmp_path / "d.log")

    def settled() -> bool:
        health = recorder.on(HEALTH)
        return bool(health) and health[-1]["pipelines"]["front"]["frames"] == 150

    assert wait_for(settled, 120), daemon.log()[-3000:]
    assert daemon.terminate() == 0
    assert wait_for(lambda: any(e["type"] == "end" for e in recorder.on(EVENTS)), 10)
    assert recorder.on("/predictions/front") == []  # output: events
    tracks = check_well_formed(recorder.on(EVENTS))
    people = [story for story in tracks.values() if story[-1]["label"] == "person"]
    assert len(people) == 1, [story[-1] for story in people]  # the same id before and after hiding
    walker = people[0][-1]
    assert 30 <= walker["first_frame"] <= 40 and 90 <= walker["last_frame"] <= 100
    assert [(c["line"], c["direction"]) for c in walker["lines"]] == [("gate", "forward")]
    assert walker["entered_zones"] == ["right"] and walker["dwell_s"]["right"] > 0
    truth = [i for i, box in enumerate(scene.boxes) if box is not None and (box[0] + box[2]) / 2 > 0.6]
    assert truth and walker["last_frame"] >= truth[0]
    gate = recorder.on("/state/front/lines/gate")
    assert gate and gate[-1]["forward"] == 1 and gate[-1]["backward"] == 0
    zone = recorder.on("/state/front/zones/right")
    assert zone[-1]["entered"] >= 1 and zone[-1]["occupancy"] == 0 and zone[-1]["left"] == zone[-1]["entered"]
    motion = recorder.on(HEALTH)[-1]["pipelines"]["front"]["motion"]
    inferred = recorder.on(HEALTH)[-1]["pipelines"]["front"]["inferred"]
    assert motion["checked"] == 150 and motion["skipped"] >= 40 and inferred == 150 - motion["skipped"]


def test_the_demo_video_gives_one_well_formed_person_story(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """samples/demo.mp4: the astronaut for frames 0-29, then a cat, coffee and a rocket."""
    video = ROOT / "samples" / "demo.mp4"
    front = {
        "name": "front",
        "model": "person",
        "source": {"type": "video", "path": str(video), "fps": 0, "loop": False},
        "tracking": {"enabled": True},
        "output": "changes",
    }
    daemon = DaemonProcess(make_config(tmp_path, broker.port, video, pipelines=[front]), tmp_path / "d.log")

    def settled() -> bool:
        health = recorder.on(HEALTH)
        return bool(health) and health[-1]["pipelines"]["front"]["inferred"] == 120

    assert wait_for(settled, 120), daemon.log()[-3000:]
    assert wait_for(lambda: any(e["type"] == "end" for e in recorder.on(EVENTS)), 10)
    assert daemon.terminate() == 0
    tracks = check_well_formed(recorder.on(EVENTS))
    ends = [story[-1] for story in tracks.values()]
    assert ends and all(
        e["label"] == "person" and e["first_frame"] < 30 and e["reason"] == "gone" for e in ends
    )
    assert max(e["last_frame"] - e["first_frame"] for e in ends) >= 20  # one long story, not blips
    predictions = recorder.on("/predictions/front")
    assert 2 <= len(predictions) < 40  # output: changes: a handful, not 120
    ids = {d.get("track_id") for p in predictions for d in p["detections"]}
    assert ids - {None} <= set(tracks)


def test_a_track_open_at_shutdown_gets_its_end(tmp_path: Path, broker: Broker, recorder: Recorder) -> None:
    """A person in every frame of an endless video: SIGTERM, and the open track's ``end`` (reason
    ``stopped``) is delivered before the daemon exits."""
    video = make_video(tmp_path / "v.mp4", 30)
    front = {
        "name": "front",
        "model": "person",
        "source": {"type": "video", "path": str(video), "fps": 15, "loop": True},
        "output": "events",
    }
    daemon = DaemonProcess(make_config(tmp_path, broker.port, video, pipelines=[front]), tmp_path / "d.log")
    assert wait_for(lambda: any(e["type"] == "start" for e in recorder.on(EVENTS)), 60), daemon.log()[-3000:]
    assert daemon.terminate() == 0
    assert wait_for(lambda: any(e["type"] == "end" for e in recorder.on(EVENTS)), 10)
    tracks = check_well_formed(recorder.on(EVENTS))
    assert [story[-1]["reason"] for story in tracks.values()] == ["stopped"] * len(tracks)
