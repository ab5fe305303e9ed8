"""Deterministic generated videos with known ground truth: a person crop (from the astronaut
photo) pasted on a still background, moving along a known path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from tests.daemon import ROOT

DATA = ROOT / "tests" / "data"
Box = tuple[float, float, float, float]


def background(width: int = 480, height: int = 270) -> npt.NDArray[np.uint8]:
    """A still scene with texture (the rocket photo, blurred and dimmed: no person in it)."""
    photo = cv2.imread(str(DATA / "rocket.jpg"))
    return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)  # type: ignore[no-any-return]


def person(height: int) -> npt.NDArray[np.uint8]:
    """The astronaut photo's person (head and shoulders), ``height`` pixels high."""
    photo = cv2.imread(str(DATA / "astronaut.jpg"))
    crop = photo[0:512, 60:400]
    width = round(crop.shape[1] * height / crop.shape[0])
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Scene:
    """What each frame shows: the pasted person's box (normalised), None when it is absent."""

    frames: int
    boxes: list[Box | None]
    fps: float = 15.0


def render(
    path: Path,
    frames: int,
    where: Callable[[int], tuple[float, float] | None],
    *,
    size: tuple[int, int] = (480, 270),
    person_h: int = 150,
    fps: float = 15.0,
    noise: int = 0,
) -> Scene:
    """Write a video of ``frames`` frames: the person's top-left corner at ``where(i)`` (normalised),
    or no person when it returns None. ``noise``: uniform sensor noise amplitude (seeded)."""
    back, figure = background(*size), person(person_h)
    rng = np.random.default_rng(7)
    fh, fw = figure.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    boxes: list[Box | None] = []
    for i in range(frames):
        frame = back.copy()
        spot = where(i)
        if spot is None:
            boxes.append(None)
        else:
            x, y = round(spot[0] * size[0]), round(spot[1] * size[1])
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + fw, size[0]), min(y + fh, size[1])
            frame[y0:y1, x0:x1] = figure[y0 - y : y1 - y, x0 - x : x1 - x]
            boxes.append((x0 / size[0], y0 / size[1], x1 / size[0], y1 / size[1]))
        if noise:
            frame = cv2.add(frame, rng.integers(0, noise, frame.shape, dtype=np.uint8))
        writer.write(frame)
    writer.release()
    return Scene(frames, boxes, fps)


def frames_of(path: Path) -> list[npt.NDArray[np.uint8]]:
    """Every decoded frame of a video."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def linear(
    start: tuple[float, float], end: tuple[float, float], first: int, last: int
) -> Callable[[int], tuple[float, float] | None]:
    """A path from ``start`` at frame ``first`` to ``end`` at ``last``; absent outside."""

    def where(i: int) -> tuple[float, float] | None:
        if not first <= i <= last:
            return None
        t = (i - first) / max(1, last - first)
        return (start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))

    return where


def still_then(bursts: Sequence[tuple[int, int]], frames: int) -> Callable[[int], tuple[float, float] | None]:
    """Absent except during each (first, last) burst, when the person walks left to right."""

    def where(i: int) -> tuple[float, float] | None:
        for first, last in bursts:
            if first <= i <= last:
                return linear((0.05, 0.3), (0.6, 0.3), first, last)(i)
        return None

    return where
