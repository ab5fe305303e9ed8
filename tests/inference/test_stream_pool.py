"""Copies of a model (inference/pool.py): one call per copy at a time, and a close that waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import BackendClosedError
from edge_runtime.inference import BackendOptions, StreamPool, create_backend

from ..conftest import CLASSIFIER


class Copy:
    """A fake backend that records how many calls are inside it at once."""

    kind, accelerator, metadata, concurrent = "fake", "cpu", {}, False
    input_specs: Sequence[Any] = ()
    output_specs: Sequence[Any] = ()

    def __init__(self, inside: list[int], lock: threading.Lock) -> None:
        self.inside, self.lock, self.busy, self.closed = inside, lock, 0, False

    def infer(self, inputs: Sequence[Any]) -> list[Any]:
        assert not self.closed
        self.busy += 1
        assert self.busy == 1, "two calls inside one copy"
        with self.lock:
            self.inside[0] += 1
            self.inside[1] = max(self.inside[1], self.inside[0])
        time.sleep(0.02)
        with self.lock:
            self.inside[0] -= 1
        self.busy -= 1
        return [id(self)]

    def close(self) -> None:
        self.closed = True


def test_calls_share_the_copies_one_each_and_close_waits_for_them() -> None:
    inside, lock = [0, 0], threading.Lock()
    copies = [Copy(inside, lock) for _ in range(2)]
    pool = StreamPool(copies)
    used: list[int] = []
    refused: list[BackendClosedError] = []

    def call() -> None:
        try:
            used.extend(pool.infer([]))
        except BackendClosedError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.01)
    pool.close()  # waits for the calls inside; the ones still waiting are refused
    for t in threads:
        t.join()
    assert inside[1] == 2, "both copies ran at once, never more than two calls"
    assert all(c.closed for c in copies)
    assert 2 <= len(used) < 8 and len(used) + len(refused) == 8
    with pytest.raises(BackendClosedError):
        pool.infer([])


def test_auto_streams_split_the_threads_into_single_thread_copies_on_the_cpu() -> None:
    model = CLASSIFIER / "efficientnet_lite0_int8.onnx"
    x = np.zeros((1, 3, 224, 224), np.float32)
    auto = create_backend("onnx", model, BackendOptions(accelerator="cpu", threads=2, streams=None))
    one = create_backend("onnx", model, BackendOptions(accelerator="cpu", threads=2))
    try:
        assert auto.streams == 2 and one.streams == 1
        np.testing.assert_array_equal(auto.infer([x])[0], one.infer([x])[0])
    finally:
        auto.close()
        one.close()


def test_one_onnx_session_serves_every_stream_and_concurrent_calls_keep_their_own_answers() -> None:
    model = CLASSIFIER / "efficientnet_lite0_int8.onnx"
    rng = np.random.default_rng(7)
    inputs = [rng.uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32) for _ in range(4)]
    pool = create_backend("onnx", model, BackendOptions(accelerator="cpu", threads=2, streams=None))
    try:
        assert pool.streams == 2 and pool.members[0] is pool.members[1]  # one copy of the weights
        expected = [pool.infer([x])[0] for x in inputs]
        assert len({int(e.argmax()) for e in expected}) > 1 or not np.allclose(expected[0], expected[1])
        wrong: list[int] = []

        def caller(offset: int) -> None:
            for i in range(40):
                k = (i + offset) % len(inputs)
                if not np.array_equal(pool.infer([inputs[k]])[0], expected[k]):
                    wrong.append(k)

        threads = [threading.Thread(target=caller, args=(o,)) for o in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wrong == []
    finally:
        pool.close()
    with pytest.raises(BackendClosedError):
        pool.infer(inputs[:1])
