"""Staged rollouts, the pure part: wave sizes, the abort rule, and when a wave is over.

``--waves 1,10%,50%,100%`` gives the number of devices reached *after* each wave (cumulative):
a count, or a percentage of the group rounded up. With 100 devices that is 1, 10, 50 and 100, so
waves of 1, 9, 40 and 50 devices; a wave that would add nobody is left out. Devices are taken in
order of device id, so the same group gives the same waves every time.

``--max-failures N`` (a count) or ``P%`` (of the devices targeted so far, rounded down) is how
many failed devices the rollout tolerates: after a wave, more than that stops it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge_runtime.errors import InputError

FINAL = ("active", "failed")


@dataclass(frozen=True, slots=True)
class Amount:
    """A count (``3``) or a percentage (``10%``)."""

    value: float
    percent: bool

    def of(self, total: int, *, up: bool) -> int:
        """How many of ``total`` this amount is (a percentage rounded up or down)."""
        if not self.percent:
            return int(self.value)
        exact = self.value * total / 100
        return math.ceil(exact - 1e-9) if up else math.floor(exact + 1e-9)


def parse_amount(text: str, what: str) -> Amount:
    """``N`` or ``P%``; InputError naming ``what`` otherwise."""
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1]) if percent else int(raw)
    except ValueError:
        raise InputError(f"{what} {text!r}: expected a count (3) or a percentage (10%)") from None
    if value < 0 or (percent and value > 100) or not math.isfinite(value):
        raise InputError(f"{what} {text!r}: a count >= 0 or a percentage from 0% to 100%")
    return Amount(value, percent)


def parse_waves(text: str) -> list[Amount]:
    """``1,10%,50%,100%``: at least one amount, each reaching more devices than the one before."""
    steps = [parse_amount(part, "--waves") for part in text.split(",") if part.strip()]
    if not steps or any(s.value <= 0 for s in steps):
        raise InputError(f"--waves {text!r}: one or more counts or percentages above 0, e.g. 1,10%,50%,100%")
    return steps


def plan(devices: Sequence[str], steps: Sequence[Amount]) -> list[list[str]]:
    """The waves: the devices sorted by id, cut where each step's cumulative count ends."""
    ordered = sorted(set(devices))
    waves: list[list[str]] = []
    reached = 0
    for step in steps:
        upto = min(len(ordered), max(reached, step.of(len(ordered), up=True)))
        if upto > reached:
            waves.append(ordered[reached:upto])
            reached = upto
    return waves


def too_many_failures(limit: Amount, failures: int, targeted: int) -> bool:
    """The abort rule: more failures than ``limit`` allows among ``targeted`` devices."""
    return failures > limit.of(targeted, up=False)


@dataclass(frozen=True, slots=True)
class Seen:
    """What the rollout knows of one device of the wave right now."""

    online: bool | None  # from its retained status; None: never seen
    state: str | None  # its model status for this update: downloading ... active, rejected, rolled_back


def outcome(seen: Seen, *, timed_out: bool) -> str | None:
    """``active``, ``failed`` or ``pending`` once the device's part of the wave is settled, else None.

    A device that is offline is ``pending`` (not a failure) once the wave's time is up: it still
    gets the update when it returns. One online that has no final state by then is ``failed``
    (it may not trust the signing key, or it hangs): a rollout must not count silence as success.
    """
    if seen.state == "active":
        return "active"
    if seen.state in ("rejected", "rolled_back"):
        return "failed"
    if not timed_out:
        return None
    return "failed" if seen.online else "pending"


def settle(wave: Mapping[str, Seen], *, timed_out: bool) -> dict[str, str] | None:
    """Every device's outcome once the whole wave is settled, else None (keep waiting)."""
    out = {name: outcome(seen, timed_out=timed_out) for name, seen in wave.items()}
    if any(v is None for v in out.values()):
        return None
    return {k: v for k, v in out.items() if v is not None}
