"""The bounded hand-off between pipeline threads (edge_runtime/channel.py)."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from edge_runtime.channel import Channel
from tests.timeouts import scaled


def test_fifo_and_timeouts() -> None:
    ch: Channel[int] = Channel(maxsize=2)
    assert ch.put(1) and ch.put(2)
    assert not ch.put(3, timeout=0.01)  # full: refused after the timeout, nothing lost
    assert not ch.put_nowait(3)
    assert [ch.get(), ch.get_nowait()] == [1, 2]
    with pytest.raises(queue.Empty):
        ch.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        ch.get_nowait()


def test_a_blocked_producer_resumes_only_once_the_channel_drained_to_resume_at() -> None:
    ch: Channel[int] = Channel(maxsize=3, resume_at=1)
    for i in range(3):
        ch.put(i)
    resumed = threading.Event()

    def producer() -> None:
        ch.put(3)
        resumed.set()

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        assert ch.get() == 0
        assert not resumed.wait(0.2), "woken with two items still waiting"
        assert ch.get() == 1
        assert resumed.wait(scaled(5)), "not woken with one item left"
        assert [ch.get(), ch.get()] == [2, 3]
    finally:
        thread.join(scaled(5))


def test_many_items_through_a_slow_consumer_arrive_all_in_order() -> None:
    ch: Channel[int | None] = Channel(maxsize=4, resume_at=1)
    received: list[int] = []

    def consumer() -> None:
        while (item := ch.get(timeout=scaled(5))) is not None:
            received.append(item)
            if item % 100 == 0:
                time.sleep(0.001)

    thread = threading.Thread(target=consumer)
    thread.start()
    for i in range(5000):
        assert ch.put(i, timeout=scaled(5))
    ch.put(None, timeout=scaled(5))
    thread.join(scaled(10))
    assert received == list(range(5000))


def test_resume_at_is_kept_within_the_channel() -> None:
    assert Channel(maxsize=2).resume_at == 1
    assert Channel(maxsize=2, resume_at=5).resume_at == 1
    assert Channel(maxsize=2, resume_at=-1).resume_at == 0
    with pytest.raises(ValueError):
        Channel(maxsize=0)
