"""A ByteTrack-like multi-object tracker: IoU matching against constant-velocity Kalman predictions.

Each update: every track predicts where its box is now; confident detections (``high_score``)
match tracks first, by the largest overlap, same label only; less confident ones (``low_score``)
may then keep the remaining tracks alive (ByteTrack's second association: an object half hidden
scores lower but is still the same object); confident detections left over start new tracks. A
track is confirmed after ``min_hits`` matches, and ends after ``max_misses`` updates in a row
without a match (or ``max_age_s`` without one). Time steps are frame indexes, so a model that
runs on every third frame, or only on motion, predicts as far as the frames it skipped.

Boxes are normalised xyxy (types.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Box = tuple[float, float, float, float]

# Process and measurement noise of the filter, relative to the box height (SORT/ByteTrack's choice:
# noise grows with the size of the object on the image).
_POS_NOISE, _VEL_NOISE, _MEAS_NOISE = 1 / 20, 1 / 160, 1 / 20


class KalmanBox:
    """Constant-velocity Kalman filter over ``(cx, cy, w, h)`` and their velocities per frame."""

    def __init__(self, box: Box) -> None:
        self.x = np.zeros(8)
        self.x[:4] = _center(box)
        h = max(self.x[3], 1e-3)
        self.p = np.diag(np.square([2 * _POS_NOISE * h] * 4 + [10 * _VEL_NOISE * h] * 4))

    def predict(self, dt: float) -> Box:
        """Move the state ``dt`` frames ahead; the predicted box."""
        f = np.eye(8)
        f[range(4), range(4, 8)] = dt
        h = max(self.x[3], 1e-3)
        q = np.diag(np.square([_POS_NOISE * h] * 4 + [_VEL_NOISE * h] * 4)) * max(dt, 1.0)
        self.x = f @ self.x
        self.x[2:4] = np.maximum(self.x[2:4], 1e-4)
        self.p = f @ self.p @ f.T + q
        return self.box

    def correct(self, box: Box) -> None:
        """Fold in a measured box."""
        h = max(self.x[3], 1e-3)
        r = np.diag(np.square([_MEAS_NOISE * h] * 4))
        s = self.p[:4, :4] + r
        gain = self.p[:, :4] @ np.linalg.inv(s)
        self.x = self.x + gain @ (np.asarray(_center(box)) - self.x[:4])
        self.p = self.p - gain @ self.p[:4, :]

    @property
    def box(self) -> Box:
        """The current estimate as xyxy."""
        cx, cy, w, h = (float(v) for v in self.x[:4])
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


@dataclass(slots=True)
class Track:
    """One tracked object; ``box`` is the last matched (measured) box."""

    id: int
    label: str
    box: Box
    score: float
    first_index: int
    first_ts: float
    last_index: int
    last_ts: float
    filter: KalmanBox
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    predicted: Box = field(default=(0.0, 0.0, 0.0, 0.0))


@dataclass(frozen=True, slots=True)
class Observed:
    """A detection as the tracker takes it."""

    label: str
    score: float
    box: Box


class Tracker:
    """Tracks across updates; see the module docstring for the rules and the settings."""

    def __init__(
        self,
        *,
        high_score: float = 0.5,
        low_score: float = 0.1,
        match_iou: float = 0.2,
        min_hits: int = 2,
        max_misses: int = 10,
        max_age_s: float | None = None,
        labels: Sequence[str] = (),
    ) -> None:
        self.high_score, self.low_score, self.match_iou = high_score, low_score, match_iou
        self.min_hits, self.max_misses, self.max_age_s = min_hits, max_misses, max_age_s
        self.labels = frozenset(labels)
        self.tracks: list[Track] = []
        self._next_id = 1
        self._last_index: int | None = None

    def update(
        self, detections: Sequence[Observed], index: int, ts: float
    ) -> tuple[list[int | None], list[Track]]:
        """Match one frame's detections; returns each detection's track id (None: not tracked)
        and the tracks that ended with this frame."""
        dt = 1.0 if self._last_index is None else float(max(1, index - self._last_index))
        self._last_index = index
        for track in self.tracks:
            track.predicted = track.filter.predict(dt)
        ids: list[int | None] = [None] * len(detections)
        wanted = [i for i, d in enumerate(detections) if not self.labels or d.label in self.labels]
        high = [i for i in wanted if detections[i].score >= self.high_score]
        low = [i for i in wanted if self.low_score <= detections[i].score < self.high_score]
        free = list(self.tracks)
        for group, least in ((high, self.match_iou), (low, max(self.match_iou, 0.5))):
            for t, d in _greedy(
                free, [detections[i].box for i in group], [detections[i].label for i in group], least
            ):
                self._hit(free[t], detections[group[d]], index, ts)
                ids[group[d]] = free[t].id
            matched = {ids[i] for i in group}
            free = [t for t in free if t.id not in matched]
        for i in high:
            if ids[i] is None:
                ids[i] = self._start(detections[i], index, ts).id
        return ids, self._age(free, ts)

    def _hit(self, track: Track, det: Observed, index: int, ts: float) -> None:
        track.filter.correct(det.box)
        track.box, track.score = det.box, det.score
        track.last_index, track.last_ts = index, ts
        track.hits += 1
        track.misses = 0
        track.confirmed = track.confirmed or track.hits >= self.min_hits

    def _start(self, det: Observed, index: int, ts: float) -> Track:
        track = Track(self._next_id, det.label, det.box, det.score, index, ts, index, ts, KalmanBox(det.box))
        track.confirmed = self.min_hits <= 1
        self._next_id += 1
        self.tracks.append(track)
        return track

    def _age(self, missed: list[Track], ts: float) -> list[Track]:
        """Count a miss for each unmatched track; remove and return those that are gone."""
        ended = []
        for track in missed:
            track.misses += 1
            if not track.confirmed or track.misses > self.max_misses:
                ended.append(track)
        if self.max_age_s is not None:
            ended += [t for t in self.tracks if t not in ended and ts - t.last_ts > self.max_age_s]
        gone = {t.id for t in ended}
        self.tracks = [t for t in self.tracks if t.id not in gone]
        return ended

    def clear(self) -> list[Track]:
        """End every track (the stream ended)."""
        ended, self.tracks = self.tracks, []
        return ended


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> npt.NDArray[np.float64]:
    """Intersection over union of every box of ``a`` with every box of ``b``."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    p, q = np.asarray(a, float)[:, None, :], np.asarray(b, float)[None, :, :]
    w = np.clip(np.minimum(p[..., 2], q[..., 2]) - np.maximum(p[..., 0], q[..., 0]), 0, None)
    h = np.clip(np.minimum(p[..., 3], q[..., 3]) - np.maximum(p[..., 1], q[..., 1]), 0, None)
    inter = w * h
    union = _area(p) + _area(q) - inter
    out: npt.NDArray[np.float64] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out


def _area(r: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])


def _greedy(tracks: list[Track], boxes: list[Box], labels: list[str], least: float) -> list[tuple[int, int]]:
    """Pairs (track, detection) by the largest overlap first, same label, at least ``least``."""
    iou = iou_matrix([t.predicted for t in tracks], boxes)
    for t, track in enumerate(tracks):
        for d, label in enumerate(labels):
            if label != track.label:
                iou[t, d] = 0.0
    pairs = []
    while iou.size and iou.max() >= least:
        flat = int(np.argmax(iou))
        t, d = flat // iou.shape[1], flat % iou.shape[1]
        pairs.append((t, d))
        iou[t, :], iou[:, d] = -1.0, -1.0
    return pairs


def _center(box: Box) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
