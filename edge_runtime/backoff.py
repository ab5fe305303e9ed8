"""Retry delays shared by the live sources and the MQTT link (a leaf module)."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(initial: float, maximum: float, rng: random.Random | None = None) -> Iterator[float]:
    """Endless delays: doubling from ``initial`` up to ``maximum``, each with +-20% jitter.

    Jitter keeps a fleet of devices that lost the same broker from reconnecting in lockstep.
    """
    rng = rng or random.Random()
    delay = initial
    while True:
        yield delay * rng.uniform(0.8, 1.2)
        delay = min(delay * 2.0, maximum)
