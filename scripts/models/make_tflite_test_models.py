"""Write the tiny TFLite models of the YOLO layouts the tests use, without TensorFlow.

    python scripts/models/make_tflite_test_models.py   # -> tests/data/layout_*.tflite

The files are written with the flatbuffer schema that the TFLite runtime itself ships
(``ai_edge_litert/schema_py_generated.py``, its object API ``ModelT``/``SubGraphT``/... packed by
``flatbuffers``, both installed with ``edge-runtime[tflite]``), so this needs nothing beyond the
runtime. Two runs give byte-identical files.

As the ONNX ``layout_*`` models (make_test_models.py), each one outputs a fixed set of predictions
through a real graph that depends on its input (``rows + 0 x MEAN(input)``), so a test knows the
exact boxes. They mirror what Ultralytics' TFLite exports look like: an NHWC input, and boxes
NORMALISED to 0..1 of the input (its TFLite and Edge TPU exports divide by the input size, so that
boxes and scores can share one int8 scale):

- `layout_yolov8_float32.tflite`: YOLOv8/11, input float32 [1,256,320,3] (a non-square ``imgsz``
  of [256, 320]), output float32 [1,7,1680] (cx, cy, w, h normalised, 3 class scores; 1680 =
  the cells of the stride 8/16/32 grids). Carries Ultralytics' ``metadata.json`` (names, imgsz,
  stride, task) in a zip appended to the file, as Ultralytics packs it.
- `layout_yolov8_full_integer_quant.tflite`: the same predictions, full integer: int8 input (scale
  1/255, zero point -128) -> DEQUANTIZE -> float ops -> QUANTIZE -> int8 output (scale 1/250, zero
  point -128: boxes and scores share it). Same ``metadata.json``.
- `layout_yolov8_full_integer_quant_edgetpu.tflite`: what edgetpu_compiler makes of the int8 file:
  the int8 input and output around one CUSTOM op ``edgetpu-custom-op`` (its options here are a
  placeholder, not a compiled Edge TPU program), which only the Edge TPU runtime can run.
- `layout_yolov5_float32.tflite`: YOLOv5's TF export, input float32 [1,160,160,3], output float32
  [1,1575,8] (cx, cy, w, h normalised, objectness, 3 class probabilities; 3 anchors per cell).
- `layout_end2end_float32.tflite`: NMS inside (``nms=True``), input float32 [1,320,320,3], output
  float32 [1,300,6] (x1, y1, x2, y2 normalised, score, class; unused rows 0). Carries
  ``metadata.json`` with ``end2end: true``.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tflite_writer import Graph  # sibling script, importable once its folder is on sys.path

OUT = Path(__file__).resolve().parents[2] / "tests" / "data"
NAMES = {0: "person", 1: "bicycle", 2: "car"}
INPUT_Q = (1 / 255, -128)  # Ultralytics' int8 input: pixel / 255 quantised, i.e. pixel - 128
OUTPUT_Q = (1 / 250, -128)  # int8 output: 0 .. 1.02 in steps of 0.004, 0.0 exactly at -128


def _reducer() -> tuple[int, Any]:
    options = tfl.ReducerOptionsT()
    options.keepDims = False
    return tfl.BuiltinOptions.ReducerOptions, options


def _fixed_rows(g: Graph, image: int, rows: np.ndarray, out: int) -> None:
    """``out = rows + 0 x MEAN(image)``: float ops only; ``image`` is a float tensor."""
    axes = g.tensor("mean/axes", [4], np.int32, data=np.arange(4, dtype=np.int32))
    mean = g.tensor("mean", [])
    zero = g.tensor("zero", [], data=np.zeros((), np.float32))
    nothing = g.tensor("nothing", [])
    constant = g.tensor("rows", list(rows.shape), data=rows)
    g.op(tfl.BuiltinOperator.MEAN, [image, axes], [mean], options=_reducer())
    g.op(
        tfl.BuiltinOperator.MUL,
        [mean, zero],
        [nothing],
        options=(tfl.BuiltinOptions.MulOptions, tfl.MulOptionsT()),
    )
    g.op(
        tfl.BuiltinOperator.ADD,
        [constant, nothing],
        [out],
        options=(tfl.BuiltinOptions.AddOptions, tfl.AddOptionsT()),
    )


def float_model(input_shape: list[int], rows: np.ndarray, description: str) -> bytes:
    g = Graph()
    image = g.tensor("serving_default_images:0", input_shape)
    out = g.tensor("StatefulPartitionedCall:0", list(rows.shape))
    _fixed_rows(g, image, rows, out)
    return g.model([image], [out], description)


def int8_model(input_shape: list[int], rows: np.ndarray, description: str) -> bytes:
    """int8 in -> DEQUANTIZE -> the float graph -> QUANTIZE -> int8 out."""
    g = Graph()
    image = g.tensor("serving_default_images:0", input_shape, np.int8, quant=INPUT_Q)
    out = g.tensor("StatefulPartitionedCall:0", list(rows.shape), np.int8, quant=OUTPUT_Q)
    real = g.tensor("images_dequantized", input_shape)
    g.op(tfl.BuiltinOperator.DEQUANTIZE, [image], [real], version=2)  # version 2: int8 input
    rows_real = g.tensor("rows_float", list(rows.shape))
    _fixed_rows(g, real, rows, rows_real)
    g.op(tfl.BuiltinOperator.QUANTIZE, [rows_real], [out])
    return g.model([image], [out], description)


def edgetpu_model(input_shape: list[int], output_shape: list[int], description: str) -> bytes:
    """int8 in -> ``edgetpu-custom-op`` -> int8 out, as edgetpu_compiler maps a whole graph."""
    g = Graph()
    image = g.tensor("serving_default_images:0", input_shape, np.int8, quant=INPUT_Q)
    out = g.tensor("StatefulPartitionedCall:0", output_shape, np.int8, quant=OUTPUT_Q)
    g.op(
        tfl.BuiltinOperator.CUSTOM,
        [image],
        [out],
        custom="edgetpu-custom-op",
        custom_options=b"placeholder: not a compiled Edge TPU program",
    )
    return g.model([image], [out], description)


def yolo_cells(h: int, w: int) -> int:
    return sum((h // s) * (w // s) for s in (8, 16, 32))


def yolov8_rows() -> np.ndarray:
    """[1, 4+3, N] at 256x320: two objects, a weaker duplicate NMS removes, one below 0.25.

    No value lies half-way between two steps of the int8 output scale (x 250 ends in .0, .25 or
    .75), so that quantising them has one answer whatever the rounding rule.
    """
    rows = np.zeros((1, 7, yolo_cells(256, 320)), np.float32)
    rows[0, :, 0] = [0.500, 0.561, 0.300, 0.401, 0.100, 0.851, 0.051]  # class 1, 0.851
    rows[0, :, 1] = [0.511, 0.561, 0.300, 0.401, 0.051, 0.701, 0.100]  # IoU ~0.93 with it: suppressed
    rows[0, :, 2] = [0.201, 0.300, 0.101, 0.221, 0.601, 0.021, 0.031]  # class 0, 0.601
    rows[0, :, 3] = [0.800, 0.800, 0.200, 0.200, 0.000, 0.000, 0.200]  # 0.2: below the default 0.25
    return rows


def yolov5_rows() -> np.ndarray:
    """[1, N, 5+3] at 160x160: one object (score 0.8 x 0.9 = 0.72, class 2), one weak."""
    rows = np.zeros((1, 3 * yolo_cells(160, 160), 8), np.float32)
    rows[0, 0] = [0.40, 0.50, 0.30, 0.20, 0.80, 0.05, 0.05, 0.90]
    rows[0, 1] = [0.70, 0.20, 0.10, 0.10, 0.30, 0.60, 0.10, 0.10]  # 0.18: below 0.25
    return rows


def end2end_rows() -> np.ndarray:
    """[1, 300, 6] normalised xyxy, score, class: two detections and one below 0.25."""
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [0.25, 0.3125, 0.75, 0.6875, 0.9, 2]
    rows[0, 1] = [0.03, 0.20, 0.15, 0.45, 0.6, 0]
    rows[0, 2] = [0.0, 0.0, 1.0, 1.0, 0.1, 1]
    return rows


def metadata(imgsz: list[int], **extra: Any) -> dict[str, Any]:
    """What Ultralytics writes into ``metadata.json`` (the fields a reader uses)."""
    return {
        "description": "layout test model (fixed predictions)",
        "stride": 32,
        "task": "detect",
        "batch": 1,
        "imgsz": imgsz,
        "names": NAMES,
        **extra,
    }


def models() -> dict[str, tuple[bytes, dict[str, Any] | None]]:
    v8 = yolov8_rows()
    return {
        "layout_yolov8_float32": (
            float_model([1, 256, 320, 3], v8, "yolov8 float32"),
            metadata([256, 320]),
        ),
        "layout_yolov8_full_integer_quant": (
            int8_model([1, 256, 320, 3], v8, "yolov8 full integer"),
            metadata([256, 320]),
        ),
        "layout_yolov8_full_integer_quant_edgetpu": (
            edgetpu_model([1, 256, 320, 3], list(v8.shape), "yolov8 full integer, edgetpu"),
            metadata([256, 320]),
        ),
        "layout_yolov5_float32": (float_model([1, 160, 160, 3], yolov5_rows(), "yolov5 float32"), None),
        "layout_end2end_float32": (
            float_model([1, 320, 320, 3], end2end_rows(), "end2end float32"),
            metadata([320, 320], end2end=True),
        ),
    }


def write(path: Path, flatbuffer: bytes, meta: dict[str, Any] | None) -> None:
    """The model, then (as Ultralytics does) ``metadata.json`` in a zip appended to it."""
    path.write_bytes(flatbuffer)
    if meta is not None:
        with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
            info = zipfile.ZipInfo("metadata.json", date_time=(2024, 1, 1, 0, 0, 0))  # reproducible
            zf.writestr(info, json.dumps(meta, indent=2), zipfile.ZIP_DEFLATED)


if __name__ == "__main__":
    for name, (flatbuffer, meta) in models().items():
        write(OUT / f"{name}.tflite", flatbuffer, meta)
        print(f"wrote {OUT / f'{name}.tflite'}")
