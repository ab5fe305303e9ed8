"""What every detector decoder returns, and the shared score-threshold + NMS step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_runtime.postprocess.labels import label_for
from edge_runtime.postprocess.nms import nms
from edge_runtime.types import BBox, Detection


@dataclass(frozen=True, slots=True)
class RawDetections:
    """Decoded candidates: ``boxes`` normalised xyxy in the MODEL INPUT, one score/class each."""

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    class_ids: npt.NDArray[np.intp]

    @classmethod
    def empty(cls) -> RawDetections:
        """No detections."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.intp))

    def select(self, idx: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> RawDetections:
        """A subset by index or mask."""
        return RawDetections(self.boxes[idx], self.scores[idx], self.class_ids[idx])


@dataclass(frozen=True, slots=True)
class DetectionParams:
    """Thresholds for the final selection (from model.yaml / config / CLI)."""

    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    class_agnostic: bool = False


def best_class(scores: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]:
    """Per-candidate best score and its class from an ``[N, C]`` score matrix."""
    class_ids = scores.argmax(axis=1)
    return np.take_along_axis(scores, class_ids[:, None], axis=1)[:, 0], class_ids


def select(raw: RawDetections, params: DetectionParams, *, apply_nms: bool = True) -> RawDetections:
    """Score threshold, then NMS (unless the model already did it), then max_detections."""
    raw = raw.select(raw.scores >= params.score_threshold)
    if apply_nms:
        keep = nms(
            raw.boxes,
            raw.scores,
            raw.class_ids,
            iou_threshold=params.iou_threshold,
            max_detections=params.max_detections,
            class_agnostic=params.class_agnostic,
        )
        return raw.select(keep)
    order = np.argsort(-raw.scores, kind="stable")[: params.max_detections]
    return raw.select(order)


def to_detections(
    boxes: npt.NDArray[np.float32], raw: RawDetections, labels: list[str] | None
) -> list[Detection]:
    """Value objects from boxes already mapped to the original image."""
    return [
        Detection(int(c), label_for(labels, int(c)), float(s), BBox(*map(float, b)))
        for b, s, c in zip(boxes, raw.scores, raw.class_ids, strict=True)
    ]
