"""MediaPipe SSD heads (BlazeFace and kin): anchors of ``SsdAnchorsCalculator``, boxes as
``TfLiteTensorsToDetectionsCalculator`` decodes them.

The model gives ``regressors [1, N, 4 + 2K]`` — ``(x, y, w, h)`` then K key points ``(x, y)``, in
input pixels relative to the anchor centre — and ``classificators [1, N, C]`` logits. Anchors have
a fixed size (1x1), so only their centres matter. Key points are read past and not reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from edge_runtime.postprocess.detection import RawDetections, best_class

Arr = npt.NDArray[np.float32]

# The anchor options MediaPipe's face detectors ship with: (strides, interpolated_scale_aspect_ratio).
# short range / front camera 128x128 and back camera 256x256: 896 anchors; full range 192x192: 2304.
KNOWN_OPTIONS: tuple[tuple[tuple[int, ...], float], ...] = (
    ((8, 16, 16, 16), 1.0),
    ((16, 32, 32, 32), 1.0),
    ((4,), 0.0),
)


@lru_cache(maxsize=8)
def mediapipe_anchors(
    input_size: tuple[int, int],
    strides: tuple[int, ...],
    *,
    aspect_ratios: int = 1,
    interpolated_scale_aspect_ratio: float = 1.0,
    anchor_offset: float = 0.5,
) -> Arr:
    """Anchor centres ``[N, 2]`` as ``(x, y)``, normalised, in the calculator's order.

    Consecutive layers with the same stride share one grid: each of them adds ``aspect_ratios``
    anchors per cell, plus one when ``interpolated_scale_aspect_ratio`` is 1 (as MediaPipe does).
    """
    h, w = input_size
    out: list[Arr] = []
    layer = 0
    while layer < len(strides):
        last, per_cell = layer, 0
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += aspect_ratios + (1 if interpolated_scale_aspect_ratio == 1.0 else 0)
            last += 1
        fh, fw = -(-h // strides[layer]), -(-w // strides[layer])  # ceil, as the calculator
        ys = (np.arange(fh, dtype=np.float32) + anchor_offset) / fh
        xs = (np.arange(fw, dtype=np.float32) + anchor_offset) / fw
        cy, cx = np.meshgrid(ys, xs, indexing="ij")
        grid = np.stack([cx.ravel(), cy.ravel()], axis=1)
        out.append(np.repeat(grid, per_cell, axis=0))
        layer = last
    anchors = np.concatenate(out).astype(np.float32)
    anchors.setflags(write=False)
    return anchors


def known_anchors(input_size: tuple[int, int], count: int) -> Arr | None:
    """The anchors of a MediaPipe face-detector configuration that gives ``count`` anchors."""
    for strides, interpolated in KNOWN_OPTIONS:
        anchors = mediapipe_anchors(input_size, strides, interpolated_scale_aspect_ratio=interpolated)
        if anchors.shape[0] == count:
            return anchors
    return None


def split_outputs(outputs: Sequence[Arr], names: Sequence[str]) -> tuple[Arr, Arr]:
    """(regressors, classificators): by name when the names say, else the wider tensor is the boxes."""
    a, b = outputs
    if len(names) == 2:
        na, nb = names[0].lower(), names[1].lower()
        if "classif" in na or "regress" in nb:
            return b, a
        if "regress" in na or "classif" in nb:
            return a, b
    return (a, b) if a.shape[-1] >= b.shape[-1] else (b, a)


def decode_mediapipe(
    regressors: Arr,
    scores: Arr,
    anchors: Arr,
    input_size: tuple[int, int],
    *,
    score_threshold: float,
) -> RawDetections:
    """Candidates above ``score_threshold`` (scores already activated); normalised xyxy boxes."""
    n = anchors.shape[0]
    best, class_ids = best_class(scores.reshape(n, -1))
    keep = np.flatnonzero(best >= score_threshold)
    if keep.size == 0:
        return RawDetections.empty()
    h, w = input_size
    r = regressors.reshape(n, -1)[keep, :4] / np.array([w, h, w, h], np.float32)
    cx = r[:, 0] + anchors[keep, 0]
    cy = r[:, 1] + anchors[keep, 1]
    boxes = np.stack([cx - r[:, 2] / 2, cy - r[:, 3] / 2, cx + r[:, 2] / 2, cy + r[:, 3] / 2], axis=1)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return RawDetections(
        boxes[valid].astype(np.float32), best[keep][valid].astype(np.float32), class_ids[keep][valid]
    )
