"""Events of tracked objects (start, update, end) and the counters of zones and lines.

A track's story starts with its first detection, but nothing is said of it until the tracker
confirms it: then the zones it is in and the lines it crossed so far count, and ``start`` goes
out (with ``start_in_zone``, only once it is in a zone: objects that stay outside every zone make
no events, though the lines they cross still count).
``update`` follows a meaningful change (a zone entered or left, a line crossed, the best score
up by ``min_score_gain``), at most one per ``update_interval_s`` per track (later changes wait
for the next frame after the interval). ``end`` follows the track's end, or the stream's
(:meth:`EventLog.close`): every ``start`` gets its ``end``. Dwell in a zone runs from the first
frame the object is seen inside to the first frame it is seen outside (or the last it was seen).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.analytics.regions import Line, Point, Zone, anchor
from edge_runtime.analytics.tracker import Box, Track

MAX_CROSSINGS = 50  # crossings listed in one track's events (the counters count them all)


@dataclass(slots=True)
class _Story:
    """What the events say about one track."""

    best_score: float
    best_box: Box
    point: Point
    counted: bool = False  # confirmed: its zone and line changes count
    started: bool = False
    reported_score: float = 0.0
    last_event_ts: float = float("-inf")
    why: list[str] = field(default_factory=list)  # changes not reported yet
    inside: dict[str, tuple[float, int]] = field(default_factory=dict)  # zone -> (since ts, frame)
    dwell: dict[str, float] = field(default_factory=dict)  # zone -> seconds of finished visits
    entered: list[str] = field(default_factory=list)
    crossed: list[dict[str, Any]] = field(default_factory=list)
    unsaid: list[tuple[str, str, str]] = field(default_factory=list)  # counter changes not applied


class Counters:
    """Per zone: occupancy now, entries and exits; per line: crossings each way."""

    def __init__(self, zones: Sequence[Zone], lines: Sequence[Line]) -> None:
        self.zones = {z.name: {"occupancy": 0, "entered": 0, "left": 0} for z in zones}
        self.lines = {ln.name: {"forward": 0, "backward": 0} for ln in lines}
        self.changed: set[tuple[str, str]] = set()  # ("zone" | "line", name) since last taken

    def bump(self, kind: str, name: str, key: str, by: int = 1) -> None:
        """Add ``by`` to one counter and remember that it changed."""
        (self.zones if kind == "zone" else self.lines)[name][key] += by
        self.changed.add((kind, name))

    def take_changed(self) -> list[tuple[str, str, dict[str, int]]]:
        """The counters that changed since the last call: (kind, name, values)."""
        out = [(k, n, dict((self.zones if k == "zone" else self.lines)[n])) for k, n in sorted(self.changed)]
        self.changed.clear()
        return out

    def report(self) -> dict[str, Any]:
        """Every counter (health)."""
        return {
            "zones": {n: dict(v) for n, v in self.zones.items()},
            "lines": {n: dict(v) for n, v in self.lines.items()},
        }


class EventLog:
    """Turns the tracker's view of each inferred frame into events and counters."""

    def __init__(
        self,
        zones: Sequence[Zone] = (),
        lines: Sequence[Line] = (),
        *,
        update_interval_s: float = 1.0,
        min_score_gain: float = 0.05,
        start_in_zone: bool = False,
    ) -> None:
        self.zones, self.lines = list(zones), list(lines)
        self.update_interval_s, self.min_score_gain = update_interval_s, min_score_gain
        self.start_in_zone = start_in_zone  # events only for tracks once they are in a zone
        self.counters = Counters(self.zones, self.lines)
        self._stories: dict[int, _Story] = {}
        self.active = 0  # started tracks not ended yet (an int: health reads it from another thread)

    def observe(
        self, tracks: Sequence[Track], ended: Sequence[Track], index: int, ts: float
    ) -> list[dict[str, Any]]:
        """One inferred frame: the tracks alive after it and those it ended; the events it makes."""
        events: list[dict[str, Any]] = []
        for track in tracks:
            if track.last_index != index:
                continue  # not seen in this frame: its prediction is no position to count
            story = self._stories.get(track.id)
            if story is None:
                story = self._stories[track.id] = _Story(track.score, track.box, anchor(track.box))
            self._move(track, story, index, ts)
            if track.confirmed and not story.counted:
                story.counted = True
                self._count(story)  # what happened before the tracker confirmed the object counts now
            if track.confirmed and not story.started and (not self.start_in_zone or story.inside):
                events.append(self._start(track, story, ts))
            elif story.started and story.why and ts - story.last_event_ts >= self.update_interval_s:
                events.append(self._event("update", track, story, ts))
        for track in ended:
            events += self._end(track, ts, "gone")
        return events

    def close(self, tracks: Sequence[Track], ts: float) -> list[dict[str, Any]]:
        """The stream ended: an ``end`` for every started track."""
        return [e for t in tracks for e in self._end(t, ts, "stopped")]

    def _move(self, track: Track, story: _Story, index: int, ts: float) -> None:
        """Zones entered and left, lines crossed, best score: from this frame's box."""
        if track.score > story.best_score:
            story.best_score, story.best_box = track.score, track.box
            gained = story.started and track.score >= story.reported_score + self.min_score_gain
            if gained and "score" not in story.why:
                story.why.append("score")
        before, story.point = story.point, anchor(track.box)
        for zone in self.zones:
            if not zone.counts(track.label):
                continue
            now, was = zone.contains(story.point), zone.name in story.inside
            if now and not was:
                story.inside[zone.name] = (ts, index)
                if zone.name not in story.entered:
                    story.entered.append(zone.name)
                self._change(story, "zone", zone.name, "entered", f"entered:{zone.name}")
            elif was and not now:
                since, _ = story.inside.pop(zone.name)
                story.dwell[zone.name] = story.dwell.get(zone.name, 0.0) + ts - since
                self._change(story, "zone", zone.name, "left", f"left:{zone.name}")
        for line in self.lines:
            direction = line.crossing(before, story.point) if line.counts(track.label) else None
            if direction is not None:
                del story.crossed[: -MAX_CROSSINGS + 1]  # someone standing on a line: the last ones
                story.crossed.append(
                    {"line": line.name, "direction": direction, "ts": round(ts, 3), "frame": index}
                )
                self._change(story, "line", line.name, direction, f"crossed:{line.name}:{direction}")

    def _change(self, story: _Story, kind: str, name: str, key: str, why: str) -> None:
        if why not in story.why:  # bounded: each zone and line at most twice per update
            story.why.append(why)
        story.unsaid.append((kind, name, key))
        if story.counted:  # before, the confirmation applies them (observe)
            self._count(story)

    def _count(self, story: _Story) -> None:
        for kind, name, key in story.unsaid:
            self.counters.bump(kind, name, key)
            if kind == "zone":
                self.counters.bump(kind, name, "occupancy", 1 if key == "entered" else -1)
        story.unsaid.clear()

    def _start(self, track: Track, story: _Story, ts: float) -> dict[str, Any]:
        story.started = True
        self.active += 1
        return self._event("start", track, story, ts)

    def _end(self, track: Track, ts: float, reason: str) -> list[dict[str, Any]]:
        story = self._stories.pop(track.id, None)
        if story is None:
            return []
        if story.counted:
            for name in story.inside:
                self.counters.bump("zone", name, "left")
                self.counters.bump("zone", name, "occupancy", -1)
        if not story.started:
            return []  # never confirmed (or never in a zone, with start_in_zone): nothing was said
        self.active -= 1
        for name, (since, _) in story.inside.items():
            story.dwell[name] = story.dwell.get(name, 0.0) + track.last_ts - since
        story.inside.clear()
        event = self._event("end", track, story, ts)
        event["reason"] = reason
        return [event]

    def _event(self, kind: str, track: Track, story: _Story, ts: float) -> dict[str, Any]:
        story.last_event_ts, story.reported_score = ts, story.best_score
        why, story.why = story.why, []
        dwell = dict(story.dwell)
        for name, (since, _) in story.inside.items():
            dwell[name] = dwell.get(name, 0.0) + track.last_ts - since
        return {
            "type": kind,
            "track_id": track.id,
            "label": track.label,
            "score": round(track.score, 4),
            "box": [round(v, 4) for v in track.box],
            "best_score": round(story.best_score, 4),
            "best_box": [round(v, 4) for v in story.best_box],
            "first_seen": round(track.first_ts, 3),
            "last_seen": round(track.last_ts, 3),
            "first_frame": track.first_index,
            "last_frame": track.last_index,
            "zones": sorted(story.inside),
            "entered_zones": list(dict.fromkeys(story.entered)),
            "dwell_s": {n: round(s, 3) for n, s in dwell.items()},
            "lines": list(story.crossed),
            "changes": why if kind == "update" else [],
        }
