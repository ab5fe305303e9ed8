"""A moving test pattern: a demo and a test source that needs no camera and no files."""

from __future__ import annotations

import time

import cv2
import numpy as np

from edge_runtime.capture.base import SourceThread, pace


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """Frame ``index`` of the pattern: colour bars, a moving disc, and the frame number."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    image = np.empty((height, width, 3), np.uint8)
    image[:, :, 0] = x.astype(np.uint8)
    image[:, :, 1] = ((x + index * 4) % 256).astype(np.uint8)
    image[:, :, 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    cx = int((index * 7) % width)
    cy = int(height / 2 + height / 4 * np.sin(index / 10))
    cv2.circle(image, (cx, cy), max(4, height // 8), (255, 255, 255), -1)
    cv2.putText(image, f"#{index}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    return image


class SyntheticSource(SourceThread):
    """Generates ``frames`` frames (or forever) at ``fps``; behaves like a live source."""

    def __init__(self, name: str, width: int, height: int, fps: float, frames: int | None) -> None:
        super().__init__(name)
        self.width, self.height, self.fps, self.limit = width, height, fps, frames

    def produce(self) -> None:
        """Draw and hand over frames."""
        self.set_state("streaming")
        due = time.monotonic()
        index = 0
        while not self.stop_event.is_set() and (self.limit is None or index < self.limit):
            due = pace(due, self.fps, self.stop_event)  # wait first: see VideoSource
            t0 = time.perf_counter()
            image = pattern(index, self.width, self.height)
            render_ms = (time.perf_counter() - t0) * 1e3  # the pacing wait is not capture work
            self.emit(image, render_ms)
            index += 1
