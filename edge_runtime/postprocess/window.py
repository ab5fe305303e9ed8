"""Outputs of sensor-window models -> anomaly scores and regression values (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import ModelError

Arr = npt.NDArray[np.float32]


def anomaly_score(family: str, outputs: Sequence[Arr], window: Arr) -> float:
    """The window's anomaly score.

    ``anomaly_score``: the model's single output value. ``reconstruction``: the mean squared error
    between ``window`` (the standardised input tensor) and the model's output (its reconstruction).
    """
    out = outputs[0]
    if family == "anomaly_score":
        return float(out.reshape(-1)[0])
    if family == "reconstruction":
        if out.size != window.size:
            raise ModelError(f"reconstruction has {out.size} values, the input {window.size}")
        diff = out.reshape(-1).astype(np.float64) - window.reshape(-1).astype(np.float64)
        return float(np.mean(diff * diff))
    raise ModelError(f"family {family!r} gives no anomaly score")


def regression_values(outputs: Sequence[Arr]) -> tuple[float, ...]:
    """Every value of the single output, in order."""
    return tuple(float(v) for v in outputs[0].reshape(-1))
