"""The systemd watchdog: ``WATCHDOG=1`` only while every pipeline makes progress.

A process that is alive is not necessarily working: a capture thread stuck in a driver call or
an inference call that never returns leaves the daemon up but useless. So the pings are tied to
progress, and stop when a pipeline hangs; systemd then kills and restarts the service.

The progress rule
-----------------
Each pipeline has two threads, and each leaves stamps (monotonic seconds) that cost nothing:

* the source thread stamps ``last_alive`` each time it checks its stop flag — every turn of
  every source loop, including the hand-off's back-pressure loop (every 0.1 s) — and on every
  frame, state change and the end of every *wait*. A wait is time spent on its stop flag by
  design: pacing to ``fps``, backing off before a reconnect. While in one it is ``waiting``.
* each stage of a pipeline stamps ``busy_since`` when it takes a frame into processing (preprocess,
  inference, postprocess, outbox) and clears it when the frame is done. For a file source the
  source thread runs the preprocessing itself, so a preprocessing call longer than the limit is
  reported as a stall of both the source and the pipeline.

With ``limit`` the stall limit (by default the watchdog interval, ``WatchdogSec=``):

1. a **source** is hung when its thread is running, its state is ``starting``, ``streaming`` or
   ``reconnecting``, it is not in a wait, and ``now - last_alive > limit`` — it has been inside
   one call (open, read, decode) for longer than the limit;
2. a **pipeline** is hung when ``busy_since`` is set and ``now - busy_since > limit`` — one frame
   has been in processing for longer than the limit;
3. the daemon pings only when no source and no pipeline is hung.

So a live camera that is reconnecting is not a hang (it waits between attempts; opening and
reading are bounded by its own timeouts, which must stay below the limit — the daemon warns at
start-up when they do not), a file source that ended is not a hang (its state is ``ended``), and
a pipeline waiting for frames from a healthy source is not a hang (it is not busy). A hung
inference call also holds up the source behind it, but the source still turns in the
hand-off's back-pressure loop, so only the pipeline is named.

When the pings stop, the stalled stages are logged once at WARNING and shown in ``STATUS=``;
when progress resumes before systemd acts, that is logged too.

Timing
------
The rule is checked every ``check_s`` (1 s by default, half the interval when that is shorter);
pings go out about every half interval, as systemd asks, and at once when a stall clears. The
checks cost a few attribute reads, so checking often is free, and it does not move the pings:
what it shortens is the time from the stall limit to the WARNING and ``STATUS=`` line (at most
``check_s`` instead of half an interval). It cannot shorten the kill: systemd acts one interval
after the *last ping*, and the last ping can come up to the stall limit after the hang began. So
from a hang to systemd's SIGABRT takes between ``limit + interval/2`` and ``limit + interval``
(with ``WatchdogSec=30s``, where the limit is the interval: 45 to 60 s); docs/systemd.md has the
whole sequence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

RUNNING_STATES = frozenset({"starting", "streaming", "reconnecting"})


@dataclass(frozen=True, slots=True)
class Progress:
    """The progress stamps of one pipeline and its source, read at one moment."""

    pipeline: str
    source_state: str
    source_running: bool
    source_waiting: bool
    source_last_alive: float
    busy_since: float | None


@dataclass(frozen=True, slots=True)
class Stall:
    """One hung stage: which pipeline, which thread (``source`` or ``processing``), for how long."""

    pipeline: str
    stage: str
    seconds: float
    detail: str

    def __str__(self) -> str:
        return f"pipeline {self.pipeline}: {self.detail} for {self.seconds:.1f}s"


def progress_of(pipelines: Iterable[Any]) -> list[Progress]:
    """The stamps of running pipelines (pipeline.py ``Pipeline``: ``name``, ``source``, ``busy_since``)."""
    out = []
    for p in pipelines:
        source = p.source
        # `waiting` before `last_alive`: a source leaving a wait stamps first, then clears the flag
        waiting = source.waiting
        last_alive = source.last_alive
        out.append(Progress(p.name, source.state, source.running, waiting, last_alive, p.busy_since))
    return out


def stalls(progress: Sequence[Progress], now: float, limit: float) -> list[Stall]:
    """What is hung according to the progress rule (module docstring); empty when all is well."""
    out: list[Stall] = []
    for p in progress:
        quiet = now - p.source_last_alive
        if p.source_running and p.source_state in RUNNING_STATES and not p.source_waiting and quiet > limit:
            out.append(Stall(p.pipeline, "source", quiet, f"source stuck in one call ({p.source_state})"))
        if p.busy_since is not None and now - p.busy_since > limit:
            out.append(Stall(p.pipeline, "processing", now - p.busy_since, "one frame in processing"))
    return out


class Watchdog:
    """Every ``check_s``: apply :func:`stalls`; every ``interval_s / 2`` ping unless it found one.

    ``ping`` sends ``WATCHDOG=1``; ``report`` shows a stall (``STATUS=``). ``probe`` returns the
    current stamps; an empty list (no pipelines, e.g. while a reload swaps the daemon) is progress.
    ``check_s`` defaults to 1 s, or half the interval when that is shorter (module docstring).
    """

    def __init__(
        self,
        probe: Callable[[], Sequence[Progress]],
        ping: Callable[[], object],
        *,
        interval_s: float,
        stall_limit_s: float,
        report: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        check_s: float | None = None,
    ) -> None:
        self.probe, self.ping, self.report, self.clock = probe, ping, report, clock
        self.interval_s, self.stall_limit_s = interval_s, stall_limit_s
        self.check_s = min(interval_s / 2, 1.0) if check_s is None else min(check_s, interval_s / 2)
        self.stalled: list[Stall] = []
        self._last_ping: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def check(self, ping: bool = True) -> bool:
        """One round: ping if all make progress (and ``ping``, or a stall just cleared).

        True when it pinged.
        """
        found = stalls(self.probe(), self.clock(), self.stall_limit_s)
        text = "; ".join(map(str, found))
        recovered = not found and bool(self.stalled)
        if found and {(s.pipeline, s.stage) for s in found} != {(s.pipeline, s.stage) for s in self.stalled}:
            logger.warning("watchdog: holding pings, no progress: %s", text)
        elif recovered:
            logger.info("watchdog: progress again; pinging")
        self.stalled = found
        if found:
            if self.report is not None:
                self.report("STALLED: " + text)
            return False
        if not (ping or recovered):
            return False
        self.ping()
        self._last_ping = self.clock()
        return True

    def start(self) -> None:
        """Check and ping now, then check every ``check_s`` in a thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop pinging."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)

    def tick(self) -> bool:
        """One turn of the thread: :meth:`check`, with a ping if one is due.

        A ping is due half an interval after the last one, to within half a check. True when it
        pinged; a failed check is logged, never raised.
        """
        half = (self.interval_s - self.check_s) / 2
        due = self._last_ping is None or self.clock() - self._last_ping >= half
        try:
            return self.check(ping=due)
        except Exception:  # the supervisor loop must go on; a missed ping is systemd's cue
            logger.exception("watchdog check failed")
            return False

    def _run(self) -> None:
        self.tick()
        while not self._stop.wait(self.check_s):
            self.tick()
