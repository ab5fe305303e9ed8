"""What the integrations see of the daemon: read-only views that app.py's ``Daemon`` fits.

The daemon's parts are seen through these protocols so this package imports no other stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from edge_runtime.config.sections import Config

# (frame or window, result, stage latencies in ms) after a result's commit (pipeline.py)
Observer = Callable[[Any, Any, dict[str, float]], None]


class _Metrics(Protocol):
    @property
    def frames(self) -> int: ...
    @property
    def inferred(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def last_progress(self) -> float: ...

    def latency_report(self) -> dict[str, dict[str, float | None]]: ...


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


class PipelineView(Protocol):
    """A running pipeline (pipeline.py ``Pipeline``)."""

    @property
    def name(self) -> str: ...
    @property
    def metrics(self) -> _Metrics: ...
    @property
    def source(self) -> _Source: ...
    @property
    def observers(self) -> list[Observer]: ...

    keep_frames: bool  # the observers get each frame (else None)


class TopicsView(Protocol):
    """The daemon's topic names (publish/topics.py)."""

    @property
    def base(self) -> str: ...
    @property
    def status(self) -> str: ...


class DaemonView(Protocol):
    """The running daemon as the integrations see it (app.py ``Daemon``).

    ``outbox`` and ``link`` are publish/'s (None before start): counters (``pending``,
    ``pending_bytes``, ``dropped``, ``rejected``, ``error``), ``connected``, ``reconnects``,
    ``last_error``, ``publish(topic, payload, qos, retain)``, ``route(filter, handler)``.
    """

    @property
    def cfg(self) -> Config: ...
    @property
    def topics(self) -> TopicsView: ...
    @property
    def pipelines(self) -> Sequence[Any]: ...  # PipelineView each (see pipeline_views)
    @property
    def failed_pipelines(self) -> Mapping[str, str]: ...
    @property
    def outbox(self) -> Any: ...
    @property
    def link(self) -> Any: ...
    @property
    def last_health(self) -> dict[str, Any] | None: ...  # the latest health body (health/telemetry.py)
    @property
    def last_model_status(self) -> dict[str, Any] | None: ...  # latest model/status (update/status.py)

    def status(self) -> dict[str, Any]: ...
    def stalls(self, limit_s: float) -> list[str]: ...
    def pipeline_model(self, name: str) -> tuple[str, list[str]]: ...  # its model's task and labels
    def put_retained(self, topic: str, payload: bytes) -> None: ...


def pipeline_views(daemon: DaemonView) -> Sequence[PipelineView]:
    """The daemon's pipelines, typed."""
    return list(daemon.pipelines)


def models_of(daemon: DaemonView) -> Mapping[str, dict[str, Any]]:
    """Each model slot's ``describe()`` (name, version, sha256, backend, accelerator)."""
    models: dict[str, dict[str, Any]] = daemon.status().get("models", {})
    return models
