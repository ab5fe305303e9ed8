"""Pixels -> tensor values: colour order, normalisation, layout, (de)quantisation."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_runtime.types import Quantization, TensorSpec

_INT_RANGES = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.int16): (-32768, 32767),
}


def normalise(
    image: npt.NDArray[np.uint8], mean: tuple[float, ...], std: tuple[float, ...]
) -> npt.NDArray[np.float32]:
    """``(pixel - mean) / std`` per channel, as float32."""
    x = image.astype(np.float32)
    x -= np.asarray(mean, dtype=np.float32)
    x *= 1.0 / np.asarray(std, dtype=np.float32)
    return x


def quantize(
    x: npt.NDArray[np.floating], q: Quantization, dtype: np.dtype[np.generic]
) -> npt.NDArray[np.generic]:
    """Real values -> integers of ``dtype``: ``round(x / scale) + zero_point``, saturated."""
    lo, hi = _INT_RANGES[np.dtype(dtype)]
    v = np.rint(x / q.scale) + q.zero_point
    out: npt.NDArray[np.generic] = np.clip(v, lo, hi).astype(dtype)
    return out


def dequantize(x: npt.NDArray[np.generic], q: Quantization | None) -> npt.NDArray[np.float32]:
    """Integers -> real values; float tensors are returned as float32."""
    if q is None or not np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32, copy=False)
    out: npt.NDArray[np.float32] = (x.astype(np.float32) - q.zero_point) * np.float32(q.scale)
    return out


def to_input(
    image: npt.NDArray[np.uint8],
    spec: TensorSpec,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> npt.NDArray[np.generic]:
    """A resized HxWx3 image (model colour order) -> a batch of one in the input's layout/dtype.

    Float inputs get ``(x - mean) / std``; integer inputs get the same normalisation and are then
    quantised with the tensor's own scale and zero point, so one model.yaml serves a float ONNX
    model and a full-int8 TFLite model alike. An integer input without quantisation parameters
    takes raw pixels.
    """
    dtype = spec.dtype
    if np.issubdtype(dtype, np.integer) and spec.quantization is None:
        x: npt.NDArray[np.generic] = image.astype(dtype, copy=False)
    else:
        f = normalise(image, mean, std)
        if np.issubdtype(dtype, np.integer):
            assert spec.quantization is not None
            x = quantize(f, spec.quantization, dtype)
        else:
            x = f.astype(dtype, copy=False)
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[np.newaxis])
