"""Per-pipeline video analytics settings: ``motion``, ``tracking``, ``zones``, ``lines``, ``output``.

Coordinates are normalised to ``0..1`` of the image (x to the right, y down), like every box.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]
MAX_POINTS = 64  # a polygon of a camera view never needs more; bounds the per-frame work


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _polygon(points: list[Point]) -> list[Point]:
    if len(points) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(points)}")
    area2 = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(points, [*points[1:], points[0]], strict=True))
    if abs(area2) < 1e-9:
        raise ValueError("the polygon has no area (its points are on one line)")
    return points


class MotionConfig(_Section):
    """Motion gating: the model runs on frames where something moved, plus periodic keyframes."""

    enabled: bool = Field(False, description="run the model only on frames with motion (and keyframes)")
    height: int = Field(
        100, ge=16, le=720, description="height in pixels of the grayscale copy motion is measured on"
    )
    threshold: int = Field(
        25, ge=1, le=255, description="a pixel moved when it differs from the background by more than this"
    )
    min_area: float = Field(
        0.0005, ge=0, le=1, description="smallest moving region that counts, as a fraction of the image"
    )
    alpha: float = Field(
        0.1,
        gt=0,
        le=1,
        description="how fast the background follows the scene (running average weight; the trail a "
        "departed object leaves fades in about 1/alpha frames)",
    )
    recalibrate: float = Field(
        0.6,
        gt=0,
        le=1,
        description="when more than this fraction of the image changes at once (lights, camera moved), "
        "the background is reset to the new frame instead of reporting motion",
    )
    keyframe_every: int = Field(
        75,
        ge=1,
        description="run the model at least on every Nth frame without motion (stationary objects "
        "stay known and tracks can end); 75 = 5 s at 15 fps",
    )
    masks: list[list[Point]] = Field(
        default_factory=list,
        max_length=32,
        description="polygons (normalised [x, y] points) where motion is ignored, e.g. a clock or trees",
    )

    @field_validator("masks")
    @classmethod
    def _polygons(cls, v: list[list[Point]]) -> list[list[Point]]:
        for polygon in v:
            if len(polygon) > MAX_POINTS:
                raise ValueError(f"a mask has at most {MAX_POINTS} points")
            _polygon(polygon)
        return v


class TrackingConfig(_Section):
    """Multi-object tracking (IoU matching with a constant-velocity Kalman filter, ByteTrack-like)."""

    enabled: bool | None = Field(
        None,
        description="give detections a track_id and publish events; default: on when zones, lines or "
        "output: events are configured",
    )
    labels: list[str] = Field(
        default_factory=list, max_length=256, description="labels to track (empty: every label)"
    )
    high_score: float = Field(
        0.5, ge=0, le=1, description="detections at least this confident start tracks and match first"
    )
    low_score: float = Field(
        0.1, ge=0, le=1, description="less confident detections only keep existing tracks alive"
    )
    match_iou: float = Field(
        0.2, gt=0, le=1, description="least overlap of a detection with a track's predicted box to match"
    )
    min_hits: int = Field(
        2, ge=1, le=100, description="matched inferences before a track is confirmed (and its start event)"
    )
    max_misses: int = Field(
        10, ge=0, le=10_000, description="inferences in a row without a match before a track ends"
    )
    max_age_s: float | None = Field(
        None, gt=0, description="also end a track not seen for this long (default: only max_misses)"
    )
    update_interval_s: float = Field(
        1.0, ge=0, description="least time between two update events of one track (rate limit)"
    )
    start: Literal["seen", "zone"] = Field(
        "seen",
        description="when a track's events begin: seen: once the tracker confirms it; zone: once it is "
        "in a zone (objects that stay outside every zone make no events; lines still count them)",
    )
    min_score_gain: float = Field(
        0.05, ge=0, le=1, description="a best score this much higher than the one last reported is an update"
    )


class ZoneConfig(_Section):
    """A zone: a polygon; a track is inside while the bottom centre of its box is."""

    points: list[Point] = Field(..., max_length=MAX_POINTS, description="polygon, normalised [x, y] points")
    labels: list[str] = Field(
        default_factory=list, max_length=256, description="labels that count here (empty: every label)"
    )

    @field_validator("points")
    @classmethod
    def _polygon(cls, v: list[Point]) -> list[Point]:
        return _polygon(v)


class LineConfig(_Section):
    """A counting line from A to B: ``forward`` is crossing from its left to its right as seen from A
    looking at B (a line drawn left to right across the image: downwards is forward)."""

    points: list[Point] = Field(..., description="[[xA, yA], [xB, yB]], normalised")
    labels: list[str] = Field(
        default_factory=list, max_length=256, description="labels counted (empty: every label)"
    )

    @field_validator("points")
    @classmethod
    def _segment(cls, v: list[Point]) -> list[Point]:
        if len(v) != 2:
            raise ValueError(f"a line is two points, got {len(v)}")
        if v[0] == v[1]:
            raise ValueError("the two points of a line must differ")
        return v
