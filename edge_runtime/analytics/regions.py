"""Zones (polygons) and counting lines (segments) in normalised image coordinates.

An object's position is the bottom centre of its box (where a person or a car touches the
ground): a person whose head is in the driveway's picture but whose feet are on the pavement is
not in the driveway.
"""

from __future__ import annotations

from dataclasses import dataclass

Point = tuple[float, float]
Box = tuple[float, float, float, float]
_EDGE = 1.0 - 1e-6  # the even-odd rule counts a point on a polygon's bottom or right edge as outside


def anchor(box: Box) -> Point:
    """Where an object is: the bottom centre of its box (kept inside the image: a zone drawn to the
    image's edge holds an object whose box touches that edge)."""
    return (min(max((box[0] + box[2]) / 2, 0.0), _EDGE), min(max(box[3], 0.0), _EDGE))


@dataclass(frozen=True, slots=True)
class Zone:
    """A named polygon; ``labels`` empty: every label counts."""

    name: str
    points: tuple[Point, ...]
    labels: frozenset[str] = frozenset()

    def counts(self, label: str) -> bool:
        """Whether objects of ``label`` count in this zone."""
        return not self.labels or label in self.labels

    def contains(self, p: Point) -> bool:
        """Even-odd rule (a point on an edge may fall either way; positions are not that exact)."""
        x, y = p
        inside = False
        n = len(self.points)
        for i in range(n):
            (x1, y1), (x2, y2) = self.points[i], self.points[(i + 1) % n]
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside


@dataclass(frozen=True, slots=True)
class Line:
    """A named counting segment from ``a`` to ``b``.

    ``forward`` is a crossing from the left of A->B to its right, as seen standing at A looking
    at B on the image (y grows downwards): for a line drawn left to right, moving down.
    """

    name: str
    a: Point
    b: Point
    labels: frozenset[str] = frozenset()

    def counts(self, label: str) -> bool:
        """Whether objects of ``label`` are counted on this line."""
        return not self.labels or label in self.labels

    def side(self, p: Point) -> float:
        """> 0 on the right of A->B (image coordinates), < 0 on the left."""
        (ax, ay), (bx, by) = self.a, self.b
        return (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)

    def crossing(self, before: Point, after: Point) -> str | None:
        """``forward``/``backward`` when the move from ``before`` to ``after`` crosses the
        segment itself (not its extension), else None."""
        right1, right2 = self.side(before) > 0, self.side(after) > 0  # on the line counts as left
        if right1 == right2:
            return None
        if _side(before, after, self.a) * _side(before, after, self.b) > 0:
            return None  # A and B on one side of the move: it passed beside the segment
        return "backward" if right1 else "forward"


def _side(p: Point, q: Point, r: Point) -> float:
    return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
