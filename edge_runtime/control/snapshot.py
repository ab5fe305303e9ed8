"""A pipeline's latest frame as a JPEG small enough for one MQTT answer."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from edge_runtime.errors import ControlError

MAX_JPEG_BYTES = 512 * 1024  # one answer; quality is lowered until the image fits


def encode(image: np.ndarray, *, max_height: int, quality: int) -> dict[str, Any]:
    """``image`` (BGR or grey) scaled down to at most ``max_height`` rows, JPEG, base64.

    The result: ``{"format": "jpeg", "width", "height", "bytes", "jpeg": base64}``.
    """
    import cv2

    height, width = image.shape[:2]
    if height > max_height:
        width, height = max(1, round(width * max_height / height)), max_height
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    while True:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ControlError("the frame could not be encoded as JPEG")
        if len(buf) <= MAX_JPEG_BYTES or quality <= 10:
            break
        quality = max(10, quality - 20)
    if len(buf) > MAX_JPEG_BYTES:
        raise ControlError(f"the snapshot is {len(buf)} bytes even at quality 10; ask a smaller max_height")
    data = buf.tobytes()
    return {
        "format": "jpeg",
        "width": width,
        "height": height,
        "quality": quality,
        "bytes": len(data),
        "jpeg": base64.b64encode(data).decode(),
    }
