"""The health and status payload bodies (docs/mqtt.md: ``P/D/health`` and ``P/D/status``).

Built from what the daemon's parts expose, seen through the small protocols below, so this module
imports no stage: app.py hands it the pipelines, the outbox, the link and the model slots.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from edge_runtime.health.metrics import PipelineMetrics
from edge_runtime.health.system import SystemProbe


# Read-only members (properties), so the real classes' narrower types fit.
class _Handoff(Protocol):
    @property
    def dropped(self) -> int: ...


class _Source(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def handoff(self) -> _Handoff: ...
    def stats(self) -> dict[str, Any]: ...


class PipelineView(Protocol):
    """A running pipeline as health sees it (pipeline.py ``Pipeline``)."""

    @property
    def name(self) -> str: ...
    @property
    def metrics(self) -> PipelineMetrics: ...
    @property
    def source(self) -> _Source: ...
    def analytics_report(self) -> dict[str, Any]: ...


class _Report(Protocol):
    def report(self) -> dict[str, Any]: ...


class OutboxView(Protocol):
    """The outbox's counters and state (publish/outbox.py)."""

    @property
    def error(self) -> str | None: ...
    @property
    def recovered(self) -> _Report | None: ...
    @property
    def pending(self) -> int: ...
    @property
    def pending_bytes(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def rejected(self) -> int: ...


class _Flag(Protocol):
    def is_set(self) -> bool: ...


class LinkView(Protocol):
    """The broker link's state (publish/mqtt.py)."""

    @property
    def connected(self) -> _Flag: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def failed_connects(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """Who reports: the device, this run of the daemon, since when."""

    device: str
    session: str
    version: str
    started: float
    groups: tuple[str, ...]


def _pipeline(p: PipelineView) -> dict[str, Any]:
    m = p.metrics
    return {
        "fps": m.fps(),
        "frames": m.frames,
        "inferred": m.inferred,
        "errors": m.errors,
        "dropped_frames": p.source.handoff.dropped,
        "source_state": p.source.state,
        "source_error": p.source.error,
        "latency_ms": m.latency_report(),
        **p.source.stats(),  # sensor sources: samples, malformed, reconnects
        **p.analytics_report(),  # motion gating, tracks and counters (analytics/)
    }


def _failed(reason: str) -> dict[str, Any]:
    return {
        "fps": None,
        "frames": 0,
        "inferred": 0,
        "errors": 0,
        "dropped_frames": 0,
        "source_state": "failed",
        "source_error": reason,
        "latency_ms": None,
    }


def health(
    who: Identity,
    *,
    pipelines: Iterable[PipelineView],
    failed: Mapping[str, str],
    outbox: OutboxView,
    link: LinkView,
    probe: SystemProbe,
    models: Mapping[str, dict[str, Any]],
    updates: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The health payload body; ``models``: each slot's ``describe()``, ``failed``: pipeline -> reason,
    ``updates``: the update manager's counters of refused traffic."""
    report = {p.name: _pipeline(p) for p in pipelines}
    report.update({name: _failed(reason) for name, reason in failed.items()})
    now = time.time()
    return {
        "ts": round(now, 3),
        "uptime_s": round(now - who.started, 1),
        "device": who.device,
        "session": who.session,
        "pipelines": report,
        "outbox": {
            "pending": outbox.pending,
            "pending_bytes": outbox.pending_bytes,
            "dropped": outbox.dropped,
            "rejected": outbox.rejected,
            "error": outbox.error,
            "recovered": None if outbox.recovered is None else outbox.recovered.report(),
        },
        "mqtt": {
            "connected": link.connected.is_set(),
            "reconnects": link.reconnects,
            "last_error": link.last_error,
            "failed_connects": link.failed_connects,
        },
        "system": probe.snapshot(),
        "models": {n: {k: v for k, v in d.items() if k != "name"} for n, d in models.items()},
        "updates": dict(updates or {}),
    }


def status(who: Identity, *, models: Mapping[str, dict[str, Any]], pipelines: list[str]) -> dict[str, Any]:
    """The birth message body (the will carries its session too)."""
    return {
        "session": who.session,
        "version": who.version,
        "models": dict(models),
        "pipelines": pipelines,
        "groups": list(who.groups),
    }
