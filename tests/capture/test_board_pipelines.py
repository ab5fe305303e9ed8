"""Board camera pipelines (Jetson CSI through nvarguscamerasrc, Pi cameras through libcamerasrc)
built from config, tested at the OpenCV seam: no board camera exists here, and PyPI's OpenCV has
no GStreamer. What reaches ``cv2.VideoCapture`` and what a user reads when it cannot work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml

from edge_runtime.capture import live as live_module
from edge_runtime.capture import make_source
from edge_runtime.capture.live import LiveSource
from edge_runtime.config.loader import load_config

from ..conftest import CLASSIFIER, ROOT

LIBCAMERA = (
    "libcamerasrc ! video/x-raw,width=640,height=480,framerate=30/1 ! videoconvert ! "
    "appsink drop=true max-buffers=1"
)


def _source(tmp_path: Path, board: str) -> LiveSource:
    """The source a board's example config describes (its first pipeline's), built as the daemon does.

    Jetson: ``configs/jetson.yaml`` as shipped; Pi: ``configs/rpi-coral.yaml``'s commented Pi
    camera source. The rest of the config is minimal (the examples name files of a device).
    """
    if board == "jetson":
        source = yaml.safe_load((ROOT / "configs" / "jetson.yaml").read_text())["pipelines"][0]["source"]
    else:
        source = {"type": "gstreamer", "pipeline": LIBCAMERA}
    doc = {
        "models": {"m": {"path": str(CLASSIFIER)}},
        "pipelines": [{"name": "front", "model": "m", "source": source}],
    }
    path = tmp_path / f"{board}.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    built = make_source("front", cfg.pipelines[0].source, mqtt=cfg.mqtt, device=cfg.device.id)
    assert isinstance(built, LiveSource)
    return built


@pytest.fixture
def opencv_with_gstreamer(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """OpenCV as a board's distribution builds it (with GStreamer): the calls it gets."""
    calls: list[tuple[Any, ...]] = []

    class Capture:
        def __init__(self, *args: Any) -> None:
            calls.append(args)

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return False

        def release(self) -> None:
            pass

    fake = type("cv2", (), {"VideoCapture": Capture, "CAP_GSTREAMER": cv2.CAP_GSTREAMER})
    info = "  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   YES (1.22)\n"
    fake.getBuildInformation = staticmethod(lambda: info)  # type: ignore[attr-defined]
    monkeypatch.setattr(live_module, "cv2", fake)
    return calls


@pytest.mark.parametrize("board", ["jetson", "pi"])
def test_a_board_camera_pipeline_reaches_opencv_as_configured(
    tmp_path: Path, opencv_with_gstreamer: list[tuple[Any, ...]], board: str
) -> None:
    source = _source(tmp_path, board)
    assert source._stream_once() is False  # the fake camera does not open
    ((pipeline, backend),) = opencv_with_gstreamer
    assert backend == cv2.CAP_GSTREAMER
    first = "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM)" if board == "jetson" else LIBCAMERA
    assert pipeline.startswith(first) and "appsink" in pipeline.split("!")[-1], pipeline
    assert source.error == "gstreamer pipeline: cannot open (failed after 0.0s)"


@pytest.mark.skipif(
    re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()) is not None, reason="this OpenCV has GStreamer"
)
def test_without_gstreamer_in_opencv_the_user_is_told_which_opencv_to_use(tmp_path: Path) -> None:
    """PyPI's opencv-python-headless has no GStreamer: the source's error (health's
    ``source_error``, the reconnecting line) says so instead of a silent failed open."""
    source = _source(tmp_path, "jetson")
    assert source._stream_once() is False
    assert source.error == (
        "gstreamer pipeline: cannot open: this OpenCV has no GStreamer support "
        "(use the distribution's python3-opencv)"
    )
