"""What the update manager needs from the daemon: one ``Slot`` per configured model, and the link.

The model layer implements it (``edge_runtime.model.ModelSlot``); loading, golden vectors and
latency checks happen on that side, so nothing in ``update/`` imports the model layer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

# Opaque here: a loaded model version that does not serve yet (the model layer's Runner), passed
# back to the slot that made it. Any, so that a slot's own narrower type satisfies the protocol.
Candidate = Any


class Slot(Protocol):
    """One configured model that updates may replace."""

    key: str

    def version(self) -> str:
        """The version serving now."""

    def check_bundle(self, folder: Path) -> None:
        """The extracted bundle's model.yaml and the files it names, as the loader reads them (no
        runtime involved); UpdateError ``bundle content: ...`` when they are not a model bundle."""

    def trial(self, folder: Path, *, max_latency_ms: float | None, latency_factor: float) -> Candidate:
        """Load the bundle in ``folder`` with this slot's backend options, run its golden vectors and
        the latency budget (absolute, and relative to the serving model timed interleaved on golden
        input 0); raise UpdateError with the reason, closing what it loaded."""

    def swap(self, candidate: Candidate) -> Candidate:
        """Serve ``candidate`` from the next frame on; returns what served before."""

    def counters(self) -> tuple[int, int, float]:
        """(frames inferred, frames failed, inference ms summed) over the pipelines using it."""

    def close(self, candidate: Candidate) -> None:
        """Release a candidate that no longer serves."""


class Link(Protocol):
    """The MQTT link (publish/mqtt.py ``MqttLink``): routes inbound topics, sends small messages."""

    def route(self, topic_filter: str, handler: Callable[[str, bytes], None] | None) -> None:
        """Give messages on ``topic_filter`` to ``handler(topic, payload)`` (None: stop)."""

    def route_retained(self, topic_filter: str, handler: Callable[[str, bytes, bool], None]) -> None:
        """As ``route``; ``handler(topic, payload, retained)`` is told whether the broker kept it."""

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int | None:
        """Hand a message to the broker now; None when not connected."""
