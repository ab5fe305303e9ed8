"""The rate limit for what anyone on the broker can trigger (edge_runtime/throttle.py)."""

from __future__ import annotations

import logging

import pytest

from edge_runtime.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_rest_is_counted_and_reported_with_the_next_window() -> None:
    clock = Clock()
    t = Throttle(per_s=10, burst=3, clock=clock)
    assert [t.allow("k") for _ in range(5)] == [0, 0, 0, None, None]
    clock.now += 10
    assert t.allow("k") == 2, "the first event of the next window says how many were held back"
    assert t.allow("k") == 0


def test_keys_are_independent_and_bounded() -> None:
    t = Throttle(per_s=60, burst=1, max_keys=3, clock=Clock())
    assert t.allow("a") == 0 and t.allow("a") is None
    assert t.allow("b") == 0
    for key in ("c", "d", "e"):  # "a" and "b" are forgotten: memory stays bounded
        t.allow(key)
    assert len(t._windows) == 3
    assert t.allow("a") == 0


def test_log_writes_a_bounded_number_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    t = Throttle(per_s=60, burst=2, clock=clock)
    log = logging.getLogger("throttle-test")
    with caplog.at_level(logging.WARNING, "throttle-test"):
        logged = [t.log(log, logging.WARNING, "topic", "refused %s", i) for i in range(1000)]
        clock.now += 60
        t.log(log, logging.WARNING, "topic", "refused %s", "again")
    assert logged.count(True) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0",
        "refused 1",
        "refused again (998 similar line(s) held back)",
    ]
