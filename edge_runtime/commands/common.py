"""Small pieces shared by the commands."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_runtime.errors import ImageError
from edge_runtime.inference import BackendOptions


def options_from_flags(args: argparse.Namespace) -> BackendOptions:
    """BackendOptions from the shared model flags (the daemon's: model.backend_options)."""
    return BackendOptions(
        accelerator=args.accelerator,
        threads=args.threads,
        allow_cpu_fallback=False if args.no_fallback else None,
        device=args.device,
        delegate_path=args.delegate,
        exact_int8=True if args.exact_int8 else None,  # unset: exact where the CPU needs it
    )


VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".h264"}
)
# ISO BMFF brands of still images (HEIF, AVIF): an "ftyp" box alone does not make a video
_STILL_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif")
# a JPEG marker: 0xFF and a code that is not a stuffed 0x00, a restart marker or another 0xFF
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """A BGR image, or ImageError naming the file (and saying so when it is a video).

    A JPEG cut short (a partial copy or download) is decoded as far as it goes, with a warning
    on stderr: OpenCV decodes such a file silently, or, from 5.1 on, not at all.
    """
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
    data = path.read_bytes()
    if jpeg_truncated(data):
        print(
            f"edge-runtime: warning: {path}: truncated JPEG (no end-of-image marker): "
            "the picture is incomplete",
            file=sys.stderr,
        )
        data += b"\xff\xd9"  # the marker the decoder waits for: it decodes what is there
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
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


def jpeg_truncated(data: bytes) -> bool:
    """A JPEG whose data ends before its end-of-image marker (0xFFD9).

    Walks the marker segments (so a thumbnail's marker inside a segment does not count, nor data
    appended after the end, as in motion photos), through the entropy-coded data of each scan.
    """
    if data[:2] != b"\xff\xd8":
        return False
    i = 2
    while i + 1 < len(data):
        if data[i] != 0xFF:
            return False  # not a marker where one must be: corrupt, not truncated
        code = data[i + 1]
        if code == 0xFF:  # fill byte before a marker
            i += 1
        elif code == 0xD9:
            return False
        elif 0xD0 <= code <= 0xD7 or code == 0x01:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
            if code == 0xDA:  # start of scan: entropy-coded data up to the next marker
                marker = _JPEG_MARKER.search(data, i)
                if marker is None:
                    return True
                i = marker.start()
    return True
