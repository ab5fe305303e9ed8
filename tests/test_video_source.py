"""The video file source: every frame once, in order, whatever the decoder's threads."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from edge_runtime.capture import make_source
from edge_runtime.capture.files import VideoFileSource
from edge_runtime.config.sources import VideoSource

from .conftest import ROOT

DEMO = ROOT / "samples" / "demo.mp4"


def _reference_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def _drain(source: VideoFileSource) -> list[np.ndarray]:
    source.start()
    images = []
    try:
        while (frame := source.handoff.get(timeout=10.0)) is not None:
            assert frame is not False, "the source stalled"
            assert frame.index == len(images)
            images.append(frame.image)
    finally:
        source.stop()
    return images


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_every_frame_once_and_bit_identical_to_opencv_defaults(threads: int | None) -> None:
    reference = _reference_frames(DEMO)
    assert len(reference) == 120
    source = VideoFileSource("t", DEMO, decode_threads=threads)
    images = _drain(source)
    assert len(images) == len(reference)
    for ours, theirs in zip(images, reference, strict=True):
        assert np.array_equal(ours, theirs)
    if threads is None:  # auto: a 640x480 file is decoded by one thread
        assert source.decode_threads == 1


def test_decode_threads_auto_by_default_and_positive_when_given() -> None:
    adapter = TypeAdapter(VideoSource)
    assert adapter.validate_python({"type": "video", "path": str(DEMO)}).decode_threads == "auto"
    assert (
        adapter.validate_python({"type": "video", "path": str(DEMO), "decode_threads": 3}).decode_threads == 3
    )
    with pytest.raises(ValidationError, match="decode_threads"):
        adapter.validate_python({"type": "video", "path": str(DEMO), "decode_threads": 0})
    source = make_source(
        "t", adapter.validate_python({"type": "video", "path": str(DEMO), "decode_threads": 2})
    )
    assert isinstance(source, VideoFileSource) and source.decode_threads == 2
