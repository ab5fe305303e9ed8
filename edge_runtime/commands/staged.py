"""``push --group G --waves ...``: a staged rollout, wave after wave, stopped by the abort rule.

The group's devices are those whose retained status (birth, will or clean stop) lists G, online
or not, in order of device id. Each wave publishes the signed update, retained, on each of its
devices' own topic ``P/D/model/update`` (so a wave reaches exactly its devices, and one that is
offline finds the update when it returns), serves the chunks, and waits until every device of
the wave is ``active``, has failed (``rejected``, ``rolled_back``) or the wave's time is up
(fleet/waves.py says what counts as what). Then the abort rule decides: within
``--max-failures``, the next wave starts; beyond it, the rollout stops, the update is cleared
from the topics of the devices that are not active (an offline one will not get it), and the
devices of the later waves were never sent anything.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edge_runtime.errors import InputError
from edge_runtime.fleet.desired import update_topic
from edge_runtime.fleet.records import FleetState
from edge_runtime.fleet.view import serving
from edge_runtime.fleet.watch import FleetWatcher
from edge_runtime.fleet.waves import (
    Amount,
    Seen,
    outcome,
    parse_amount,
    parse_waves,
    plan,
    settle,
    too_many_failures,
)
from edge_runtime.update.manifest import Manifest

DISCOVERY_QUIET_S = 0.5  # retained births arrive in one burst after the SUBACK
DISCOVERY_MIN_S = 1.5


class Release(Protocol):
    """What is pushed: the update's id, the envelope to publish, its manifest."""

    @property
    def uid(self) -> str: ...
    @property
    def payload(self) -> str: ...
    @property
    def manifest(self) -> Manifest: ...


@dataclass
class _Target:
    wave: int
    printed: tuple[object, ...] = ()
    online: bool | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """The flags of a staged rollout, checked."""

    steps: list[Amount]
    limit: Amount
    wave_timeout: float


def plan_from_args(args: argparse.Namespace) -> Plan:
    """``--waves``, ``--max-failures``, ``--wave-timeout`` (InputError when they do not fit)."""
    if not args.group:
        raise InputError("--waves works with --group (a wave is a set of the group's devices)")
    if args.wait is not None:
        raise InputError("--waves: each wave waits up to --wave-timeout S (leave --wait out)")
    if args.no_retain:
        raise InputError("--waves publishes retained (offline devices get it later): leave --no-retain out")
    if args.wave_timeout <= 0:
        raise InputError("--wave-timeout must be > 0")
    limit = parse_amount(args.max_failures or "0", "--max-failures")
    return Plan(parse_waves(args.waves), limit, float(args.wave_timeout))


class StagedPush:
    """One rollout; :meth:`run` returns the exit code (0: every targeted device active)."""

    def __init__(
        self,
        args: argparse.Namespace,
        watcher: FleetWatcher,
        release: Release,
        steps: Plan,
        out: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self.group, self.prefix = args.group, args.prefix
        self.watcher, self.state, self.release = watcher, watcher.state, release
        self.plan, self.out = steps, out
        self.targets: dict[str, _Target] = {}
        self.already: set[str] = set()  # targeted devices that serve the version already
        self.stopped: str | None = None  # why the rollout stopped early

    def run(self) -> int:
        """Discover the group, run the waves, print the summary."""
        start = time.monotonic()
        self.watcher.drain(start + DISCOVERY_MIN_S, quiet=None)
        self.watcher.drain(start + 30, quiet=DISCOVERY_QUIET_S)
        members = sorted(d.id for d in self.state.devices.values() if self.group in d.groups)
        waves = plan(members, self.plan.steps)
        m = self.release.manifest
        if not waves:
            self.out(f"group {self.group}: no device lists this group in its retained status; nothing sent")
            return 1
        sizes = "+".join(str(len(w)) for w in waves)
        self.out(
            f"rollout of update {self.release.uid} ({m.name} {m.version}) to group {self.group}: "
            f"{len(members)} device(s), waves of {sizes}"
        )
        for number, wave in enumerate(waves, 1):
            self._wave(number, len(waves), wave)
            failed = [d for d, o in self._outcomes().items() if o == "failed"]
            if too_many_failures(self.plan.limit, len(failed), len(self.targets)):
                self._stop(number, len(waves), failed)
                break
        return self._summary(members)

    def _wave(self, number: int, total: int, wave: list[str]) -> None:
        self.out(f"wave {number}/{total}: {len(wave)} device(s): {', '.join(wave)}")
        for device in wave:
            self.targets[device] = _Target(number)
            if self._serves_it(device):  # sending it would only be refused as not newer
                self.already.add(device)
                self.out(f"{device}: already serves version {self.release.manifest.version}; nothing sent")
                continue
            self.watcher.publish(self._topic(device), self.release.payload, retain=True)
        deadline = time.monotonic() + self.plan.wave_timeout
        while True:
            now = time.monotonic()
            self.watcher.drain(min(deadline, now + 0.25))
            self._report()
            seen = {d: self._seen(d) for d in wave}
            if settle(seen, timed_out=time.monotonic() >= deadline) is not None:
                return

    def _topic(self, device: str) -> str:
        return update_topic(self.prefix, device, None)

    def _serves_it(self, device: str) -> bool:
        """The device's status says every model of this name serves this version already."""
        d = self.state.devices.get(device)
        m = self.release.manifest
        versions = [x["version"] for x in serving(d).values() if x["name"] == m.name] if d else []
        return bool(versions) and all(v == m.version for v in versions)

    def _seen(self, device: str) -> Seen:
        d = self.state.devices.get(device)
        if d is None:
            return Seen(None, None)
        if device in self.already:
            return Seen(d.online, "active")
        u = d.update
        # a retained status of this update counts only when final and good (an earlier run of
        # this rollout); a retained failure may be from a transfer the device will retry
        mine = u is not None and u.id == self.release.uid and (not u.retained or u.state == "active")
        return Seen(d.online, u.state if mine and u is not None else None)

    def _outcomes(self) -> dict[str, str]:
        """Every targeted device's outcome now (``pending`` while it is offline, else as settled)."""
        found = {d: outcome(self._seen(d), timed_out=True) for d in self.targets}
        return {d: o or "pending" for d, o in found.items()}

    def _report(self) -> None:
        """One line per device per change: online/offline, and each update state."""
        for name, t in self.targets.items():
            d = self.state.devices.get(name)
            seen = self._seen(name)
            if d is not None and d.online is not None and d.online != t.online:
                if t.online is not None or not d.online:
                    self.out(f"{name}: {'online' if d.online else 'offline'}")
                t.online = d.online
            u = d.update if d is not None else None
            if seen.state is None or u is None:
                continue
            bucket = int((u.progress or 0) * 4) if u.state == "downloading" else None
            key = (u.state, u.step, bucket)
            if key != t.printed:
                t.printed = key
                extra = f" {u.progress:.0%}" if bucket is not None and u.progress is not None else ""
                step = f" ({u.step})" if u.step else ""
                reason = f": {u.reason}" if u.reason else ""
                self.out(f"{name}: {u.state}{step}{extra} version {u.version}{reason}")

    def _stop(self, number: int, total: int, failed: list[str]) -> None:
        limit = self.plan.limit
        shown = f"{limit.value:g}%" if limit.percent else f"{limit.value:g}"
        self.stopped = (
            f"stopped after wave {number}/{total}: {len(failed)} failed of {len(self.targets)} "
            f"targeted, more than --max-failures {shown}"
        )
        self.out(self.stopped)
        outcomes = self._outcomes()
        cleared = [d for d in self.targets if outcomes[d] != "active"]
        for device in cleared:  # an empty retained message: the broker forgets the desired update
            self.watcher.publish(self._topic(device), b"", retain=True)
        if cleared:
            self.out(f"cleared the update from {len(cleared)} device(s) not active: {', '.join(cleared)}")

    def _row(self, name: str, outcomes: dict[str, str]) -> list[str]:
        d = self.state.devices.get(name)
        t = self.targets.get(name)
        u = d.update if d is not None else None
        mine = u if u is not None and u.id == self.release.uid else None
        versions = (
            [m["version"] for m in serving(d).values() if m["name"] == self.release.manifest.name]
            if d
            else []
        )
        offline = "offline" if d is not None and d.online is False else "-"
        return [
            name,
            str(t.wave) if t else "-",
            outcomes.get(name, "not reached"),
            (mine.state or "-") if mine else "-",
            ",".join(v or "?" for v in versions) or "-",
            (mine.reason or offline) if mine else offline,
        ]

    def _summary(self, members: list[str]) -> int:
        outcomes = self._outcomes()
        rows = [["DEVICE", "WAVE", "RESULT", "STATE", "SERVING", "REASON"]]
        rows += [self._row(name, outcomes) for name in members]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            self.out("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        counts = {k: list(outcomes.values()).count(k) for k in ("active", "failed", "pending")}
        self.out(
            f"{counts['active']} active, {counts['failed']} failed, {counts['pending']} pending, "
            f"{len(members) - len(self.targets)} not reached"
        )
        if counts["pending"] and self.stopped is None:
            self.out(
                "pending devices get the update when they return (retained on their model/update "
                "topic); keep `edge-runtime fleet serve DIR` running to serve its chunks"
            )
        ok = self.stopped is None and counts["active"] == len(self.targets)
        return 0 if ok else 1


def run_staged(
    args: argparse.Namespace, watcher_for: Callable[[FleetState], FleetWatcher], release: Release
) -> int:
    """Run a staged rollout with a watcher made by ``watcher_for`` (it serves the chunks too)."""
    steps = plan_from_args(args)
    watcher = watcher_for(FleetState(args.prefix))
    watcher.start()
    try:
        return StagedPush(args, watcher, release, steps).run()
    finally:
        watcher.close()
