"""The limits and the acceptance gate of model updates (``updates:`` in the config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UpdatePolicy:
    """Limits and the acceptance gate (from ``updates:`` in the config)."""

    max_bundle_bytes: int
    download_timeout_s: float
    chunk_window: int
    chunk_retry_s: float
    health_window_s: float
    max_errors: int
    max_latency_ms: float | None
    latency_factor: float
    keep: int
