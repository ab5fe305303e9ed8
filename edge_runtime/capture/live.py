"""Live sources through OpenCV: V4L2 cameras, GStreamer pipelines, RTSP/HTTP streams.

Each keeps only the freshest frame (the pipeline never works on stale images) and reconnects
with exponential backoff and jitter, capped low (``reconnect.max_s``, 2 s by default), so a
camera that comes back streams again within seconds. Timeouts come from the config: FFmpeg
honours OpenCV's open/read timeout properties, so a dead RTSP camera, or one that accepts the
connection and then sends nothing, turns into a reconnect instead of a hang.

OpenCV and FFmpeg report a failed open on stderr themselves, from C, in their own format; the
daemon turns that off at start (``commands/daemon.py``), so the reason a source gives here
(``source_error`` in health, the ``reconnecting`` line) is the one that reaches the log.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import cv2

from edge_runtime.backoff import backoff_delays
from edge_runtime.capture.base import SourceThread
from edge_runtime.errors import DeviceLostError

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
        reconnect_max_s: float = 2.0,
        give_up_after: int | None = None,
        fps: float | None = None,
    ) -> None:
        super().__init__(name)
        self.opener, self.describe = opener, describe
        self.reconnect_initial_s, self.reconnect_max_s = reconnect_initial_s, reconnect_max_s
        self.give_up_after, self.fps = give_up_after, fps
        self.reconnects = 0

    def retry_delays(self) -> Iterator[float]:
        """Doubling from ``reconnect_initial_s`` up to the cap, each with +-20% jitter.

        The cap is ``reconnect_max_s``, or ``reconnect_initial_s`` when that is larger (a first
        delay set above the cap is kept, not cut back after one attempt).
        """
        initial = self.reconnect_initial_s
        return backoff_delays(initial, max(initial, self.reconnect_max_s))

    def produce(self) -> None:
        """The reconnect loop."""
        delays = self.retry_delays()
        failures = 0
        while not self.stop_event.is_set():
            if self._stream_once():
                failures = 0
                delays = self.retry_delays()
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

    def stats(self) -> dict[str, Any]:
        """``reconnects``: attempts to reopen the stream since start (health)."""
        return {"reconnects": self.reconnects}

    def _stream_once(self) -> bool:
        """Open and read until the stream fails. True when at least one frame came through."""
        t0 = time.perf_counter()
        try:
            cap = self.opener()
        except Exception as exc:  # OpenCV/GStreamer raise assorted errors
            self.error = f"{self.describe}: cannot open: {exc}"
            return False
        if cap is None or not cap.isOpened():
            self.error = f"{self.describe}: cannot open ({_after(t0)})"
            return False
        got_frame = False
        try:
            while not self.stop_event.is_set():
                t0 = time.perf_counter()
                ok, image = cap.read()
                if not ok or image is None:
                    self.error = f"{self.describe}: no frame (read {_after(t0)}: stream ended or timed out)"
                    return got_frame
                if not got_frame:
                    self.set_state("streaming")
                    got_frame = True
                self.emit(image, (time.perf_counter() - t0) * 1e3)
        finally:
            cap.release()
        return got_frame


def _after(t0: float) -> str:
    return f"failed after {time.perf_counter() - t0:.1f}s"


def ffmpeg_opener(url: str, open_timeout_s: float, read_timeout_s: float, transport: str = "tcp") -> Opener:
    """Open a network stream with FFmpeg and the given timeouts."""
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
    """Open a V4L2 camera by index or /dev/videoN path with the requested format.

    When OpenCV cannot open it, the reason is found by opening the device node directly
    (:func:`camera_problem`) and raised as :class:`DeviceLostError`.
    """

    def open_camera() -> Any:
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            why = camera_problem(device)
            if why:
                raise DeviceLostError(why)
        else:
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


def camera_problem(device: int | str) -> str | None:
    """Why a V4L2 camera does not open, from opening its device node directly (OpenCV does not say).

    The errno tells the cases apart: ``EPERM`` is the service's device policy (systemd allows
    the video4linux major only if a V4L2 driver was loaded when the service started:
    docs/systemd.md), ``EACCES`` the node's permissions, ``ENOENT`` a camera that is not there.
    None when the node opens: then the driver or the requested format is the problem.
    """
    path = f"/dev/video{device}" if isinstance(device, int) else device
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return _CAMERA_ERRORS.get(exc.errno or 0, "{path}: " + str(exc.strerror)).format(path=path)
    os.close(fd)
    return None


_CAMERA_ERRORS = {
    errno.ENOENT: "{path} does not exist: no camera there (yet)",
    errno.EACCES: "{path}: permission denied (is the service user in the node's group, video?)",
    errno.EPERM: "{path}: blocked by the service's device policy; no V4L2 driver was loaded when "
    "the service started, so restart it (docs/systemd.md#cameras-plugged-in-later)",
}


def gstreamer_opener(pipeline: str) -> Opener:
    """Open a GStreamer pipeline (it must end in appsink); needs OpenCV built with GStreamer."""

    def open_pipeline() -> Any:
        # the build information pads its columns: "    GStreamer:                   NO"
        if re.search(r"GStreamer:\s+NO", cv2.getBuildInformation()):
            raise RuntimeError("this OpenCV has no GStreamer support (use the distribution's python3-opencv)")
        return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)

    return open_pipeline
