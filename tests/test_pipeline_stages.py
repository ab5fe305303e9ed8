"""The pipeline's three stages: order, every frame once, and a model swap between the stages."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edge_runtime.capture.files import ImagesSource
from edge_runtime.pipeline import Pipeline, SharedModel
from edge_runtime.publish.outbox import Outbox

from .broker import wait_for
from .daemon import ROOT


class Model:
    """A fake predictor that names itself in every result; ``gate`` can hold its first call."""

    def __init__(self, version: str, gate: threading.Event | None = None) -> None:
        self.version, self.gate = version, gate
        self.entered = threading.Event()
        self.model = SimpleNamespace(describe=lambda: {"name": "m", "version": version, "sha256": "x"})
        self.prepared: list[int] = []

    def prepare(self, image: Any) -> tuple[list[Any], str]:
        self.prepared.append(id(image))
        return [image], self.version  # the context says which model prepared the tensors

    def run(self, inputs: list[Any]) -> list[Any]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
            self.gate = None
        return [self.version]

    def finish(self, outputs: list[Any], context: Any) -> Any:
        assert outputs == [context], "outputs of one model decoded with another's context"
        return SimpleNamespace(task="classification", payload=lambda: {"classes": [], "ran": outputs[0]})


def test_frames_arrive_once_in_order_and_a_swap_between_stages_reprepares(tmp_path: Path) -> None:
    """While model 1 is inside its first call, the next frame is prepared by model 1 and queued;
    then model 2 is swapped in. That frame is prepared again and run by model 2: every frame is
    published once, in order, by the model that ran it, and no frame fails."""
    gate = threading.Event()
    first, second = Model("1", gate), Model("2")
    shared = SharedModel("m", first)  # type: ignore[arg-type]
    outbox = Outbox(tmp_path / "outbox.db")
    pipeline = Pipeline(
        "p", ImagesSource("p", str(ROOT / "tests" / "data" / "*.jpg")), shared, outbox, topic="t", device="d"
    )
    pipeline.start()
    try:
        assert first.entered.wait(10)
        assert wait_for(lambda: len(first.prepared) >= 2, 10)  # frame 1 prepared by model 1, queued
        shared.swap(second)  # type: ignore[arg-type]
        gate.set()
        assert wait_for(lambda: pipeline.done, 20)
    finally:
        pipeline.stop(timeout=2)
    rows = [json.loads(m.payload) for m in outbox.fetch(0, 100)]
    outbox.close()
    frames = len(list((ROOT / "tests" / "data").glob("*.jpg")))
    assert [r["frame"]["index"] for r in rows] == list(range(frames))
    assert [r["model"]["version"] for r in rows] == ["1"] + ["2"] * (frames - 1)
    assert [r["ran"] for r in rows] == [r["model"]["version"] for r in rows]
    assert pipeline.metrics.errors == 0 and pipeline.metrics.inferred == frames
