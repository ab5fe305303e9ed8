"""Write the tiny sensor-window ONNX bundles the tests use (needs the `onnx` package).

    python scripts/models/make_sensor_test_models.py   # -> tests/data/window_models/*/

Each takes a window [1, 8, 2] (NWC, channels a and b) and does something whose answer the tests
can compute by hand:

* ``regression``: the mean of each channel over the window -> ``values`` [mean_a, mean_b];
* ``classification``: logits [mean_a - mean_b, mean_b - mean_a] -> ``a_high`` or ``b_high``;
* ``autoencoder``: "reconstructs" the window as half of itself -> the anomaly score (mean
  squared error) is ``0.25 * mean(x**2)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "window_models"
WINDOW, CHANNELS = 8, 2


def _model(
    name: str, nodes: list[onnx.NodeProto], out_shape: list[int], inits: list[onnx.TensorProto]
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("window", TensorProto.FLOAT, [1, WINDOW, CHANNELS])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def regression() -> onnx.ModelProto:
    """Per-channel mean."""
    node = helper.make_node("ReduceMean", ["window"], ["output"], axes=[1], keepdims=0)
    return _model("regression", [node], [1, CHANNELS], [])


def classification() -> onnx.ModelProto:
    """Which channel has the larger mean."""
    weights = numpy_helper.from_array(np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32), "w")
    nodes = [
        helper.make_node("ReduceMean", ["window"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["mean", "w"], ["output"]),
    ]
    return _model("classification", nodes, [1, 2], [weights])


def autoencoder() -> onnx.ModelProto:
    """Half of the input."""
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    node = helper.make_node("Mul", ["window", "half"], ["output"])
    return _model("autoencoder", [node], [1, WINDOW, CHANNELS], [half])


YAML = """\
name: window_{name}
version: "1"
task: {task}
family: {family}
description: test model ({name})
files:
  onnx: model.onnx
input:
  kind: window
  channels: [a, b]
  window: {window}
  rate_hz: 100
  layout: NWC
{extra}"""

BUNDLES = {
    "regression": (regression, "regression", "regression", "labels: labels.txt\n", "mean_a\nmean_b\n"),
    "classification": (
        classification,
        "classification",
        "classification",
        "labels: labels.txt\npostprocess:\n  top_k: 2\n",
        "a_high\nb_high\n",
    ),
    "autoencoder": (autoencoder, "anomaly", "reconstruction", "anomaly:\n  threshold: 1.0\n", None),
}


if __name__ == "__main__":
    for name, (build, task, family, extra, labels) in BUNDLES.items():
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(build(), folder / "model.onnx")
        (folder / "model.yaml").write_text(
            YAML.format(name=name, task=task, family=family, window=WINDOW, extra=extra), encoding="utf-8"
        )
        if labels:
            (folder / "labels.txt").write_text(labels, encoding="utf-8")
        print(f"wrote {folder}")
