"""Frozen value objects that cross stage boundaries (a leaf module).

Box convention, everywhere in the package: ``(x1, y1, x2, y2)`` normalised to ``0..1`` of the
ORIGINAL image's width and height, top-left origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Layout = Literal["NHWC", "NCHW", "other"]


@dataclass(frozen=True, slots=True)
class Quantization:
    """Affine quantisation of a tensor: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """What a backend says about one input or output tensor.

    ``shape`` uses -1 for dynamic dimensions. ``layout`` is only meaningful for 4-D image inputs.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]
    layout: Layout = "other"
    quantization: Quantization | None = None

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of a 4-D image tensor, or None when unknown/dynamic."""
        if len(self.shape) != 4 or self.layout == "other":
            return None
        h, w = (self.shape[1], self.shape[2]) if self.layout == "NHWC" else self.shape[2:4]
        return (h, w) if h > 0 and w > 0 else None


@dataclass(frozen=True, slots=True)
class BBox:
    """Normalised xyxy box in the original image (see module docstring)."""

    x1: float
    y1: float
    x2: float
    y2: float

    def as_list(self, ndigits: int = 4) -> list[float]:
        """The box as ``[x1, y1, x2, y2]`` rounded for JSON."""
        return [round(v, ndigits) for v in (self.x1, self.y1, self.x2, self.y2)]


@dataclass(frozen=True, slots=True)
class Classification:
    """One class of a classification result."""

    class_id: int
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object."""

    class_id: int
    label: str
    score: float
    box: BBox


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image. ``image`` is BGR uint8 (as OpenCV decodes); ``ts`` is wall-clock time.

    ``capture_ms`` is how long the source's read call took (decoding a file's frame; for a live
    stream mostly the wait for the next frame). ``available`` is ``time.perf_counter()`` when the
    frame was decoded and handed over: the start of its end-to-end latency (0: not stamped).
    """

    index: int
    ts: float
    image: np.ndarray
    capture_ms: float = 0.0
    available: float = 0.0

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Window:
    """A window of sensor samples, handed from a sensor source to its pipeline.

    ``data`` is float32 ``[samples, channels]`` in the source's channel order (already scaled by
    the source's per-channel normalisation). ``start_ts``/``end_ts`` are the wall-clock times of
    the first and last sample; ``first_sample`` is the stream position of the first sample (window
    ``index`` starts at ``index * hop``).
    """

    index: int
    start_ts: float
    end_ts: float
    data: np.ndarray
    first_sample: int
    capture_ms: float = 0.0
    available: float = 0.0  # time.perf_counter() when the window was complete (see Frame)

    @property
    def samples(self) -> int:
        """Samples in the window."""
        return int(self.data.shape[0])
