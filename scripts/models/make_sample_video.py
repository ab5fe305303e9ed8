"""Make the deterministic, licence-clean sample video the demo config uses.

    python scripts/models/make_sample_video.py [--out samples/demo.mp4] [--fps 15] [--seconds-per-image 2]

Slow pans and zooms over the public-domain / CC0 test photos in tests/data (scikit-image's
astronaut, chelsea, coffee, rocket): the person detector sees a person in the astronaut part, the
classifier sees a cat, an espresso, a rocket. Pure OpenCV, no randomness: the same frames every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ["astronaut", "chelsea", "coffee", "rocket"]


def view(image: np.ndarray, t: float, size: tuple[int, int]) -> np.ndarray:
    """The image at time t in [0, 1]: zoom from 100% to 80% while panning left to right."""
    w, h = size
    ih, iw = image.shape[:2]
    scale = max(w / iw, h / ih)
    resized = cv2.resize(image, (round(iw * scale), round(ih * scale)), interpolation=cv2.INTER_AREA)
    zoom = 1.0 - 0.2 * t
    cw, ch = round(w * zoom / 1.0), round(h * zoom / 1.0)
    cw, ch = min(cw, resized.shape[1]), min(ch, resized.shape[0])
    x0 = round((resized.shape[1] - cw) * t)
    y0 = round((resized.shape[0] - ch) * 0.5)
    return cv2.resize(resized[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def main() -> None:
    """Write the video and print its frame count."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "samples" / "demo.mp4"))
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--seconds-per-image", type=float, default=2.0)
    ap.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = (args.size[0], args.size[1])
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), args.fps, size)
    if not writer.isOpened():
        raise SystemExit(f"cannot write {out} (no mp4v encoder in this OpenCV?)")
    per_image = max(1, round(args.fps * args.seconds_per_image))
    frames = 0
    for name in IMAGES:
        image = cv2.imread(str(ROOT / "tests" / "data" / f"{name}.jpg"))
        for i in range(per_image):
            writer.write(view(image, i / max(per_image - 1, 1), size))
            frames += 1
    writer.release()
    print(f"wrote {out}: {frames} frames, {size[0]}x{size[1]} at {args.fps:g} fps")


if __name__ == "__main__":
    main()
