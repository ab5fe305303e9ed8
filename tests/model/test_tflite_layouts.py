"""TFLite exports of the YOLO layouts (float, full int8, ``_edgetpu``), from the file alone.

The ``layout_*.tflite`` models (scripts/models/make_tflite_test_models.py) output fixed
predictions through a real graph, as Ultralytics' TFLite exports lay them out: NHWC input, boxes
normalised to 0..1 of the input. The predictions are restated here and decoded by a reference
written for these tests (input-normalised boxes -> input pixels -> through the letterbox the image
was placed in -> normalised to the original image), so the daemon's path (family guess, input
encoding, dequantisation, decoder, NMS, mapping back) is checked against numbers worked out
without it. Images are the non-square coffee (600x400) and chelsea (451x300).
"""

from __future__ import annotations

import gc
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge_runtime.errors import AcceleratorError
from edge_runtime.inference import BackendOptions
from edge_runtime.model.loader import load_model
from edge_runtime.model.runner import Runner

from ..conftest import DATA, ROOT, image, run_cli, run_cli_process

V8_FLOAT = DATA / "layout_yolov8_float32.tflite"
V8_INT8 = DATA / "layout_yolov8_full_integer_quant.tflite"
V8_EDGETPU = DATA / "layout_yolov8_full_integer_quant_edgetpu.tflite"
V5_FLOAT = DATA / "layout_yolov5_float32.tflite"
END2END = DATA / "layout_end2end_float32.tflite"

NAMES = ["person", "bicycle", "car"]  # the metadata.json packed into the v8 and end-to-end files
SCORE, IOU = 0.25, 0.45  # the project's default thresholds
# Float paths reproduce the reference to float32 rounding; JSON scores carry 4 decimals.
ATOL = 1e-4

# The candidates that are not all zero, as the generator wrote them (all others are zeros)
V8_INPUT = (256, 320)  # (height, width): Ultralytics imgsz [256, 320]
V8_ROWS = np.array(  # cx, cy, w, h (0..1 of the input), class scores
    [
        [0.500, 0.561, 0.300, 0.401, 0.100, 0.851, 0.051],
        [0.511, 0.561, 0.300, 0.401, 0.051, 0.701, 0.100],
        [0.201, 0.300, 0.101, 0.221, 0.601, 0.021, 0.031],
        [0.800, 0.800, 0.200, 0.200, 0.000, 0.000, 0.200],
    ]
)
INT8_OUTPUT = (1 / 250, -128)  # the int8 output's scale and zero point
V5_INPUT = (160, 160)
V5_ROWS = np.array(  # cx, cy, w, h, objectness, class probabilities
    [[0.40, 0.50, 0.30, 0.20, 0.80, 0.05, 0.05, 0.90], [0.70, 0.20, 0.10, 0.10, 0.30, 0.60, 0.10, 0.10]]
)
E2E_INPUT = (320, 320)
E2E_ROWS = np.array(  # x1, y1, x2, y2 (0..1 of the input), score, class
    [[0.25, 0.3125, 0.75, 0.6875, 0.9, 2], [0.03, 0.20, 0.15, 0.45, 0.6, 0], [0.0, 0.0, 1.0, 1.0, 0.1, 1]]
)

Expected = list[tuple[int, float, list[float]]]


# ---- the reference decoder ----------------------------------------------------------------------


def placement(image_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where a letterbox puts the image: (left, top, resized width, resized height).

    As Ultralytics' LetterBox: one gain, the resized size rounded, the padding split with the odd
    pixel after the image. (Its scale_boxes maps back with the gain and a padding rounded again,
    which can be one input pixel off where LetterBox put the image; this maps back through the
    placement itself.)
    """
    (ih, iw), (h, w) = image_hw, input_hw
    gain = min(h / ih, w / iw)
    nw, nh = round(iw * gain), round(ih * gain)
    return (w - nw) // 2, (h - nh) // 2, nw, nh


def to_original(
    xyxy_px: npt.NDArray[Any], image_hw: tuple[int, int], input_hw: tuple[int, int]
) -> list[float]:
    """Input-pixel xyxy -> 0..1 of the original image."""
    left, top, nw, nh = placement(image_hw, input_hw)
    x = (xyxy_px[0::2] - left) / nw
    y = (xyxy_px[1::2] - top) / nh
    return [float(np.clip(v, 0, 1)) for v in (x[0], y[0], x[1], y[1])]


def iou(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def reference(
    boxes_xywh: npt.NDArray[Any],
    class_scores: npt.NDArray[Any],
    image_hw: tuple[int, int],
    input_hw: tuple[int, int],
) -> Expected:
    """Normalised centre boxes + class scores -> threshold, per-class greedy NMS, original image."""
    h, w = input_hw
    px = boxes_xywh * [w, h, w, h]
    xyxy = np.stack(
        [px[:, 0] - px[:, 2] / 2, px[:, 1] - px[:, 3] / 2, px[:, 0] + px[:, 2] / 2, px[:, 1] + px[:, 3] / 2],
        1,
    )
    classes, scores = class_scores.argmax(1), class_scores.max(1)
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] < SCORE:
            break
        if all(classes[k] != classes[i] or iou(xyxy[k], xyxy[i]) <= IOU for k in kept):
            kept.append(int(i))
    return [(int(classes[i]), float(scores[i]), to_original(xyxy[i], image_hw, input_hw)) for i in kept]


def quantised(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """What the int8 output carries: each value on the output's grid (none lies half-way)."""
    scale, zero = INT8_OUTPUT
    q = np.clip(np.rint(values / scale) + zero, -128, 127)
    return (q - zero) * scale


def v8_expected(image_hw: tuple[int, int], int8: bool = False) -> Expected:
    rows = quantised(V8_ROWS) if int8 else V8_ROWS
    return reference(rows[:, :4], rows[:, 4:], image_hw, V8_INPUT)


def shape_of(name: str) -> tuple[int, int]:
    h, w = cv2.imread(str(image(name))).shape[:2]
    return h, w


def assert_found(found: list[dict[str, Any]], expected: Expected, labels: list[str] | None) -> None:
    assert [d["class_id"] for d in found] == [c for c, _, _ in expected]
    assert [d["label"] for d in found] == [labels[c] if labels else str(c) for c, _, _ in expected]
    np.testing.assert_allclose([d["score"] for d in found], [s for _, s, _ in expected], atol=ATOL)
    np.testing.assert_allclose([d["box"] for d in found], [b for _, _, b in expected], atol=ATOL)


def _cli_detections(model: Path, name: str) -> list[dict[str, Any]]:
    result = run_cli("infer", model, image(name), "--json")
    assert result.code == 0, result.err
    (line,) = result.json_lines()
    detections: list[dict[str, Any]] = line["detections"]
    return detections


# ---- the tests ------------------------------------------------------------------------------------


def test_the_committed_models_are_what_the_script_writes() -> None:
    """The flatbuffer byte for byte, and the same metadata.json (zip compression may differ by
    zlib version, so the archive is compared by content)."""
    sys.path.insert(0, str(ROOT / "scripts" / "models"))
    import make_tflite_test_models as make

    for name, (flatbuffer, meta) in make.models().items():
        committed = (DATA / f"{name}.tflite").read_bytes()
        assert committed[: len(flatbuffer)] == flatbuffer, name
        if meta is None:
            assert len(committed) == len(flatbuffer), name
        else:
            with zipfile.ZipFile(DATA / f"{name}.tflite") as zf:
                assert json.loads(zf.read("metadata.json")) == json.loads(json.dumps(meta)), name


def test_the_reference_sees_what_the_models_were_made_to_show() -> None:
    """Two boxes out of four candidates: the duplicate (IoU ~0.93) is suppressed, 0.2 dropped."""
    found = v8_expected(shape_of("coffee"))
    assert [(c, round(s, 3)) for c, s, _ in found] == [(1, 0.851), (0, 0.601)]
    assert [(c, round(s, 3)) for c, s, _ in v8_expected(shape_of("coffee"), int8=True)] == [
        (1, 0.852),
        (0, 0.6),
    ]


def test_ultralytics_float_tflite_through_the_cli_process() -> None:
    """NHWC float input [1,256,320,3], output [1,7,1680] with boxes normalised to the input;
    labels from the metadata.json packed into the file; coffee letterboxed to 320x213 + 21 rows."""
    result = run_cli_process("infer", V8_FLOAT, image("coffee"), "--json")
    assert result.code == 0, result.err
    (line,) = result.json_lines()
    assert line["model"]["backend"] == "tflite"
    assert_found(line["detections"], v8_expected(shape_of("coffee")), NAMES)


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
@pytest.mark.parametrize("model", [V8_FLOAT, V8_INT8], ids=["float32", "int8"])
def test_ultralytics_tflite_through_load_model_and_runner(model: Path, name: str) -> None:
    """The Runner's three stages, as the daemon's pipelines call them; the int8 file's output is
    dequantised with its own scale and zero point before decoding."""
    loaded = load_model(model)
    try:
        runner = Runner(loaded)
        assert loaded.spec.family == "yolov8" and loaded.labels == NAMES
        inputs, context = runner.prepare(cv2.imread(str(image(name))))
        result = runner.finish(runner.run(inputs), context)
    finally:
        loaded.close()
    int8 = model == V8_INT8
    expected = v8_expected(shape_of(name), int8=int8)
    assert_found(result.payload()["detections"], expected, NAMES)


@pytest.mark.parametrize("model", [V8_FLOAT, V8_INT8], ids=["float32", "int8"])
def test_the_input_tensor_is_the_letterboxed_image_in_the_inputs_own_encoding(model: Path) -> None:
    """float32: RGB / 255; int8 (scale 1/255, zero point -128): RGB - 128, exactly."""
    bgr = cv2.imread(str(image("chelsea")))
    left, top, nw, nh = placement(bgr.shape[:2], V8_INPUT)
    canvas = np.full((*V8_INPUT, 3), 114, np.uint8)
    canvas[top : top + nh, left : left + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    rgb = canvas[:, :, ::-1][np.newaxis]
    loaded = load_model(model)
    try:
        (tensor,), _ = Runner(loaded).prepare(bgr)
    finally:
        loaded.close()
    if model == V8_INT8:
        assert tensor.dtype == np.int8
        np.testing.assert_array_equal(tensor, (rgb.astype(np.int16) - 128).astype(np.int8))
    else:
        assert tensor.dtype == np.float32
        np.testing.assert_allclose(tensor, rgb / 255.0, atol=1e-6)


def test_yolov5_tflite_scores_objectness_times_class_with_normalised_boxes() -> None:
    """[1,1575,8] at 160x160 (YOLOv5's TF export: xywh normalised); no metadata, so no names."""
    found = _cli_detections(V5_FLOAT, "coffee")
    expected = reference(V5_ROWS[:, :4], V5_ROWS[:, 5:] * V5_ROWS[:, 4:5], shape_of("coffee"), V5_INPUT)
    assert [(c, round(s, 2)) for c, s, _ in expected] == [(2, 0.72)]
    assert_found(found, expected, None)


def test_end_to_end_tflite_with_normalised_corners() -> None:
    """[1,300,6] x1, y1, x2, y2 normalised, score, class: the model's own NMS, only filtered."""
    found = _cli_detections(END2END, "chelsea")
    image_hw = shape_of("chelsea")
    kept = E2E_ROWS[E2E_ROWS[:, 4] >= SCORE]
    expected = [(int(r[5]), float(r[4]), to_original(r[:4] * 320, image_hw, E2E_INPUT)) for r in kept]
    assert len(expected) == 2
    assert_found(found, expected, NAMES)


# ---- the _edgetpu.tflite variant ---------------------------------------------------------------

EDGETPU_TEXT = ("compiled for the Edge TPU", "Edge TPU runtime", "the CPU cannot run it")


def test_edgetpu_model_without_its_runtime_says_so_in_the_cli_process() -> None:
    """libedgetpu is not installed here: the one error names the Edge TPU, what to check and the
    file that runs on the CPU; never LiteRT's "unresolved custom op", nor a traceback."""
    result = run_cli_process("infer", V8_EDGETPU, image("coffee"))
    assert result.code == 1
    for text in (
        *EDGETPU_TEXT,
        "libedgetpu.so.1",
        "libedgetpu1-std",
        "layout_yolov8_full_integer_quant.tflite next to it",
    ):
        assert text in result.err, (text, result.err)
    assert "unresolved" not in result.err and "Traceback" not in result.err
    assert "Exception ignored" not in result.err


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "options",
    [
        BackendOptions(),  # auto: CPU fallback allowed
        BackendOptions(accelerator="edgetpu", allow_cpu_fallback=True),
        BackendOptions(accelerator="cpu"),
        BackendOptions(accelerator="xnnpack"),
    ],
    ids=["auto", "edgetpu-with-fallback", "cpu", "xnnpack"],
)
def test_edgetpu_model_is_refused_clearly_even_when_cpu_fallback_is_allowed(options: BackendOptions) -> None:
    with pytest.raises(AcceleratorError) as info:
        load_model(V8_EDGETPU, "tflite", options)
    message = str(info.value)
    for text in EDGETPU_TEXT:
        assert text in message
    assert "unresolved" not in message
    del info
    gc.collect()  # a half-made delegate goes here, under this test's filter


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_edgetpu_model_alone_names_the_file_it_was_compiled_from(tmp_path: Path) -> None:
    alone = tmp_path / V8_EDGETPU.name
    alone.write_bytes(V8_EDGETPU.read_bytes())
    with pytest.raises(
        AcceleratorError, match=r"the model it was compiled from \(layout_yolov8_full_integer_quant\.tflite\)"
    ):
        load_model(alone)
    gc.collect()
