"""Write the tiny ONNX models the tests use for bad-input cases (needs the `onnx` package).

    python scripts/models/make_test_models.py   # -> tests/data/no_family.onnx, saturating_int8.onnx,
                                                #    layout_end2end.onnx, layout_yolov5_nhwc.onnx,
                                                #    layout_yolox.onnx

`no_family.onnx` takes an image [1,3,32,32] and returns it unchanged: a valid model whose output
fits no decoder family, so `infer` must refuse it with a clear message.

`saturating_int8.onnx` is one int8 QDQ matrix product, [1,64] x [64,8], whose exact answer for an
input of ones is 64 in every output: the input quantises to uint8 255 and every weight is int8 127
(scale 1/127), so each pair of products is 64,770, beyond the 16 bits that ONNX Runtime's default
uint8 x int8 kernels add pairs in on x86 CPUs without VNNI (they return about 32 there).

The ``layout_*`` models prove that a layout is recognised from the file alone and decoded to the
right place in the original image. Each one's output is a fixed set of predictions (plus 0 x the
mean of the input, so the graph depends on its input), so a test knows the exact boxes:

- `layout_end2end.onnx`: input NCHW [1,3,320,320] float, output [1,300,6] (x1, y1, x2, y2, score,
  class in input pixels; unused rows 0), as Ultralytics exports with ``nms=True`` (and YOLOv10/26):
  recognised as ``yolo_end2end``, no NMS of ours, boxes mapped back through the letterbox.
- `layout_yolov5_nhwc.onnx`: input NHWC [1,256,256,3] float, output [1,100,8] (cx, cy, w, h in
  pixels, objectness, 3 class probabilities): recognised as ``yolov5`` with an NHWC input; the
  score is objectness x class probability.
- `layout_yolox.onnx`: input NCHW [1,3,320,320] float, output [1,2100,7]: YOLOX's raw head (one row
  per cell of the stride 8, 16 and 32 grids: dx, dy, log w, log h, objectness, 2 class scores):
  recognised as ``yolox`` by its row count, decoded on the grid, the image placed top-left.

The TFLite ones (float, full int8, ``_edgetpu``) come from make_tflite_test_models.py.
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


def fixed_predictions_model(name: str, input_shape: list[int], rows: np.ndarray) -> onnx.ModelProto:
    """Output = ``rows`` + 0 x mean(input): a detector whose answer the test knows exactly."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(rows.shape))
    initializers = [
        numpy_helper.from_array(rows.astype(np.float32), "rows"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["rows", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(nodes, name, [x], [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def end2end_model() -> onnx.ModelProto:
    """Two detections of an exported NMS, in input pixels of 320x320."""
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [80, 100, 240, 220, 0.9, 2]
    rows[0, 1] = [10, 60, 50, 140, 0.6, 0]
    rows[0, 2] = [0, 0, 320, 320, 0.1, 1]  # below the default threshold
    return fixed_predictions_model("layout_end2end", [1, 3, 320, 320], rows)


def yolov5_nhwc_model() -> onnx.ModelProto:
    """A YOLOv5 head on an NHWC input: one real candidate, one weak, the rest empty."""
    rows = np.zeros((1, 100, 8), np.float32)
    rows[0, 0] = [128, 96, 64, 32, 0.8, 0.1, 0.9, 0.2]  # score 0.72, class 1
    rows[0, 1] = [20, 20, 10, 10, 0.3, 0.5, 0.1, 0.1]  # score 0.15: below 0.25
    return fixed_predictions_model("layout_yolov5_nhwc", [1, 256, 256, 3], rows)


def yolox_model() -> onnx.ModelProto:
    """One candidate in cell (x 8, y 5) of the stride-16 grid: box 64x32 centred at (136, 88)."""
    rows = np.zeros((1, 2100, 7), np.float32)  # 40x40 + 20x20 + 10x10 cells at 320
    rows[0, :, 2:4] = -5.0  # empty cells: tiny boxes
    rows[0, 1600 + 5 * 20 + 8] = [0.5, 0.5, np.log(4.0), np.log(2.0), 0.9, 0.2, 0.8]  # score 0.72
    rows[0, 7] = [0, 0, 0, 0, 0.9, 0.1, 0.1]  # score 0.09: below 0.25
    return fixed_predictions_model("layout_yolox", [1, 3, 320, 320], rows)


if __name__ == "__main__":
    for name, model in (
        ("no_family", no_family_model()),
        ("saturating_int8", saturating_int8_model()),
        ("layout_end2end", end2end_model()),
        ("layout_yolov5_nhwc", yolov5_nhwc_model()),
        ("layout_yolox", yolox_model()),
    ):
        onnx.save(model, OUT / f"{name}.onnx")
        print(f"wrote {OUT / f'{name}.onnx'}")
