"""Write the tiny ONNX models the tests use for bad-input cases (needs the `onnx` package).

    python scripts/models/make_test_models.py   # -> tests/data/no_family.onnx, saturating_int8.onnx

`no_family.onnx` takes an image [1,3,32,32] and returns it unchanged: a valid model whose output
fits no decoder family, so `infer` must refuse it with a clear message.

`saturating_int8.onnx` is one int8 QDQ matrix product, [1,64] x [64,8], whose exact answer for an
input of ones is 64 in every output: the input quantises to uint8 255 and every weight is int8 127
(scale 1/127), so each pair of products is 64,770, beyond the 16 bits that ONNX Runtime's default
uint8 x int8 kernels add pairs in on x86 CPUs without VNNI (they return about 32 there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parents[2] / "tests" / "data"


def no_family_model() -> onnx.ModelProto:
    """Identity on a 32x32 RGB image."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "no_family", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def saturating_int8_model(k: int = 64, n: int = 8) -> onnx.ModelProto:
    """input [1,k] -> QuantizeLinear (uint8, scale 1/255) -> DQ -> MatMul with DQ(int8 127) -> [1,n]."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, k])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, n])
    initializers = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "x_zero"),
        numpy_helper.from_array(np.full((k, n), 127, np.int8), "w_q"),
        numpy_helper.from_array(np.array(1 / 127, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"]),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "saturating_int8", [x], [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    for name, model in (("no_family", no_family_model()), ("saturating_int8", saturating_int8_model())):
        onnx.save(model, OUT / f"{name}.onnx")
        print(f"wrote {OUT / f'{name}.onnx'}")
