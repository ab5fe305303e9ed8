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
from tests.timeouts import scaled

from ..broker import Broker, Recorder, wait_for
from ..conftest import ROOT
from ..daemon import DaemonProcess, make_config, make_video

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
        while (frame := source.handoff.get(timeout=scaled(10.0))) is not None:
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


def test_a_paced_looping_video_spends_its_frame_slots_on_frames_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paced source waits for a frame's slot before it decodes (so that nothing runs right after a
    hand-over); the read that finds the end of the file must not use up a slot, or every loop would
    add a frame's pause. With the pacing clock replaced by a counter, slot k goes to frame k."""
    video = tmp_path / "three.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for value in (0, 100, 200):
        writer.write(np.full((32, 32, 3), value, np.uint8))
    writer.release()
    slots: list[float] = []

    def counting_pace(due: float, fps: float, stop: object) -> float:
        slots.append(due)
        return due + 1

    monkeypatch.setattr("edge_runtime.capture.files.pace", counting_pace)
    source = VideoFileSource("t", video, fps=10, loop=True)
    start = None
    source.start()
    try:
        for index in range(8):  # almost three loops of three frames
            frame = source.handoff.get(timeout=scaled(10.0))
            assert frame and frame.index == index
            start = slots[0] if start is None else start
    finally:
        source.stop()
    used = [s - start for s in slots]
    # each end of file asks for a slot once more, and the next loop's first frame gets the same one
    assert used[:11] == [0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8][: len(used[:11])] and len(used) >= 10


def _front_states(recorder: Recorder) -> list[str]:
    return [h["pipelines"]["front"]["source_state"] for h in recorder.on("/health")]


@pytest.mark.slow
def test_a_video_without_loop_ends_its_pipeline_said_once_while_the_daemon_runs_on(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """After the last frame the health shows the pipeline's source ``ended`` and the log says why
    nothing more comes: the file ended (with its frame count), and the daemon keeps running."""
    video = make_video(tmp_path / "short.mp4", 12)
    daemon = DaemonProcess(make_config(tmp_path, broker.port, video), tmp_path / "daemon.log")
    try:
        assert wait_for(lambda: "ended" in _front_states(recorder), 60), daemon.log()[-3000:]
        seen = len(recorder.on("/health"))
        assert wait_for(lambda: len(recorder.on("/health")) >= seen + 2, 10)  # health goes on
        assert _front_states(recorder)[-1] == "ended" and daemon.proc.poll() is None
        assert len(recorder.on("/predictions/front")) == 12
        log = daemon.log()
        message = f"pipeline front: video {video} ended after 12 frames (loop: false)"
        assert log.count(message) == 1, log[-3000:]
        assert "the daemon keeps running (MQTT, health, updates)" in log
    finally:
        assert daemon.terminate() == 0
