"""Motion gating on generated videos: still stretches skipped, moving parts caught, masks,
recalibration on a sudden global change, sensor noise ignored."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_runtime.analytics.motion import MotionDetector, MotionGate

from .scenes import background, frames_of, linear, render, still_then


def test_the_gate_skips_still_stretches_and_runs_on_every_moving_frame(tmp_path: Path) -> None:
    bursts = [(40, 60), (150, 170)]
    scene = render(tmp_path / "v.mp4", 240, still_then(bursts, 240), person_h=120, noise=4)
    gate = MotionGate(MotionDetector(), keyframe_every=50)
    admitted = [gate.admit(f) for f in frames_of(tmp_path / "v.mp4")]
    moving = [i for i, box in enumerate(scene.boxes) if box is not None]
    # the person appears, walks and disappears: each of those frames differs from the last
    assert all(admitted[i] for i in moving)
    assert all(admitted[last + 1] for _, last in bursts)  # it left: that frame changed too
    still = [i for i in range(240) if all(not first <= i <= last + 25 for first, last in bursts)]
    keyframes = [i for i in still if admitted[i]]
    assert 0 in keyframes and len(keyframes) <= 6, keyframes
    report = gate.report()
    assert report["checked"] == 240 and report["skipped"] >= 150
    assert report["skipped"] + report["keyframes"] + round(report["motion_pct"] * 2.4) in range(238, 243)


def test_keyframes_come_every_nth_frame_without_motion() -> None:
    still = background()
    gate = MotionGate(MotionDetector(), keyframe_every=10)
    admitted = [i for i in range(45) if gate.admit(still)]
    assert admitted == [0, 10, 20, 30, 40]


def test_motion_inside_a_mask_is_ignored(tmp_path: Path) -> None:
    render(tmp_path / "v.mp4", 30, linear((0.05, 0.2), (0.3, 0.2), 0, 29), person_h=100)
    frames = frames_of(tmp_path / "v.mp4")
    masked = MotionDetector(masks=[[(0.0, 0.0), (0.6, 0.0), (0.6, 1.0), (0.0, 1.0)]])
    open_ = MotionDetector()
    assert sum(masked.detect(f).moving for f in frames) == 0
    assert sum(open_.detect(f).moving for f in frames) >= 25


def test_lights_on_recalibrate_instead_of_reporting_motion() -> None:
    dark = background()
    bright = cv2.convertScaleAbs(dark, alpha=1.0, beta=90)
    detector = MotionDetector()
    results = [detector.detect(dark) for _ in range(5)] + [detector.detect(bright) for _ in range(5)]
    assert [r.recalibrated for r in results[5:]] == [True, False, False, False, False]
    assert not any(r.moving for r in results)


def test_sensor_noise_is_not_motion() -> None:
    rng = np.random.default_rng(1)
    still = background()
    detector = MotionDetector()
    noisy = [cv2.add(still, rng.integers(0, 12, still.shape, dtype=np.uint8)) for _ in range(30)]
    assert sum(detector.detect(f).moving for f in noisy) == 0


def test_the_moving_region_is_where_the_object_went(tmp_path: Path) -> None:
    """Inside the span of its path (the background still remembers where it was a moment ago),
    and nowhere else."""
    scene = render(tmp_path / "v.mp4", 12, linear((0.2, 0.2), (0.4, 0.2), 0, 11), person_h=100)
    detector = MotionDetector()
    motions = [detector.detect(f) for f in frames_of(tmp_path / "v.mp4")]
    first, last = scene.boxes[0], scene.boxes[-1]
    assert first is not None and last is not None
    boxes = motions[-1].boxes
    assert len(boxes) == 1
    x1, y1, x2, y2 = boxes[0]
    assert first[0] - 0.03 <= x1 and x2 <= last[2] + 0.03 and first[1] - 0.03 <= y1 and y2 <= last[3] + 0.03
    assert x2 - x1 >= last[2] - last[0]  # covers the object itself
