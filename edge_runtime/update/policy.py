"""The limits and the acceptance gate of model updates (``updates:`` in the config)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_runtime.config.sections import UpdatesConfig


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
    # a URL that stores no chunk for this long gives way to another source (docs/updates.md)
    source_stall_s: float = 30.0

    @classmethod
    def of(cls, uc: UpdatesConfig) -> UpdatePolicy:
        """The policy the config's ``updates:`` section sets."""
        return cls(
            max_bundle_bytes=uc.max_bundle_bytes,
            download_timeout_s=uc.download_timeout_s,
            chunk_window=uc.chunk_window,
            chunk_retry_s=uc.chunk_retry_s,
            health_window_s=uc.health_window_s,
            max_errors=uc.max_errors,
            max_latency_ms=uc.max_latency_ms,
            latency_factor=uc.latency_factor,
            keep=uc.keep,
            source_stall_s=max(10.0, 10 * uc.chunk_retry_s),
        )
