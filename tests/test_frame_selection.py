"""``every_n_frames`` and ``max_fps`` end to end: a real daemon, a real broker, a real video.

Skipped frames are counted (``frames``) but never inferred or published; what is published keeps
its seq without gaps (a skipped frame uses no seq).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .broker import Broker, Recorder, wait_for
from .daemon import DaemonProcess, make_config, make_video

PRED = "/predictions/front"


def _run(tmp_path: Path, broker: Broker, recorder: Recorder, frames: int, **pipeline: Any) -> dict[str, Any]:
    """Run the daemon over a video of ``frames`` frames until its pipeline ended; the last health."""
    video = make_video(tmp_path / "v.mp4", frames)
    source = {"type": "video", "path": str(video), "fps": pipeline.pop("fps", 0), "loop": False}
    config = make_config(
        tmp_path,
        broker.port,
        video,
        health={"interval_s": 3600},
        pipelines=[{"name": "front", "model": "person", "source": source, **pipeline}],
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        assert wait_for(lambda: "source ended" in daemon.log(), 90), daemon.log()[-3000:]
        assert daemon.terminate() == 0  # the last results reach the outbox, then the final health
        assert wait_for(lambda: len(recorder.on("/health")) >= 2, 30)
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    health: dict[str, Any] = recorder.on("/health")[-1]["pipelines"]["front"]
    return health


def test_every_n_frames_infers_every_nth_frame_only(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    front = _run(tmp_path, broker, recorder, 30, every_n_frames=3)
    preds = recorder.on(PRED)
    assert [p["frame"]["index"] for p in preds] == list(range(0, 30, 3))
    assert [p["seq"] for p in preds] == list(range(1, 11))
    assert front["frames"] == 30 and front["inferred"] == 10


def test_max_fps_limits_the_rate_by_the_frames_own_times(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """A video paced at 20 fps, max_fps 4: at most 4 frames per second of the frames' own
    timestamps, plus one frame of credit (the first one after a pause may come at once), whatever
    the machine's speed."""
    front = _run(tmp_path, broker, recorder, 40, fps=20, max_fps=4)
    preds = recorder.on(PRED)
    assert front["frames"] == 40 and front["inferred"] == len(preds)
    assert 2 <= len(preds) < 40
    stamps = [p["frame"]["ts"] for p in preds]
    assert len(preds) <= (stamps[-1] - stamps[0]) * 4 + 2, stamps
    assert [p["seq"] for p in preds] == list(range(1, len(preds) + 1))
