"""YOLO heads: v5/v7 ``[1, N, 5 + C]`` (with objectness), v8/v11 ``[1, 4 + C, N]`` (without),
YOLOX ``[1, N, 5 + C]`` with raw grid offsets (its default export), and end-to-end outputs
``[1, N, 6]`` = ``(x1, y1, x2, y2, score, class)`` (exports with NMS inside, YOLOv10 / YOLO26),
whose boxes are already final.

Boxes are ``(cx, cy, w, h)`` in input pixels as Ultralytics exports them; a head that emits
normalised coordinates (all values <= ~1) is detected and handled too.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import ModelError
from edge_runtime.postprocess.detection import RawDetections, best_class

Arr = npt.NDArray[np.float32]


def _in_pixels(boxes: Arr) -> bool:
    """Ultralytics exports pixels; some converters normalise. Decide on ALL candidates' boxes."""
    return float(np.abs(boxes).max(initial=0.0)) > 2.0


def _cxcywh_to_xyxy(b: Arr, input_size: tuple[int, int], pixels: bool) -> Arr:
    """Centre-size boxes (pixels or normalised) -> normalised xyxy."""
    h, w = input_size
    sx, sy = (1.0 / w, 1.0 / h) if pixels else (1.0, 1.0)
    cx, cy, bw, bh = b[:, 0] * sx, b[:, 1] * sy, b[:, 2] * sx, b[:, 3] * sy
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)


def decode_yolov5(output: Arr, input_size: tuple[int, int], *, score_threshold: float) -> RawDetections:
    """``[1, N, 5 + C]``: score = objectness x class probability."""
    pred = output.reshape(-1, output.shape[-1])
    pixels = _in_pixels(pred[:, :4])
    pred = pred[pred[:, 4] >= score_threshold]  # cheap prefilter: score <= objectness
    if pred.shape[0] == 0:
        return RawDetections.empty()
    scores, class_ids = best_class(pred[:, 5:] * pred[:, 4:5])
    keep = scores >= score_threshold
    boxes = _cxcywh_to_xyxy(pred[keep, :4], input_size, pixels)
    return RawDetections(boxes, scores[keep].astype(np.float32), class_ids[keep])


def decode_yolov8(
    output: Arr, input_size: tuple[int, int], *, score_threshold: float, num_classes: int | None = None
) -> RawDetections:
    """``[1, 4 + C (+ K), N]``: no objectness; class scores are already sigmoid-activated.

    ``num_classes``: C, when K more rows follow the class scores (an Ultralytics pose head's key
    points, a segment head's mask coefficients); they are read past.
    """
    pred = output.reshape(output.shape[-2], output.shape[-1]).T
    if num_classes is not None and pred.shape[1] < 4 + num_classes:
        rows = pred.shape[1]
        raise ModelError(f"a YOLOv8 head of {num_classes} classes has {4 + num_classes} rows, got {rows}")
    scores, class_ids = best_class(pred[:, 4 : None if num_classes is None else 4 + num_classes])
    keep = scores >= score_threshold
    if not keep.any():
        return RawDetections.empty()
    boxes = _cxcywh_to_xyxy(pred[keep, :4], input_size, _in_pixels(pred[:, :4]))
    return RawDetections(boxes, scores[keep].astype(np.float32), class_ids[keep])


def decode_end2end(output: Arr, input_size: tuple[int, int], *, score_threshold: float) -> RawDetections:
    """``[1, N, 6 (+ K)]`` rows ``(x1, y1, x2, y2, score, class)``; unused rows have score 0.

    K more columns (an Ultralytics pose model's key points, a segment model's mask coefficients) are
    read past.
    """
    pred = output.reshape(-1, output.shape[-1])
    pred = pred[pred[:, 4] >= score_threshold]
    if pred.shape[0] == 0:
        return RawDetections.empty()
    boxes = pred[:, :4]
    if _in_pixels(boxes):
        h, w = input_size
        boxes = (boxes / np.array([w, h, w, h], np.float32)).astype(np.float32)
    class_ids = np.rint(pred[:, 5]).astype(np.intp)
    return RawDetections(boxes.astype(np.float32), pred[:, 4].astype(np.float32), class_ids)


YOLOX_STRIDES = (8, 16, 32)


def yolox_grid(input_size: tuple[int, int], strides: tuple[int, ...] = YOLOX_STRIDES) -> Arr:
    """``[N, 3]`` rows ``(x, y, stride)`` of every cell, stride by stride, row-major (YOLOX's order)."""
    h, w = input_size
    parts = []
    for s in strides:
        ys, xs = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
        parts.append(np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, s)], axis=1))
    return np.concatenate(parts).astype(np.float32)


def decode_yolox(output: Arr, input_size: tuple[int, int], *, score_threshold: float) -> RawDetections:
    """``[1, N, 5 + C]``: ``(dx, dy, log w, log h)`` per grid cell, objectness and class scores
    already through a sigmoid; score = objectness x class."""
    pred = output.reshape(-1, output.shape[-1])
    grid = yolox_grid(input_size)
    if grid.shape[0] != pred.shape[0]:
        raise ModelError(
            f"a YOLOX grid of {list(input_size)} has {grid.shape[0]} cells, outputs {pred.shape[0]}"
        )
    keep = np.flatnonzero(pred[:, 4] >= score_threshold)
    if keep.size == 0:
        return RawDetections.empty()
    pred, grid = pred[keep], grid[keep]
    scores, class_ids = best_class(pred[:, 5:] * pred[:, 4:5])
    xy = (pred[:, :2] + grid[:, :2]) * grid[:, 2:3]
    wh = np.exp(np.clip(pred[:, 2:4], -20.0, 20.0)) * grid[:, 2:3]
    boxes = _cxcywh_to_xyxy(np.concatenate([xy, wh], axis=1).astype(np.float32), input_size, True)
    ok = scores >= score_threshold
    return RawDetections(boxes[ok], scores[ok].astype(np.float32), class_ids[ok])


def decode_rtdetr(output: Arr, *, score_threshold: float) -> RawDetections:
    """Ultralytics RT-DETR: one row per query, boxes ``(cx, cy, w, h)`` normalised to the input, then
    ``(score, class)`` (Ultralytics 8.4 exports) or C sigmoid class scores (earlier exports), told
    apart by a sixth column of whole numbers. No NMS: the queries are the detections."""
    pred = output.reshape(-1, output.shape[-1])
    if pred.shape[1] == 6 and np.array_equal(pred[:, 5], np.rint(pred[:, 5])):
        scores, class_ids = pred[:, 4], np.rint(pred[:, 5]).astype(np.intp)
    else:
        scores, class_ids = best_class(pred[:, 4:])
    keep = scores >= score_threshold
    boxes = _cxcywh_to_xyxy(pred[keep, :4], (1, 1), False)
    return RawDetections(boxes, scores[keep].astype(np.float32), class_ids[keep])
