"""Resizing with a record of how to map model-input coordinates back to the original image.

All functions are pure: they take an HxWx3 uint8 image and return the resized image plus a
:class:`Transform`. A box predicted in model-input coordinates goes back to the ORIGINAL image
with :meth:`Transform.to_original`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

INTERPOLATION = {
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC,
}

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Transform:
    """Maps input-tensor pixels to original pixels: ``orig = (inp - pad) / scale + crop``."""

    src_width: int
    src_height: int
    dst_width: int
    dst_height: int
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0
    crop_x: float = 0.0
    crop_y: float = 0.0

    def to_original(self, boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Normalised xyxy boxes of the model input -> normalised xyxy in the original image."""
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        out = np.empty_like(b)
        out[:, 0::2] = (b[:, 0::2] * self.dst_width - self.pad_x) / self.scale_x + self.crop_x
        out[:, 1::2] = (b[:, 1::2] * self.dst_height - self.pad_y) / self.scale_y + self.crop_y
        out[:, 0::2] /= self.src_width
        out[:, 1::2] /= self.src_height
        return np.clip(out, 0.0, 1.0, out=out)


def _antialias_weights(src: int, dst: int) -> npt.NDArray[np.float32]:
    """``[dst, src]`` weights of Pillow's bilinear resampling: a triangle filter widened by the
    downscale factor (what torchvision's ``Resize`` does to a PIL image, as Ultralytics'
    classify_transforms use it)."""
    scale = src / dst
    support = max(scale, 1.0)
    centre = (np.arange(dst, dtype=np.float64) + 0.5) * scale
    offsets = np.arange(src, dtype=np.float64)[None, :] + 0.5 - centre[:, None]
    weights = np.clip(1.0 - np.abs(offsets / support), 0.0, None)
    lo = np.floor(centre - support + 0.5).clip(0, None)  # Pillow's window of source pixels
    hi = np.floor(centre + support + 0.5).clip(None, src)
    cols = np.arange(src)[None, :]
    weights *= (cols >= lo[:, None]) & (cols < hi[:, None])
    normalised: npt.NDArray[np.float32] = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    return normalised


@functools.lru_cache(maxsize=16)
def _antialias_taps(src: int, dst: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """:func:`_antialias_weights` as ``[dst, K]`` source indices and weights: each output pixel
    reads only the few source pixels its filter covers (K ~ 2x the downscale factor). Cached: a
    stream's frames all have one size (read-only arrays)."""
    weights = _antialias_weights(src, dst)
    nonzero = weights > 0
    first = nonzero.argmax(axis=1)
    taps = int((src - nonzero[:, ::-1].argmax(axis=1) - first).max())
    index = np.minimum(first[:, None] + np.arange(taps)[None, :], src - 1)
    picked = np.take_along_axis(weights, index, axis=1)
    picked[first[:, None] + np.arange(taps)[None, :] >= src] = 0.0  # past the edge: no weight
    weights32 = picked.astype(np.float32)
    index.flags.writeable = weights32.flags.writeable = False
    return index, weights32


def _filter_axis(
    img: npt.NDArray[np.float32], src: int, dst: int, window: slice, axis: int
) -> npt.NDArray[np.float32]:
    """One Pillow pass along ``axis`` (1: columns, 0: rows), rounded to uint8 values as Pillow does.

    Blocks of 32 output pixels, each a small matrix product over the source pixels the block's
    filters cover: a 1080p frame to 224 takes milliseconds, not the seconds of one dense product.
    """
    index, weights = _antialias_taps(src, dst)
    index, weights = index[window], weights[window]
    lines = np.moveaxis(img, axis, -1)
    flat = lines.reshape(-1, src)
    out = np.empty((flat.shape[0], index.shape[0]), np.float32)
    for b0 in range(0, index.shape[0], 32):
        idx, wts = index[b0 : b0 + 32], weights[b0 : b0 + 32]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        block = np.zeros((hi - lo, idx.shape[0]), np.float32)
        np.add.at(block, (idx - lo, np.arange(idx.shape[0])[:, None]), wts)
        out[:, b0 : b0 + idx.shape[0]] = flat[:, lo:hi] @ block
    result = np.moveaxis(out.reshape(*lines.shape[:-1], index.shape[0]), -1, axis)
    return np.rint(result).clip(0, 255)


def _resize_antialias(
    image: Image, size_wh: tuple[int, int], window: tuple[int, int, int, int] | None = None
) -> Image:
    """Pillow's bilinear resize: horizontal pass, then vertical, each rounded to uint8 as Pillow does.

    ``window`` = (left, top, width, height): only that part of the resized image (a crop of it).
    """
    h, w = image.shape[:2]
    dw, dh = size_wh
    x0, y0, cw, ch = window or (0, 0, dw, dh)
    img = image.astype(np.float32)
    if (dw, cw) != (w, w):
        img = _filter_axis(img, w, dw, slice(x0, x0 + cw), axis=1)
    if (dh, ch) != (h, h):
        img = _filter_axis(img, h, dh, slice(y0, y0 + ch), axis=0)
    return np.ascontiguousarray(img, dtype=np.uint8)


def _resize(image: Image, size_wh: tuple[int, int], interpolation: str) -> Image:
    if interpolation == "antialias":
        return _resize_antialias(image, size_wh)
    return np.asarray(cv2.resize(image, size_wh, interpolation=INTERPOLATION[interpolation]), dtype=np.uint8)


def stretch(image: Image, size: tuple[int, int], interpolation: str = "linear") -> tuple[Image, Transform]:
    """Resize to ``size`` = (height, width), ignoring the aspect ratio."""
    h, w = image.shape[:2]
    dh, dw = size
    out = _resize(image, (dw, dh), interpolation)
    return out, Transform(w, h, dw, dh, scale_x=dw / w, scale_y=dh / h)


def center_crop(
    image: Image, size: tuple[int, int], fraction: float = 1.0, interpolation: str = "linear"
) -> tuple[Image, Transform]:
    """Crop the centre with the target's aspect ratio (``fraction`` of the fitting side), resize."""
    h, w = image.shape[:2]
    dh, dw = size
    if interpolation == "antialias" and fraction == 1.0:
        return _resize_then_crop(image, size)
    side = min(w / dw, h / dh) * fraction  # source pixels per target pixel
    cw, ch = max(1, round(dw * side)), max(1, round(dh * side))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    out = _resize(crop, (dw, dh), interpolation)
    return out, Transform(w, h, dw, dh, scale_x=dw / cw, scale_y=dh / ch, crop_x=x0, crop_y=y0)


def _resize_then_crop(image: Image, size: tuple[int, int]) -> tuple[Image, Transform]:
    """torchvision's ``Resize(shorter side)`` then ``CenterCrop``, as Ultralytics classifies: the
    crop is taken from the resized image, so its edges are filtered with the pixels around them."""
    h, w = image.shape[:2]
    dh, dw = size
    s = max(dw / w, dh / h)
    rw, rh = max(dw, int(w * s)), max(dh, int(h * s))
    left, top = round((rw - dw) / 2), round((rh - dh) / 2)
    out = _resize_antialias(image, (rw, rh), (left, top, dw, dh))
    sx, sy = rw / w, rh / h
    return out, Transform(w, h, dw, dh, scale_x=sx, scale_y=sy, crop_x=left / sx, crop_y=top / sy)


def stride_rectangle(image_hw: tuple[int, int], size: tuple[int, int], stride: int) -> tuple[int, int]:
    """The smallest ``(height, width)`` of multiples of ``stride`` that holds the image letterboxed
    into ``size``, as Ultralytics sizes a dynamic-shape model's input (a 640x480 image at 320 gives
    320x256 instead of 320x320: a fifth less work for the same pixels of the image).
    """
    h, w = image_hw
    dh, dw = size
    scale = min(dw / w, dh / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return nh + (dh - nh) % stride, nw + (dw - nw) % stride


def letterbox(
    image: Image,
    size: tuple[int, int],
    pad_value: int = 114,
    interpolation: str = "linear",
    centre: bool = True,
) -> tuple[Image, Transform]:
    """Resize keeping the aspect ratio and pad the borders evenly with ``pad_value`` (or only the
    right and bottom ones, ``centre=False``, as YOLOX does)."""
    h, w = image.shape[:2]
    dh, dw = size
    scale = min(dw / w, dh / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = _resize(image, (nw, nh), interpolation)
    left, top = ((dw - nw) // 2, (dh - nh) // 2) if centre else (0, 0)
    out = np.full((dh, dw, image.shape[2]), pad_value, dtype=np.uint8)
    out[top : top + nh, left : left + nw] = resized
    return out, Transform(w, h, dw, dh, scale_x=nw / w, scale_y=nh / h, pad_x=left, pad_y=top)
