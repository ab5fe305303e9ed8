"""File sources: a video file and a folder/glob of images. Lossless: every frame exactly once."""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.capture.base import SourceThread, pace

logger = logging.getLogger(__name__)

SMALL_FRAME_PIXELS = 1280 * 720  # decode_threads auto: one decoder thread up to this size
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class VideoFileSource(SourceThread):
    """Decode a video file, paced by ``fps`` (0 = as fast as the pipeline takes them)."""

    lossless = True
    hosts_first_stage = True
    pausable = True

    def __init__(
        self,
        name: str,
        path: Path,
        fps: float = 0.0,
        loop: bool = False,
        *,
        decode_threads: int | None = None,
    ) -> None:
        super().__init__(name)
        self.path, self.fps, self.loop = path, fps, loop
        self.decode_threads = decode_threads  # None: decided on the first open (_open)

    def _open(self) -> cv2.VideoCapture:
        """Open the file with the decoder threads chosen for it.

        FFmpeg decodes with a thread per core by default. For frames up to 1280x720 one thread
        costs less CPU per frame (measured on the demo video, 640x480 MPEG-4: about 0.67 against
        0.82 ms) and still decodes far faster than a model infers; the saved CPU goes to
        inference on a small board. Larger frames keep FFmpeg's choice.
        """
        path = str(self.path)
        if self.decode_threads is None:
            cap = cv2.VideoCapture(path)
            if not cap.isOpened():
                return cap
            w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
            small = 0 < w * h <= SMALL_FRAME_PIXELS and cap.getBackendName() == "FFMPEG"
            self.decode_threads = 1 if small else 0
            if not small:
                return cap
            cap.release()
        if self.decode_threads == 0:  # FFmpeg's own choice
            return cv2.VideoCapture(path)
        return cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, self.decode_threads])

    def produce(self) -> None:
        """Read every frame; rewind when looping."""
        due = time.monotonic()
        while not self.stop_event.is_set():
            cap = self._open()
            if not cap.isOpened():
                self.set_state("failed", f"{self.path}: cannot open video")
                return
            self.set_state("streaming")
            read_any = at_end = False
            try:
                while not self.stop_event.is_set():
                    # Wait first, then decode and hand over: decoding right after a hand-over
                    # would keep this core from the thread just woken to preprocess (about 1 ms
                    # of its latency, measured at 15 fps).
                    slot, due = due, pace(due, self.fps, self.stop_event)
                    t0 = time.perf_counter()
                    ok, image = cap.read()
                    decode_ms = (time.perf_counter() - t0) * 1e3  # the pacing wait is not capture work
                    if not ok:
                        due = slot  # the end of the file took no frame's slot: the next loop's first takes it
                        at_end = True
                        break
                    read_any = True
                    if not self.emit(image, decode_ms):
                        return
            finally:
                cap.release()
            if not self.loop or not read_any:
                if at_end:
                    self._log_end()
                return

    def _log_end(self) -> None:
        """Say that the file is done while the daemon runs on: an idle pipeline is not a hang."""
        if self.frames == 0:
            logger.warning("pipeline %s: no frame could be decoded from %s", self.name, self.path)
        elif not self.loop:
            logger.info(
                "pipeline %s: video %s ended after %d frames (loop: false); the pipeline stays idle, "
                "the daemon keeps running (MQTT, health, updates)",
                self.name,
                self.path,
                self.frames,
            )


def list_images(pattern: str) -> list[Path]:
    """Images in a folder, or matching a glob, sorted by name."""
    path = Path(pattern)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    # a glob pattern may be absolute, which Path.glob does not take
    return sorted(Path(p) for p in glob.glob(pattern) if Path(p).suffix.lower() in IMAGE_SUFFIXES)  # noqa: PTH207


class ImagesSource(SourceThread):
    """Every image of a folder or glob, in name order; unreadable files are skipped and logged."""

    lossless = True
    hosts_first_stage = True
    pausable = True

    def __init__(self, name: str, pattern: str, fps: float = 0.0, loop: bool = False) -> None:
        super().__init__(name)
        self.pattern, self.fps, self.loop = pattern, fps, loop
        self.skipped = 0

    def produce(self) -> None:
        """Decode and hand over each image."""
        files = list_images(self.pattern)
        if not files:
            self.set_state("failed", f"{self.pattern}: no images")
            return
        self.set_state("streaming")
        due = time.monotonic()
        while not self.stop_event.is_set():
            for file in files:
                slot, due = due, pace(due, self.fps, self.stop_event)  # wait first: see VideoSource
                t0 = time.perf_counter()
                image = cv2.imdecode(np.fromfile(str(file), np.uint8), cv2.IMREAD_COLOR)
                decode_ms = (time.perf_counter() - t0) * 1e3
                if image is None:
                    due = slot
                    self.skipped += 1
                    logger.warning("source %s: skipping unreadable image %s", self.name, file)
                    continue
                if not self.emit(image, decode_ms):
                    return
            if not self.loop:
                return
