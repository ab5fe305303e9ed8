"""SSD decoding: raw box encodings + anchors (TF Object Detection API conventions).

Anchors follow ``ssd_anchor_generator``: per layer a square grid of ``feature_map_size`` cells
(row-major, y outer), each with the same list of boxes; anchors and encodings are in
``(y, x, h, w)`` order, normalised to the model input.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from edge_runtime.postprocess.detection import RawDetections, best_class


def _layer_boxes(
    layer: int,
    scales: list[float],
    aspect_ratios: tuple[float, ...],
    reduce_lowest: bool,
    interpolated_ratio: float,
) -> list[tuple[float, float]]:
    """(scale, aspect ratio) pairs of one layer, in the generator's order."""
    if layer == 0 and reduce_lowest:
        return [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
    pairs = [(scales[layer], ar) for ar in aspect_ratios]
    if interpolated_ratio > 0:
        pairs.append((math.sqrt(scales[layer] * scales[layer + 1]), interpolated_ratio))
    return pairs


@lru_cache(maxsize=8)
def ssd_anchors(
    feature_map_sizes: tuple[int, ...],
    *,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333),
    reduce_boxes_in_lowest_layer: bool = True,
    interpolated_scale_aspect_ratio: float = 1.0,
) -> npt.NDArray[np.float32]:
    """Anchors ``[N, 4]`` as ``(y_center, x_center, h, w)``, normalised."""
    n = len(feature_map_sizes)
    scales = [min_scale + (max_scale - min_scale) * i / max(n - 1, 1) for i in range(n)] + [1.0]
    out = []
    for layer, size in enumerate(feature_map_sizes):
        pairs = _layer_boxes(
            layer, scales, aspect_ratios, reduce_boxes_in_lowest_layer, interpolated_scale_aspect_ratio
        )
        hw = np.array([(s / math.sqrt(ar), s * math.sqrt(ar)) for s, ar in pairs], np.float32)
        centers = (np.arange(size, dtype=np.float32) + 0.5) / size
        cy, cx = np.meshgrid(centers, centers, indexing="ij")
        grid = np.stack([cy.ravel(), cx.ravel()], axis=1)
        layer_anchors = np.concatenate(
            [np.repeat(grid, len(pairs), axis=0), np.tile(hw, (size * size, 1))], axis=1
        )
        out.append(layer_anchors)
    anchors = np.concatenate(out).astype(np.float32)
    anchors.setflags(write=False)
    return anchors


def decode_boxes(
    encodings: npt.NDArray[np.float32],
    anchors: npt.NDArray[np.float32],
    box_scale: tuple[float, float, float, float],
) -> npt.NDArray[np.float32]:
    """``(ty, tx, th, tw)`` encodings -> normalised xyxy boxes."""
    t = encodings.reshape(-1, 4)
    ya, xa, ha, wa = anchors.T
    yc = t[:, 0] / box_scale[0] * ha + ya
    xc = t[:, 1] / box_scale[1] * wa + xa
    h = np.exp(t[:, 2] / box_scale[2]) * ha
    w = np.exp(t[:, 3] / box_scale[3]) * wa
    return np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1).astype(np.float32)


def decode_ssd(
    encodings: npt.NDArray[np.float32],
    class_scores: npt.NDArray[np.float32],
    anchors: npt.NDArray[np.float32],
    *,
    box_scale: tuple[float, float, float, float],
    label_offset: int,
    score_threshold: float,
) -> RawDetections:
    """Candidates above ``score_threshold`` (scores already activated), classes without background."""
    scores = class_scores.reshape(anchors.shape[0], -1)[:, label_offset:]
    best, class_ids = best_class(scores)
    keep = np.flatnonzero(best >= score_threshold)
    if keep.size == 0:
        return RawDetections.empty()
    boxes = decode_boxes(encodings.reshape(-1, 4)[keep], anchors[keep], box_scale)
    return RawDetections(boxes, best[keep].astype(np.float32), class_ids[keep])
