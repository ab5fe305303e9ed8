"""Write the tiny ONNX models the tests use for bad-input cases (needs the `onnx` package).

    python scripts/make_test_models.py   # -> tests/data/no_family.onnx

`no_family.onnx` takes an image [1,3,32,32] and returns it unchanged: a valid model whose output
fits no decoder family, so `infer` must refuse it with a clear message.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

OUT = Path(__file__).resolve().parents[1] / "tests" / "data"


def no_family_model() -> onnx.ModelProto:
    """Identity on a 32x32 RGB image."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "no_family", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    onnx.save(no_family_model(), OUT / "no_family.onnx")
    print(f"wrote {OUT / 'no_family.onnx'}")
