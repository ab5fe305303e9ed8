"""Class-aware non-maximum suppression, vectorised over the IoU matrix."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

MAX_CANDIDATES = 3000  # NMS is O(n^2) in memory: cap the candidates by score first


def iou_matrix(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Pairwise IoU of xyxy boxes ``a`` [N,4] and ``b`` [M,4] -> [N,M]."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def nms(
    boxes: npt.NDArray[np.floating],
    scores: npt.NDArray[np.floating],
    class_ids: npt.NDArray[np.integer],
    *,
    iou_threshold: float,
    max_detections: int,
    class_agnostic: bool = False,
) -> npt.NDArray[np.intp]:
    """Indices of the kept boxes, best score first.

    Class-aware by default: boxes of different classes never suppress each other (implemented by
    moving each class to its own region of the plane, so one IoU matrix serves all classes).
    """
    if len(scores) == 0:
        return np.empty(0, dtype=np.intp)
    order = np.argsort(-np.asarray(scores), kind="stable")[:MAX_CANDIDATES]
    b = np.asarray(boxes, dtype=np.float32)[order]
    if not class_agnostic:
        span = float(np.abs(b).max()) + 1.0
        b = b + (np.asarray(class_ids)[order].astype(np.float32) * 2.0 * span)[:, None]
    suppressed = iou_matrix(b, b) > iou_threshold
    kept: list[int] = []
    alive = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        kept.append(i)
        if len(kept) >= max_detections:
            break
        alive &= ~suppressed[i]
    return order[np.asarray(kept, dtype=np.intp)]
