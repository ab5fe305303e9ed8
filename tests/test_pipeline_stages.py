"""The pipeline's workers: order, every frame once, and model swaps while frames are in flight."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge_runtime.capture.files import ImagesSource
from edge_runtime.errors import BackendClosedError
from edge_runtime.model import ModelSlot
from edge_runtime.pipeline import Pipeline
from edge_runtime.publish.outbox import Outbox
from edge_runtime.scheduling import yield_to_inference
from tests.timeouts import scaled

from .broker import wait_for
from .daemon import ROOT

IMAGES = str(ROOT / "tests" / "data" / "*.jpg")
FRAMES = len(list((ROOT / "tests" / "data").glob("*.jpg")))


class Model:
    """A fake runner that names itself in every result and, like the real one, runs one call
    per copy of the model at a time. ``prepare_gate`` holds its second prepare, ``run_gate`` its
    first run; ``delays`` slows the run of chosen frames (by call order)."""

    def __init__(
        self,
        version: str,
        *,
        prepare_gate: threading.Event | None = None,
        run_gate: threading.Event | None = None,
        delays: dict[int, float] | None = None,
        copies: int = 1,
    ) -> None:
        self.version, self.prepare_gate, self.run_gate = version, prepare_gate, run_gate
        self.delays = delays or {}
        self.prepare_entered, self.run_entered = threading.Event(), threading.Event()
        self.model = SimpleNamespace(describe=lambda: {"name": "m", "version": version, "sha256": "x"})
        self.prepared = 0
        self.runs = 0
        self.closed = False
        self._copies = threading.Semaphore(copies)
        self._count = threading.Lock()
        self.policies: dict[str, set[int]] = {"prepare": set(), "run": set()}
        self.finished_on: list[tuple[str, int]] = []  # (thread kind, policy) of each finish
        self.prepared_on: list[str] = []  # thread kind of each prepare

    def prepare(self, image: Any) -> tuple[list[Any], str]:
        self.policies["prepare"].add(_policy())
        self.prepared_on.append(threading.current_thread().name.split("-")[0])
        with self._count:
            self.prepared += 1
            second = self.prepared == 2
        if second and self.prepare_gate is not None:
            self.prepare_entered.set()
            self.prepare_gate.wait(scaled(10))
        return [image], self.version  # the context says which model prepared the tensors

    def run(self, inputs: list[Any]) -> list[Any]:
        self.policies["run"].add(_policy())
        with self._copies:
            if self.closed:
                raise BackendClosedError(self.version)
            with self._count:
                call = self.runs
                self.runs += 1
            if call == 0 and self.run_gate is not None:
                self.run_entered.set()
                self.run_gate.wait(scaled(10))
            time.sleep(self.delays.get(call, 0.0))
            return [self.version]

    def finish(self, outputs: list[Any], context: Any) -> Any:
        self.finished_on.append((threading.current_thread().name.split("-")[0], _policy()))
        assert outputs == [context], "outputs of one model decoded with another's context"
        return SimpleNamespace(task="classification", payload=lambda: {"classes": [], "ran": outputs[0]})


def _policy() -> int:
    """The calling thread's CPU scheduling policy (-1 where the OS does not say)."""
    return os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else -1


def run_pipeline(
    tmp_path: Path, shared: ModelSlot, streams: int, during: Any = None, fps: float = 0.0
) -> list[dict[str, Any]]:
    """Run the test images through a real Pipeline into a real outbox; the committed rows."""
    outbox = Outbox(tmp_path / "outbox.db")
    pipeline = Pipeline(
        "p", ImagesSource("p", IMAGES, fps=fps), shared, outbox, topic="t", device="d", streams=streams
    )
    pipeline.start()
    try:
        if during is not None:
            during()
        assert wait_for(lambda: pipeline.done, 20)
    finally:
        pipeline.stop(timeout=2)
    rows = [json.loads(m.payload) for m in outbox.fetch(0, 100)]
    outbox.close()
    assert pipeline.metrics.errors == 0 and pipeline.metrics.inferred == FRAMES
    assert [r["frame"]["index"] for r in rows] == list(range(FRAMES)), "each frame once, in order"
    assert [r["seq"] for r in rows] == list(range(1, FRAMES + 1))
    assert [r["ran"] for r in rows] == [r["model"]["version"] for r in rows], "labelled by the model that ran"
    return rows


def test_results_are_committed_in_frame_order_when_copies_finish_out_of_order(tmp_path: Path) -> None:
    """Two copies: frame 0's call is slow, frames 1.. finish first; they wait for it."""
    model = Model("1", delays={0: 0.5}, copies=2)
    rows = run_pipeline(tmp_path, ModelSlot("m", model), streams=2)  # type: ignore[arg-type]
    assert model.runs == FRAMES
    assert all(r["model"]["version"] == "1" for r in rows)


def test_at_a_low_rate_each_inference_thread_posts_its_own_results(tmp_path: Path) -> None:
    """Frames 50 ms apart: an inference thread has no next frame waiting, so it decodes and
    commits its result itself (no wake-up of the post thread), still in frame order. The first
    frame may go to the post thread (it can be queued before an inference thread asks for it, so
    no thread waited for it), and so may the last (the end-of-stream markers are waiting by then)."""
    model = Model("1", copies=2)
    run_pipeline(tmp_path, ModelSlot("m", model), streams=2, fps=20)  # type: ignore[arg-type]
    kinds = [kind for kind, _ in model.finished_on]
    assert FRAMES >= 4 and kinds[1:-1] == ["infer"] * (FRAMES - 2), kinds


@pytest.mark.parametrize("fps", [0.0, 20.0])
def test_a_file_source_preprocesses_in_its_own_thread(tmp_path: Path, fps: float) -> None:
    """Stage 1 runs right after decoding, in the source's own thread (one queue hop less), at full
    speed and paced. Order and completeness are checked by run_pipeline."""
    model = Model("1", copies=2)
    run_pipeline(tmp_path, ModelSlot("m", model), streams=2, fps=fps)  # type: ignore[arg-type]
    assert model.prepared_on == ["source"] * FRAMES


def test_a_stop_while_the_source_waits_to_hand_over_loses_no_prepared_frame(tmp_path: Path) -> None:
    """Looping images at ``fps: 0`` into a slow model: the source thread is blocked handing over a
    prepared frame when the stop comes. Every frame it prepared is still inferred and committed,
    in order, and the pipeline ends."""
    model = Model("1", delays=dict.fromkeys(range(1000), 0.08))  # 2 runs: longer than a put's 0.1 s
    outbox = Outbox(tmp_path / "outbox.db")
    source = ImagesSource("p", IMAGES, fps=0.0, loop=True)
    pipeline = Pipeline("p", source, ModelSlot("m", model), outbox, topic="t", device="d")  # type: ignore[arg-type]
    pipeline.start()
    assert wait_for(lambda: model.runs >= 3, 10)
    pipeline.stop(timeout=scaled(5))
    assert wait_for(lambda: pipeline.done, 5)
    rows = [json.loads(m.payload) for m in outbox.fetch(0, 1000)]
    outbox.close()
    assert pipeline.metrics.errors == 0
    assert model.prepared == model.runs == pipeline.metrics.inferred == len(rows) > 3
    assert [r["frame"]["index"] for r in rows] == list(range(len(rows)))


def test_a_file_source_waits_while_the_outbox_cannot_store_and_loses_nothing(tmp_path: Path) -> None:
    """The outbox cannot write (a trigger stands in for a full disk): the file pipeline's results
    wait, the source waits behind them, nothing is dropped, and no stage looks hung to the
    watchdog. Once writes work again every frame is committed, once, in order."""
    outbox = Outbox(tmp_path / "outbox.db", retry_s=0.05)
    outbox._db.execute(
        "CREATE TRIGGER full BEFORE INSERT ON messages"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    model = Model("1")
    source = ImagesSource("p", IMAGES, fps=0.0)
    pipeline = Pipeline("p", source, ModelSlot("m", model), outbox, topic="t", device="d", pause_s=0.05)  # type: ignore[arg-type]
    pipeline.start()
    try:
        assert wait_for(lambda: outbox.error is not None and model.runs >= 1, 10)
        time.sleep(0.3)
        assert not pipeline.done and pipeline.metrics.inferred == 0 and outbox.dropped == 0
        assert wait_for(lambda: pipeline.busy_since is None, 5), "a paused pipeline is not a hung one"
        outbox._db.execute("DROP TRIGGER full")  # space is back
        assert wait_for(lambda: pipeline.done, 20)
    finally:
        pipeline.stop(timeout=2)
    rows = [json.loads(m.payload) for m in outbox.fetch(0, 100)]
    outbox.close()
    assert outbox.dropped == 0 and pipeline.metrics.errors == 0 and pipeline.metrics.inferred == FRAMES
    assert [r["frame"]["index"] for r in rows] == list(range(FRAMES))
    assert [r["seq"] for r in rows] == list(range(1, FRAMES + 1))


def test_a_frame_prepared_by_a_model_swapped_out_meanwhile_is_prepared_again(tmp_path: Path) -> None:
    """Model 1 is inside its first call and is preparing frame 1 when model 2 replaces it:
    frame 1 is prepared again and run by model 2, never run on model 1."""
    prepare_gate, run_gate = threading.Event(), threading.Event()
    first = Model("1", prepare_gate=prepare_gate, run_gate=run_gate)
    second = Model("2")
    shared = ModelSlot("m", first)  # type: ignore[arg-type]

    def swap() -> None:
        assert first.run_entered.wait(scaled(10)) and first.prepare_entered.wait(scaled(10))
        shared.swap(second)  # type: ignore[arg-type]
        prepare_gate.set()
        run_gate.set()

    rows = run_pipeline(tmp_path, shared, streams=1, during=swap)
    assert [r["model"]["version"] for r in rows] == ["1"] + ["2"] * (FRAMES - 1)
    assert first.runs == 1 and second.prepared == FRAMES - 1


def test_a_frame_waiting_for_a_closed_model_runs_on_its_replacement(tmp_path: Path) -> None:
    """Frame 1 waits for model 1's only copy while frame 0 runs; model 1 is swapped and closed:
    frame 1's call is refused (BackendClosedError) and it is redone on model 2."""
    run_gate = threading.Event()
    first, second = Model("1", run_gate=run_gate), Model("2")
    shared = ModelSlot("m", first)  # type: ignore[arg-type]

    def swap_and_close() -> None:
        assert first.run_entered.wait(scaled(10))
        assert wait_for(lambda: first.prepared >= 2, 10)  # frame 1 prepared, waiting for the copy
        time.sleep(0.1)
        shared.swap(second)  # type: ignore[arg-type]
        first.closed = True
        run_gate.set()

    rows = run_pipeline(tmp_path, shared, streams=1, during=swap_and_close)
    assert [r["model"]["version"] for r in rows] == ["1"] + ["2"] * (FRAMES - 1)
    assert first.runs == 1


def test_only_the_inference_threads_keep_the_default_cpu_policy(tmp_path: Path) -> None:
    """Preprocessing and the post stage run under SCHED_BATCH (they never preempt inference on
    wake-up); the inference threads stay SCHED_OTHER, also when one with no next frame waiting
    decodes and commits its own result."""
    probe: list[bool] = []
    thread = threading.Thread(target=lambda: probe.append(yield_to_inference()))
    thread.start()
    thread.join()
    if not probe[0]:
        pytest.skip("this OS (or its seccomp filter) does not let a thread choose SCHED_BATCH")
    model = Model("1", copies=2)
    run_pipeline(tmp_path, ModelSlot("m", model), streams=2)  # type: ignore[arg-type]
    batch, other = {os.SCHED_BATCH}, {os.SCHED_OTHER}
    assert model.policies == {"prepare": batch, "run": other}
    assert model.finished_on, "no result decoded"
    assert set(model.finished_on) <= {("post", os.SCHED_BATCH), ("infer", os.SCHED_OTHER)}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the caller's own thread is left alone"
