"""The acceptance gate of a new model: each slot's trial, then a health window while it serves.

``trial_all`` has every slot that uses the model load the new version and pass its golden vectors
and latency budget (the slot does the work, see ports.py). After the swap the slots' counters are
marked; while the window is open, more than ``max_errors`` failed frames, or a mean inference
time over ``max_latency_ms`` (once 5 frames were inferred), swaps the previous model back. When
the window ends clean, ``active.json`` is committed, the previous models are closed and older
versions pruned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.update.policy import UpdatePolicy
from edge_runtime.update.ports import Candidate, Slot
from edge_runtime.update.store import Active, ModelStore

logger = logging.getLogger(__name__)

MIN_FRAMES_FOR_LATENCY = 5


def trial_all(slots: list[Slot], folder: Path, policy: UpdatePolicy) -> dict[str, Candidate]:
    """A tested candidate from ``folder`` per slot; UpdateError (all of them closed) if one fails."""
    by_key = {slot.key: slot for slot in slots}
    loaded: dict[str, Candidate] = {}
    try:
        for key, slot in by_key.items():
            max_ms, factor = policy.max_latency_ms, policy.latency_factor
            loaded[key] = slot.trial(folder, max_latency_ms=max_ms, latency_factor=factor)
    except BaseException:
        for key, candidate in loaded.items():
            by_key[key].close(candidate)
        raise
    return loaded


@dataclass
class HealthWindow:
    """One open window: the slots swapped, what served before, their counters at the swap."""

    name: str
    slots: dict[str, Slot]
    previous: dict[str, Candidate]
    marks: dict[str, tuple[int, int, float]]
    until: float  # time.monotonic()
    record: Active  # the uncommitted active.json record the swap wrote (version, update id)
    policy: UpdatePolicy

    @classmethod
    def open(
        cls,
        name: str,
        slots: list[Slot],
        candidates: dict[str, Candidate],
        record: Active,
        policy: UpdatePolicy,
    ) -> HealthWindow:
        """Mark the counters, then swap each candidate in (it serves from the next frame on)."""
        by_key = {slot.key: slot for slot in slots if slot.key in candidates}
        marks = {key: by_key[key].counters() for key in candidates}
        previous = {key: by_key[key].swap(candidate) for key, candidate in candidates.items()}
        seconds = policy.health_window_s
        logger.info(
            "update %s: %s version %s serving; health window %.0f s",
            record.update,
            name,
            record.version,
            seconds,
        )
        return cls(name, by_key, previous, marks, time.monotonic() + seconds, record, policy)

    @property
    def over(self) -> bool:
        """The window has run its length."""
        return time.monotonic() >= self.until

    def verdict(self) -> str | None:
        """Why the new model must go now, or None while it does well."""
        for key, slot in self.slots.items():
            inferred, errors, total_ms = slot.counters()
            n0, e0, t0 = self.marks[key]
            if errors - e0 > self.policy.max_errors:
                return f"{errors - e0} frame(s) failed in the health window"
            n, ms = inferred - n0, total_ms - t0
            budget = self.policy.max_latency_ms
            if budget is not None and n >= MIN_FRAMES_FOR_LATENCY and ms / n > budget:
                return f"mean inference {ms / n:.1f} ms in the health window, budget {budget:.1f} ms"
        return None

    def commit(self, store: ModelStore, checkpoint: Callable[[str], None]) -> None:
        """Commit ``active.json``, close the previous models, prune older versions."""
        self.record.committed = True
        store.set_active(self.name, self.record)
        checkpoint("committed")
        for key, candidate in self.previous.items():
            self.slots[key].close(candidate)
        removed = ", ".join(store.prune(self.name)) or "nothing"
        version = self.record.version
        logger.info(
            "update %s: %s version %s active (pruned: %s)", self.record.update, self.name, version, removed
        )

    def roll_back(self, store: ModelStore, reason: str) -> None:
        """Swap the previous models back, close the new ones, point ``active.json`` back."""
        for key, candidate in self.previous.items():
            slot = self.slots[key]
            slot.close(slot.swap(candidate))
        store.roll_back(self.name, self.record)
        logger.warning("update %s: rolled back to the previous model: %s", self.record.update, reason)
