"""Classification: scores -> top-k classes, with softmax when the outputs are logits."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from edge_runtime.postprocess.labels import label_for
from edge_runtime.types import Classification


def softmax(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Numerically stable softmax over the last axis."""
    z = np.asarray(x, dtype=np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    out: npt.NDArray[np.float32] = z
    return out


def looks_like_probabilities(x: npt.NDArray[np.floating]) -> bool:
    """True when values are in [0, 1] and sum to ~1 (a softmax output)."""
    return bool(x.min() >= 0.0 and x.max() <= 1.0 and abs(float(x.sum()) - 1.0) < 0.02)


def classify(
    scores: npt.NDArray[np.floating],
    labels: list[str] | None,
    *,
    top_k: int = 5,
    apply_softmax: Literal["auto"] | bool = "auto",
    score_threshold: float = 0.0,
    label_offset: int = 0,
) -> list[Classification]:
    """Top-k classes of a ``[1, C]`` (or ``[C]``) score tensor, best first.

    ``label_offset`` columns at the start (a background class) are dropped before ranking.
    """
    full = np.asarray(scores, dtype=np.float32).reshape(-1)
    s = full[label_offset:]
    k = min(top_k, s.size)
    # Softmax keeps the order, so rank first and normalise only the k winners.
    idx = np.argpartition(s, s.size - k)[s.size - k :]
    # best first; exact ties (common with int8 outputs) go to the lower class id, so every
    # runtime ranks tied classes the same way
    idx = idx[np.lexsort((idx, -s[idx]))]
    top = s[idx]
    if apply_softmax is True or (apply_softmax == "auto" and not looks_like_probabilities(full)):
        peak = full.max()
        top = np.exp(top - peak) / np.exp(full - peak).sum()
    return [
        Classification(int(i), label_for(labels, int(i)), float(p))
        for i, p in zip(idx.tolist(), top.tolist(), strict=True)
        if p >= score_threshold
    ]
