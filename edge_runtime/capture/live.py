"""Live sources through OpenCV: V4L2 cameras, GStreamer pipelines, RTSP/HTTP streams.

Each keeps only the freshest frame (the pipeline never works on stale images) and reconnects
with exponential backoff and jitter. Timeouts come from the config: FFmpeg honours OpenCV's
open/read timeout properties, so a dead RTSP camera turns into a reconnect instead of a hang.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import cv2

from edge_runtime.backoff import backoff_delays
from edge_runtime.capture.base import SourceThread

logger = logging.getLogger(__name__)

Opener = Callable[[], Any]  # returns an opened cv2.VideoCapture-like object


class LiveSource(SourceThread):
    """Open, read until failure, back off, reopen — until stopped or out of attempts."""

    def __init__(
        self,
        name: str,
        opener: Opener,
        describe: str,
        *,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        give_up_after: int | None = None,
        fps: float | None = None,
    ) -> None:
        super().__init__(name)
        self.opener, self.describe = opener, describe
        self.reconnect_initial_s, self.reconnect_max_s = reconnect_initial_s, reconnect_max_s
        self.give_up_after, self.fps = give_up_after, fps
        self.reconnects = 0

    def produce(self) -> None:
        """The reconnect loop."""
        delays = backoff_delays(self.reconnect_initial_s, self.reconnect_max_s)
        failures = 0
        while not self.stop_event.is_set():
            if self._stream_once():
                failures = 0
                delays = backoff_delays(self.reconnect_initial_s, self.reconnect_max_s)
            failures += 1
            if self.give_up_after is not None and failures >= self.give_up_after:
                self.set_state("failed", f"{self.describe}: gave up after {failures} attempts")
                return
            if self.stop_event.is_set():
                return
            delay = next(delays)
            self.set_state("reconnecting", f"{self.error or 'stream lost'}; retry in {delay:.1f}s")
            self.reconnects += 1
            self.stop_event.wait(delay)

    def _stream_once(self) -> bool:
        """Open and read until the stream fails. True when at least one frame came through."""
        try:
            cap = self.opener()
        except Exception as exc:  # OpenCV/GStreamer raise assorted errors
            self.error = f"{self.describe}: cannot open: {exc}"
            return False
        if cap is None or not cap.isOpened():
            self.error = f"{self.describe}: cannot open"
            return False
        got_frame = False
        try:
            while not self.stop_event.is_set():
                t0 = time.perf_counter()
                ok, image = cap.read()
                if not ok or image is None:
                    self.error = f"{self.describe}: read failed or timed out"
                    return got_frame
                if not got_frame:
                    self.set_state("streaming")
                    got_frame = True
                self.emit(image, (time.perf_counter() - t0) * 1e3)
        finally:
            cap.release()
        return got_frame


def ffmpeg_opener(url: str, open_timeout_s: float, read_timeout_s: float, transport: str = "tcp") -> Opener:
    """Open a network stream with FFmpeg and the given timeouts."""
    import os

    if url.startswith("rtsp"):
        # FFmpeg reads its demuxer options from this variable; tcp avoids UDP loss over Wi-Fi
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", f"rtsp_transport;{transport}")
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(read_timeout_s * 1000),
    ]
    return lambda: cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def camera_opener(
    device: int | str, width: int | None, height: int | None, fps: float | None, fourcc: str | None
) -> Opener:
    """Open a V4L2 camera by index or /dev/videoN path with the requested format."""

    def open_camera() -> Any:
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if cap.isOpened():
            if fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*fourcc))
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps:
                cap.set(cv2.CAP_PROP_FPS, fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # we want the newest frame, not a backlog
        return cap

    return open_camera


def gstreamer_opener(pipeline: str) -> Opener:
    """Open a GStreamer pipeline (it must end in appsink); needs OpenCV built with GStreamer."""

    def open_pipeline() -> Any:
        if "GStreamer:" in cv2.getBuildInformation() and "GStreamer: NO" in cv2.getBuildInformation():
            raise RuntimeError("this OpenCV has no GStreamer support (use the distribution's python3-opencv)")
        return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)

    return open_pipeline
