"""The watchdog's timing: checks every second, pings every half interval, a stall reported at once.

The progress rule itself and the daemon under a fake systemd are in test_notify.py; here a fake
clock drives :meth:`Watchdog.tick`, one turn of the watchdog thread.
"""

from __future__ import annotations

import logging

import pytest

from edge_runtime.health.watchdog import Progress, Watchdog

LIMIT = 30.0  # WatchdogSec=30s: the stall limit is the interval


def test_checks_every_second_pings_every_half_interval_and_reports_a_stall_within_a_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Frames until t=10, then a read that returns only at t=43: pings at 0, 15 and 30 as without
    the frequent checks; the stall is reported at 41, one check after the limit ran out (t=40),
    not at the next half-interval round (45); the ping after it goes out at once."""
    clock = [0.0]
    last_alive = [0.0]
    pings: list[float] = []
    reports: list[float] = []

    def probe() -> list[Progress]:
        return [Progress("front", "streaming", True, False, last_alive[0], None)]

    dog = Watchdog(
        probe,
        lambda: pings.append(clock[0]),
        interval_s=LIMIT,
        stall_limit_s=LIMIT,
        report=lambda text: reports.append(clock[0]),
        clock=lambda: clock[0],
    )
    assert dog.check_s == 1.0
    with caplog.at_level(logging.INFO, "edge_runtime.health.watchdog"):
        for second in range(50):
            clock[0] = float(second)
            if second <= 10 or second >= 43:
                last_alive[0] = clock[0]
            dog.tick()
    assert pings[:3] == [0.0, 15.0, 30.0]  # as systemd asks: every half interval
    assert reports == [41.0, 42.0]  # from the first check past the limit, while it lasts
    assert pings[3] == 43.0  # progress again: a ping at once, not at the next round (45)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "watchdog: holding pings, no progress: pipeline front: source stuck in one call (streaming) for 31.0s"
    ]


@pytest.mark.parametrize(("interval", "check"), [(30.0, 1.0), (4.0, 1.0), (1.0, 0.5), (0.2, 0.1)])
def test_the_check_interval_is_a_second_or_half_the_watchdog_interval(interval: float, check: float) -> None:
    """Short watchdog intervals (the tests' 1 s) keep a check, and a ping, every half interval."""
    dog = Watchdog(list, lambda: None, interval_s=interval, stall_limit_s=interval)
    assert dog.check_s == check
    assert Watchdog(list, lambda: None, interval_s=interval, stall_limit_s=interval, check_s=60).check_s == (
        interval / 2
    )
