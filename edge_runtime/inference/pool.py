"""Several copies of one model, each run by one caller at a time: throughput on CPU cores.

A runtime call on a small int8 model barely fills two cores with intra-op threads: every layer
splits its work and waits for the slowest thread. Two single-thread copies, each on its own
frame, keep both cores busy without those waits. Measured on the bundled models on 2 cores,
interleaved runs: 2 copies x 1 thread gave 1.22x (classifier) and 1.33x (detector) the
throughput of 1 copy x 2 threads (scripts/bench/benchmark.py reports it for the whole daemon).

An ONNX Runtime session takes concurrent calls, so its "copies" are one session listed once per
stream: the same throughput as separate sessions (measured side by side), 7-8 MB less memory
for the bundled models at 2 streams, and one copy of the weights competing for the cache.

A pool of one is the plain case: it only serialises callers (TFLite interpreters are not
thread-safe, and several pipelines may share a model).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy.typing as npt

from edge_runtime.errors import BackendClosedError
from edge_runtime.inference.base import Backend
from edge_runtime.types import TensorSpec


class StreamPool:
    """Backends of the same model file; ``infer`` borrows a free one for the call."""

    def __init__(self, members: Sequence[Backend]) -> None:
        if not members:
            raise ValueError("a pool needs at least one backend")
        first = members[0]
        self.kind: str = first.kind
        self.accelerator: str = first.accelerator
        self.input_specs: Sequence[TensorSpec] = first.input_specs
        self.output_specs: Sequence[TensorSpec] = first.output_specs
        self.metadata: Mapping[str, str] = first.metadata
        self.concurrent = True  # any number of callers: each waits for a free stream
        self.members = list(members)
        self._free = list(members)
        self._cond = threading.Condition()
        self._closed = False

    @property
    def streams(self) -> int:
        """How many calls can run at once."""
        return len(self.members)

    def infer(self, inputs: Sequence[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """Run on a free copy (waiting for one); raises BackendClosedError once closed."""
        with self._cond:
            while not self._free and not self._closed:
                self._cond.wait()
            if self._closed:
                raise BackendClosedError("the model was closed")
            member = self._free.pop()
        try:
            return member.infer(inputs)
        finally:
            with self._cond:
                self._free.append(member)
                if self._closed:  # close() waits among the callers: wake them all
                    self._cond.notify_all()
                else:
                    self._cond.notify()

    def close(self) -> None:
        """Refuse new calls, wait for the calls inside, then release every copy."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while len(self._free) < len(self.members):
                self._cond.wait()
        for member in {id(m): m for m in self.members}.values():  # a shared member once
            member.close()
