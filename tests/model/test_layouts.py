"""Layouts users bring, recognised from the file alone and decoded to the right place.

The ``layout_*`` ONNX models (scripts/models/make_test_models.py) output fixed predictions, so the
exact boxes are known; BlazeFace is MediaPipe's real face detector (scripts/models/fetch_blazeface.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.postprocess.nms import iou_matrix

from ..conftest import DATA, image, run_cli

BLAZEFACE = DATA / "face_detection_short_range.tflite"
# The astronaut's face as the trained YOLOv8n (nudenet's) and Ultralytics both box it
FACE = [0.3385, 0.1622, 0.5350, 0.3505]


def _detections(model: Path, name: str, *flags: str) -> list[dict[str, object]]:
    result = run_cli("infer", model, image(name), "--json", *flags)
    assert result.code == 0, result.err
    (line,) = result.json_lines()
    detections: list[dict[str, object]] = line["detections"]
    return detections


def test_end2end_output_is_recognised_and_mapped_back_through_the_letterbox() -> None:
    """[1,300,6] rows in input pixels; coffee (600x400) sits in 320x213 with 53 rows of padding."""
    found = _detections(DATA / "layout_end2end.onnx", "coffee")
    assert [(d["class_id"], d["score"]) for d in found] == [(2, 0.9), (0, 0.6)]  # 0.1 left out
    scale_x, scale_y, pad_y = 320 / 600, 213 / 400, 53
    expected = [
        [
            80 / scale_x / 600,
            (100 - pad_y) / scale_y / 400,
            240 / scale_x / 600,
            (220 - pad_y) / scale_y / 400,
        ],
        [10 / scale_x / 600, (60 - pad_y) / scale_y / 400, 50 / scale_x / 600, (140 - pad_y) / scale_y / 400],
    ]
    np.testing.assert_allclose([d["box"] for d in found], expected, atol=1e-4)


def test_yolov5_head_on_an_nhwc_input_scores_objectness_times_class() -> None:
    found = _detections(DATA / "layout_yolov5_nhwc.onnx", "astronaut")  # 512x512 -> 256x256
    assert [(d["class_id"], d["score"]) for d in found] == [(1, 0.72)]
    np.testing.assert_allclose(found[0]["box"], [96 / 256, 80 / 256, 160 / 256, 112 / 256], atol=1e-4)


def test_yolox_raw_head_is_decoded_on_its_grid_with_the_image_top_left() -> None:
    """coffee (600x400) fills 320x213 from the top-left corner: no offset to take away."""
    found = _detections(DATA / "layout_yolox.onnx", "coffee")
    assert [(d["class_id"], d["score"]) for d in found] == [(1, 0.72)]
    np.testing.assert_allclose(found[0]["box"], [104 / 320, 72 / 213, 168 / 320, 104 / 213], atol=1e-4)


def test_blazeface_from_the_file_alone_finds_the_one_face() -> None:
    """MediaPipe's short-range model (128x128, 896 anchors): no model.yaml, one face, right place."""
    found = _detections(BLAZEFACE, "astronaut")
    assert len(found) == 1
    assert iou_matrix(np.array([found[0]["box"]]), np.array([FACE]))[0, 0] >= 0.8
    assert float(found[0]["score"]) > 0.8  # type: ignore[arg-type]
    for name in ("coffee", "chelsea", "rocket"):
        assert _detections(BLAZEFACE, name) == []


@pytest.mark.parametrize(
    "anchors",
    ["", "  anchors: {generator: mediapipe, strides: [8, 16, 16, 16]}\n"],
    ids=["known-options", "explicit-anchors"],
)
def test_blazeface_bundle_selects_its_family_with_one_line(tmp_path: Path, anchors: str) -> None:
    bundle = tmp_path / "face"
    bundle.mkdir()
    shutil.copy(BLAZEFACE, bundle / "face.tflite")
    (bundle / "labels.txt").write_text("face\n")
    (bundle / "model.yaml").write_text(
        "name: face\ntask: detection\nfiles: {tflite: face.tflite}\nlabels: labels.txt\n"
        "family: mediapipe_ssd\n"
        "preprocess: {resize: letterbox, pad_value: 0, mean: [127.5, 127.5, 127.5],\n"
        "             std: [127.5, 127.5, 127.5]}\n"
        f"postprocess:\n  score_threshold: 0.5\n{anchors}"
    )
    found = _detections(bundle, "astronaut")
    assert [d["label"] for d in found] == ["face"]
    assert iou_matrix(np.array([found[0]["box"]]), np.array([FACE]))[0, 0] >= 0.8


def test_mediapipe_anchors_that_do_not_fit_the_outputs_are_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "face"
    bundle.mkdir()
    shutil.copy(BLAZEFACE, bundle / "face.tflite")
    (bundle / "model.yaml").write_text(
        "name: face\ntask: detection\nfiles: {tflite: face.tflite}\nfamily: mediapipe_ssd\n"
        "postprocess: {anchors: {generator: mediapipe, strides: [8, 16]}}\n"
    )
    result = run_cli("infer", bundle, image("astronaut"))
    assert result.code == 2
    assert "anchors" in result.err and "896" in result.err


def test_a_model_that_fits_no_family_is_described_with_every_family_line() -> None:
    result = run_cli("infer", DATA / "no_family.onnx", image("coffee"))
    assert result.code == 2
    assert "input [1, 3, 32, 32] float32" in result.err
    assert "output [1, 3, 32, 32] float32" in result.err
    assert "metadata: none" in result.err
    for family in ("classification", "yolov8", "yolov5", "yolo_end2end", "ssd", "mediapipe_ssd"):
        assert f"family: {family} " in result.err


def test_ultralytics_metadata_packed_into_a_tflite_names_the_classes(tmp_path: Path) -> None:
    """Ultralytics appends a zip with metadata.json to its .tflite exports: names come from it."""
    import zipfile

    model = tmp_path / "face_float16.tflite"
    shutil.copy(BLAZEFACE, model)
    with zipfile.ZipFile(model, "a") as zf:
        zf.writestr("metadata.json", '{"names": {"0": "face"}, "imgsz": [128, 128], "stride": 8}')
    found = _detections(model, "astronaut")
    assert [d["label"] for d in found] == ["face"]


def test_a_fixed_batch_above_one_is_refused_with_what_to_export(tmp_path: Path) -> None:
    """Frames run one at a time: a [2,3,H,W] input gets a message, not ONNX Runtime's shape error."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [2, 3, 64, 64])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["output0"], axes=[2, 3], keepdims=0)], "b2", [x], [y]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"task": "classify", "imgsz": "[64, 64]"})  # as Ultralytics' batch=2
    onnx.save(model, tmp_path / "batch2.onnx")
    result = run_cli("infer", tmp_path / "batch2.onnx", image("coffee"), "--json")
    assert result.code != 0 and result.out == ""
    assert "fixed batch of 2" in result.err and "batch 1" in result.err
    assert "Traceback" not in result.err
