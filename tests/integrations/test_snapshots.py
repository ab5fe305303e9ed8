"""The annotated snapshot renderer and the per-pipeline holder, on a real model's real result."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.integrations.render import render_snapshot
from edge_runtime.integrations.snapshots import SnapshotHolder, SnapshotPublisher, SnapshotTrigger
from edge_runtime.model.loader import load_model
from edge_runtime.model.runner import InferenceResult, Runner
from edge_runtime.types import BBox, Classification, Detection, Frame

from ..conftest import CLASSIFIER, DATA, DETECTOR


@pytest.fixture(scope="module")
def astronaut() -> Frame:
    image = cv2.imread(str(DATA / "astronaut.jpg"))
    return Frame(7, 1_700_000_000.0, image)


def _run(model: Path, frame: Frame) -> InferenceResult:
    runner = Runner(load_model(model))
    try:
        return runner.predict(frame.image)
    finally:
        runner.close()


def test_snapshot_of_a_detection_is_a_bounded_jpeg_with_the_box_drawn(astronaut: Frame) -> None:
    result = _run(DETECTOR, astronaut)
    assert any(d.label == "person" for d in result.detections)
    jpeg = render_snapshot(astronaut, result, max_height=240, quality=70)
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] == 240  # 512 rows scaled down to the bound
    plain = cv2.resize(astronaut.image, image.shape[1::-1], interpolation=cv2.INTER_AREA)
    box = result.detections[0].box
    h, w = image.shape[:2]
    x1, y1, x2, y2 = int(box.x1 * w), int(box.y1 * h), int(box.x2 * w), int(box.y2 * h)
    # the box's left edge differs from the plain picture (a drawn line), its inside does not
    edge = np.abs(image[y1 + 20 : y2 - 20, x1].astype(int) - plain[y1 + 20 : y2 - 20, x1]).mean()
    inside = np.abs(
        image[(y1 + y2) // 2, x1 + 10 : x2 - 10].astype(int) - plain[(y1 + y2) // 2, x1 + 10 : x2 - 10]
    )
    assert edge > 40 > inside.mean()
    assert len(render_snapshot(astronaut, result, 240, quality=20)) < len(jpeg)  # quality is honoured


def test_snapshot_of_a_classification_writes_the_top_class(astronaut: Frame) -> None:
    coffee = Frame(0, time.time(), cv2.imread(str(DATA / "coffee.jpg")))
    result = _run(CLASSIFIER, coffee)
    assert result.classes[0].label == "espresso"
    annotated = cv2.imdecode(np.frombuffer(render_snapshot(coffee, result), np.uint8), cv2.IMREAD_COLOR)
    bare = cv2.imdecode(np.frombuffer(render_snapshot(coffee, None), np.uint8), cv2.IMREAD_COLOR)
    assert annotated.shape == bare.shape == coffee.image.shape  # under the bound: not scaled
    assert np.abs(annotated[:25, :150].astype(int) - bare[:25, :150]).mean() > 10  # the text band
    assert np.abs(annotated[200:300, 200:300].astype(int) - bare[200:300, 200:300]).mean() < 3


def _detected(label: str) -> InferenceResult:
    return InferenceResult("detection", detections=(Detection(0, label, 0.9, BBox(0.1, 0.1, 0.5, 0.5)),))


def test_trigger_fires_on_a_label_at_most_every_min_interval_and_periodically() -> None:
    now = [100.0]
    trigger = SnapshotTrigger(["person"], min_interval_s=10, every_s=60, clock=lambda: now[0])
    assert not trigger.fires(_detected("car"))
    assert trigger.fires(_detected("person"))
    now[0] += 5
    assert not trigger.fires(_detected("person"))  # within the minimum interval
    now[0] += 6
    assert trigger.fires(_detected("person"))
    now[0] = 161.0
    assert trigger.fires(_detected("car"))  # the periodic one
    cls = InferenceResult("classification", classes=(Classification(1, "person", 0.7),))
    now[0] += 11
    assert trigger.fires(cls)  # a classifier's top class counts too


def test_holder_renders_at_most_every_min_render_s_and_keeps_one_frame(astronaut: Frame) -> None:
    now = [0.0]
    holder = SnapshotHolder("front", max_height=120, min_render_s=1.0, clock=lambda: now[0])
    assert holder.latest() is None
    holder.offer(astronaut, _detected("person"), {})
    first = holder.latest()
    assert first is not None and first.index == 7
    newer = Frame(8, astronaut.ts + 1, astronaut.image)
    holder.offer(newer, _detected("person"), {})
    assert holder.latest() is first  # rendered 0 s ago: the cached image
    now[0] += 1.5
    second = holder.latest()
    assert second is not None and second.index == 8


def test_publisher_sends_a_triggered_frame_once_on_its_topic(astronaut: Frame) -> None:
    trigger = SnapshotTrigger(["person"], min_interval_s=10, every_s=None)
    holder = SnapshotHolder("front", trigger=trigger)
    sent: list[tuple[str, bytes, bool]] = []
    publisher = SnapshotPublisher(
        {"front": holder},
        {"front": ("edge/cam/snapshot/front", False)},
        lambda t, p, r: sent.append((t, p, r)),
    )
    holder.offer(astronaut, _detected("car"), {})
    publisher.tick()
    assert sent == []
    holder.offer(astronaut, _detected("person"), {})
    holder.offer(astronaut, _detected("person"), {})  # within the interval: still one
    publisher.tick()
    publisher.tick()
    assert [(t, r) for t, _, r in sent] == [("edge/cam/snapshot/front", False)]
    assert sent[0][1][:2] == b"\xff\xd8"  # a JPEG
