"""JSON payloads as docs/mqtt.md describes them (bytes, compact, built once per message)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any


def new_id() -> str:
    """A message id that never repeats (for subscriber-side de-duplication)."""
    return uuid.uuid4().hex


def encode(obj: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def prediction(
    seq: int,
    *,
    device: str,
    pipeline: str,
    frame: dict[str, Any] | None = None,
    window: dict[str, Any] | None = None,
    model: dict[str, Any],
    task: str,
    result: dict[str, Any],
    latency_ms: dict[str, float],
) -> bytes:
    """One result of one frame, or of one sensor window (``window`` replaces ``frame``)."""
    return encode(
        {
            "id": new_id(),
            "seq": seq,
            "ts": round(time.time(), 3),
            "device": device,
            "pipeline": pipeline,
            **({"frame": frame} if window is None else {"window": window}),
            "model": model,
            "task": task,
            **result,
            "latency_ms": latency_ms,
        }
    )


def health(seq: int | None, body: dict[str, Any]) -> bytes:
    """Health telemetry with its own id and seq (None: sent directly, not through the outbox)."""
    return encode({"id": new_id(), "seq": seq, **body})


def event(seq: int, body: dict[str, Any]) -> bytes:
    """An analytics event or counter state (its own id, seq and time; the body from analytics/)."""
    return encode({"id": new_id(), "seq": seq, "ts": round(time.time(), 3), **body})
