"""Motion gating: is there motion in this frame, and should the model run on it?

Measured on a small grayscale copy (about 100 px high) against a running-average background:
pixels that differ by more than ``threshold`` form regions; regions smaller than ``min_area`` are
noise. When most of the image changes at once (lights switched on, the camera moved) there is no
telling motion from the new scene: the background is reset to it ("recalibration") and the frame
counts as still. Masks blank regions whose motion never matters (a clock, trees in the wind).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Polygon = Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Motion:
    """What one frame showed: the moving regions (normalised xyxy boxes) and the changed fraction."""

    boxes: tuple[tuple[float, float, float, float], ...]
    changed: float  # fraction of the (unmasked) small image that differs from the background
    recalibrated: bool = False

    @property
    def moving(self) -> bool:
        """Whether any region large enough moved."""
        return bool(self.boxes)


class MotionDetector:
    """Frame differencing against a running average on a small grayscale copy."""

    def __init__(
        self,
        *,
        height: int = 100,
        threshold: int = 25,
        min_area: float = 0.0005,
        alpha: float = 0.1,
        recalibrate: float = 0.6,
        masks: Sequence[Polygon] = (),
    ) -> None:
        self.height, self.threshold, self.min_area = height, threshold, min_area
        self.alpha, self.recalibrate = alpha, recalibrate
        self.masks = [np.asarray(m, np.float32) for m in masks]
        self._background: npt.NDArray[np.float32] | None = None
        self._keep: npt.NDArray[Any] | None = None  # 255 where motion counts, per small size
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def _small(self, image: npt.NDArray[Any]) -> npt.NDArray[Any]:
        h, w = image.shape[:2]
        size = (max(1, round(w * self.height / h)), self.height)
        # INTER_LINEAR: measured 0.15 ms on a 640x360 frame against 0.7 ms for INTER_AREA, which
        # would cost more than the rest of the motion stage together; the blur below takes care
        # of the noise that area averaging would have removed.
        small = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return cv2.GaussianBlur(gray, (3, 3), 0)

    def _mask(self, shape: tuple[int, int]) -> npt.NDArray[Any]:
        if self._keep is None or self._keep.shape != shape:
            keep = np.full(shape, 255, np.uint8)
            scale = np.array([shape[1], shape[0]], np.float32)
            for polygon in self.masks:
                cv2.fillPoly(keep, [np.round(polygon * scale).astype(np.int32)], 0)
            self._keep = keep
        return self._keep

    def detect(self, image: npt.NDArray[Any]) -> Motion:
        """Compare ``image`` (BGR or gray) with the background, then let the background follow it."""
        gray = self._small(image)
        if self._background is None or self._background.shape != gray.shape:
            self._background = gray.astype(np.float32)
            return Motion((), 0.0)  # nothing to compare with yet
        keep = self._mask(gray.shape)
        diff = cv2.absdiff(gray, cv2.convertScaleAbs(self._background))
        _, moved = cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)
        moved = cv2.bitwise_and(moved, keep)
        counted = max(1, int(cv2.countNonZero(keep)))
        changed = cv2.countNonZero(moved) / counted
        if changed > self.recalibrate:
            self._background = gray.astype(np.float32)
            return Motion((), changed, recalibrated=True)
        cv2.accumulateWeighted(gray, self._background, self.alpha)
        return Motion(self._regions(moved), changed)

    def _regions(self, moved: npt.NDArray[Any]) -> tuple[tuple[float, float, float, float], ...]:
        moved = cv2.dilate(moved, self._kernel, iterations=2)  # join the parts of one object
        contours, _ = cv2.findContours(moved, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        h, w = moved.shape
        least = self.min_area * h * w
        boxes = []
        for contour in contours:
            if cv2.contourArea(contour) < least:
                continue
            x, y, bw, bh = cv2.boundingRect(contour)
            boxes.append((x / w, y / h, (x + bw) / w, (y + bh) / h))
        return tuple(boxes)


class MotionGate:
    """Decides per frame whether the model runs: on motion, and on every ``keyframe_every``-th frame
    since the last run. Counts what it decided (health ``motion``)."""

    def __init__(self, detector: MotionDetector, *, keyframe_every: int = 75) -> None:
        self.detector, self.keyframe_every = detector, keyframe_every
        self.checked = self.moving = self.skipped = self.keyframes = self.recalibrations = 0
        self._since_run = 0
        self._lock = threading.Lock()  # the counters are read by the health thread

    def admit(self, image: npt.NDArray[Any]) -> bool:
        """True: run the model on this frame; False: skip it (no motion, no keyframe due)."""
        motion = self.detector.detect(image)
        first = self.checked == 0
        with self._lock:
            self.checked += 1
            self.recalibrations += motion.recalibrated
            if motion.moving:
                self.moving += 1
            elif first or self._since_run + 1 >= self.keyframe_every:
                self.keyframes += 1
            else:
                self._since_run += 1
                self.skipped += 1
                return False
            self._since_run = 0
            return True

    def report(self) -> dict[str, Any]:
        """The health ``motion`` object: share of frames with motion (%), skipped, keyframes."""
        with self._lock:
            checked = self.checked
            return {
                "motion_pct": round(100.0 * self.moving / checked, 1) if checked else None,
                "checked": checked,
                "skipped": self.skipped,
                "keyframes": self.keyframes,
                "recalibrations": self.recalibrations,
            }
