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


VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".h264"}
)
# ISO BMFF brands of still images (HEIF, AVIF): an "ftyp" box alone does not make a video
_STILL_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif")


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """A BGR image, or ImageError naming the file (and saying so when it is a video)."""
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    with path.open("rb") as fh:
        head = fh.read(512)
    if is_video(path, head):
        raise ImageError(
            f"{path}: a video file, not an image; to run a model on a video, use `edge-runtime run "
            f"CONFIG` with a pipeline whose source is {{type: video, path: {path.resolve()}}} "
            "(as in configs/demo.yaml)"
        )
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f"{path}: not an image OpenCV can decode")
    return np.asarray(image, dtype=np.uint8)


def is_video(path: Path, head: bytes) -> bool:
    """A video file by its suffix or by the first bytes (``head``) of its container."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return True
    if head[4:8] == b"ftyp":  # MP4, MOV, 3GP
        return head[8:12] not in _STILL_BRANDS
    return (
        (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head[:4] == b"\x1a\x45\xdf\xa3"  # Matroska, WebM
        or head[:3] == b"FLV"
        or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")  # MPEG program or video stream
        or (len(head) > 376 and head[0] == head[188] == head[376] == 0x47)  # MPEG transport stream
    )
