"""Small pieces shared by the commands."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_runtime.errors import ImageError
from edge_runtime.inference import BackendOptions


def backend_options(args: argparse.Namespace) -> BackendOptions:
    """BackendOptions from the shared model flags."""
    return BackendOptions(
        accelerator=args.accelerator,
        threads=args.threads,
        allow_cpu_fallback=False if args.no_fallback else None,
        device=args.device,
        delegate_path=args.delegate,
        exact_int8=args.exact_int8,
    )


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """A BGR image, or ImageError naming the file."""
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f"{path}: not an image OpenCV can decode")
    return np.asarray(image, dtype=np.uint8)
