"""Decoders on hand-built tensors with known answers; NMS; family guessing."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.postprocess.classification import classify
from edge_runtime.postprocess.decode import Decoder
from edge_runtime.postprocess.detection import DetectionParams
from edge_runtime.postprocess.families import guess_family
from edge_runtime.postprocess.mediapipe import decode_mediapipe, mediapipe_anchors, split_outputs
from edge_runtime.postprocess.nms import iou_matrix, nms
from edge_runtime.postprocess.ssd import decode_boxes, ssd_anchors
from edge_runtime.postprocess.tflite_detect import decode_postprocessed
from edge_runtime.postprocess.yolo import decode_end2end, decode_yolox

LABELS = ["cat", "dog", "bird"]


def test_classify_applies_softmax_to_logits_and_ranks() -> None:
    result = classify(np.array([[1.0, 3.0, 2.0]]), LABELS, top_k=2)
    assert [c.label for c in result] == ["dog", "bird"]
    expected = np.exp(3) / np.exp([1, 3, 2]).sum()
    assert result[0].score == pytest.approx(expected, rel=1e-5)


def test_classify_keeps_probabilities_and_drops_background_column() -> None:
    probs = np.array([0.5, 0.1, 0.3, 0.1], np.float32)  # column 0 = background
    result = classify(probs, LABELS, top_k=3, label_offset=1)
    assert [(c.class_id, c.label) for c in result] == [(1, "dog"), (0, "cat"), (2, "bird")]
    assert result[0].score == pytest.approx(0.3)


def test_nms_is_class_aware_and_respects_max_detections() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    keep = nms(boxes, scores, classes, iou_threshold=0.5, max_detections=10)
    assert keep.tolist() == [0, 2, 3]  # box 1 suppressed by 0; box 2 survives (other class)
    agnostic = nms(boxes, scores, classes, iou_threshold=0.5, max_detections=10, class_agnostic=True)
    assert agnostic.tolist() == [0, 3]
    assert nms(boxes, scores, classes, iou_threshold=0.5, max_detections=1).tolist() == [0]


def test_iou_matrix_known_values() -> None:
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 7, 1.0, 0.0]], rtol=1e-6)


def _decoder(family: str, **kw: object) -> Decoder:
    defaults: dict[str, object] = {
        "labels": LABELS,
        "input_size": (100, 200),
        "output_names": ["out"],
        "detection": DetectionParams(0.25, 0.45, 100),
    }
    return Decoder(family=family, **(defaults | kw))  # type: ignore[arg-type]


def test_yolov5_decoder_multiplies_objectness_and_normalises_pixels() -> None:
    out = np.zeros((1, 3, 8), np.float32)
    out[0, 0] = [100, 50, 40, 20, 0.9, 0.1, 0.8, 0.1]  # bird-less dog at the centre
    out[0, 1] = [102, 51, 40, 20, 0.5, 0.1, 0.9, 0.1]  # overlapping dog, 0.45: suppressed
    out[0, 2] = [20, 20, 10, 10, 0.2, 0.9, 0.0, 0.0]  # 0.18 < threshold
    raw = _decoder("yolov5").detect([out])
    assert raw.class_ids.tolist() == [1]
    assert raw.scores[0] == pytest.approx(0.72)
    np.testing.assert_allclose(raw.boxes[0], [80 / 200, 40 / 100, 120 / 200, 60 / 100], atol=1e-6)


def test_yolov8_decoder_reads_channels_first_layout() -> None:
    out = np.zeros((1, 4 + 3, 5), np.float32)
    out[0, :4, 2] = [50, 50, 20, 40]
    out[0, 4 + 2, 2] = 0.95  # bird
    out[0, :4, 4] = [150, 50, 20, 40]
    out[0, 4 + 0, 4] = 0.6  # cat
    raw = _decoder("yolov8").detect([out])
    assert raw.class_ids.tolist() == [2, 0]
    np.testing.assert_allclose(raw.boxes[0], [40 / 200, 30 / 100, 60 / 200, 70 / 100], atol=1e-6)


def _postprocess_outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.zeros((1, 10, 4), np.float32)
    boxes[0, 0] = [0.1, 0.2, 0.5, 0.6]  # ymin, xmin, ymax, xmax
    boxes[0, 1] = [0.0, 0.0, 0.3, 0.3]
    classes = np.zeros((1, 10), np.float32)
    classes[0, :2] = [2, 0]
    scores = np.zeros((1, 10), np.float32)
    scores[0, :2] = [0.9, 0.3]
    return boxes, classes, scores, np.array([2.0], np.float32)


def test_tflite_postprocess_outputs_by_name() -> None:
    boxes, classes, scores, count = _postprocess_outputs()
    names = [
        "TFLite_Detection_PostProcess",
        "TFLite_Detection_PostProcess:1",
        "TFLite_Detection_PostProcess:2",
        "TFLite_Detection_PostProcess:3",
    ]
    raw = decode_postprocessed([boxes, classes, scores, count], names)
    np.testing.assert_allclose(raw.boxes, [[0.2, 0.1, 0.6, 0.5], [0, 0, 0.3, 0.3]])
    assert raw.class_ids.tolist() == [2, 0] and raw.scores.tolist() == pytest.approx([0.9, 0.3])


def test_tflite_postprocess_outputs_in_tf2_order_without_names() -> None:
    boxes, classes, scores, count = _postprocess_outputs()
    # TF2 converters often emit (scores, boxes, count, classes)
    raw = _decoder("tflite_detection_postprocess", output_names=["a", "b", "c", "d"]).detect(
        [scores, boxes, count, classes]
    )
    assert raw.class_ids.tolist() == [2, 0]
    np.testing.assert_allclose(raw.boxes[0], [0.2, 0.1, 0.6, 0.5])


def test_ssd_anchor_count_and_first_anchors_match_tf_generator() -> None:
    anchors = ssd_anchors((19, 10, 5, 3, 2, 1))
    assert anchors.shape == (1917, 4)
    # lowest layer, first cell: (0.1, 1.0), (0.2, 2.0), (0.2, 0.5) at centre 0.5/19
    c = 0.5 / 19
    np.testing.assert_allclose(anchors[0], [c, c, 0.1, 0.1], rtol=1e-5)
    np.testing.assert_allclose(anchors[1], [c, c, 0.2 / np.sqrt(2), 0.2 * np.sqrt(2)], rtol=1e-5)
    # last anchor: 1x1 grid, interpolated scale sqrt(0.95 * 1.0), aspect 1
    np.testing.assert_allclose(anchors[-1], [0.5, 0.5, np.sqrt(0.95), np.sqrt(0.95)], rtol=1e-5)


def test_ssd_zero_encoding_decodes_to_the_anchor() -> None:
    anchors = np.array([[0.5, 0.4, 0.2, 0.1]], np.float32)
    np.testing.assert_allclose(
        decode_boxes(np.zeros((1, 4), np.float32), anchors, (10, 10, 5, 5)),
        [[0.35, 0.4, 0.45, 0.6]],
        atol=1e-6,
    )
    shifted = decode_boxes(np.array([[10.0, 0, 0, 0]], np.float32), anchors, (10, 10, 5, 5))
    np.testing.assert_allclose(shifted, [[0.35, 0.6, 0.45, 0.8]], atol=1e-6)


@pytest.mark.parametrize(
    ("shapes", "family"),
    [
        ([(1, 1000)], "classification"),
        ([(-1, 1001)], "classification"),
        ([(1, 84, 8400)], "yolov8"),
        ([(-1, 22, -1)], "yolov8"),
        ([(1, 25200, 85)], "yolov5"),
        ([(1, 1917, 4), (1, 1917, 91)], "ssd"),
        ([(1, 10, 4), (1, 10), (1, 10), (1,)], "tflite_detection_postprocess"),
        ([(1,), (1, 10, 4), (1, 10), (1, 10)], "tflite_detection_postprocess"),  # TF2 order
        ([(1, 300, 6)], "yolo_end2end"),  # exported with NMS (max_det 300) / YOLOv10, YOLO26
        ([(1, 6300, 6)], "yolov5"),  # YOLOv5 with one class at 320: 3 anchors x 2100 cells
    ],
)
def test_guess_family_from_output_shapes(shapes: list[tuple[int, ...]], family: str) -> None:
    assert guess_family(shapes) == family


def test_guess_family_tells_mediapipe_anchor_grids_from_tf_ssd_by_the_input_size() -> None:
    blazeface = [(1, 896, 16), (1, 896, 1)]
    assert guess_family(blazeface, (128, 128)) == "mediapipe_ssd"
    assert guess_family([(1, 2304, 16), (1, 2304, 1)], (192, 192)) == "mediapipe_ssd"  # full range
    assert guess_family(blazeface, (300, 300)) is None  # no known anchor grid; no 4-column boxes
    assert guess_family([(1, 1917, 4), (1, 1917, 91)], (300, 300)) == "ssd"


def test_guess_family_is_none_for_outputs_of_no_family() -> None:
    assert guess_family([(1, 3, 224, 224)]) is None
    assert guess_family([(1, 5, 6), (1, 7)]) is None


def test_mediapipe_anchors_are_blazeface_short_range_grid() -> None:
    anchors = mediapipe_anchors((128, 128), (8, 16, 16, 16))
    assert anchors.shape == (896, 2)  # 16x16 cells x 2 + 8x8 cells x 6
    np.testing.assert_allclose(anchors[:2], [[0.5 / 16, 0.5 / 16]] * 2)
    np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16])  # x moves first
    np.testing.assert_allclose(anchors[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_mediapipe_decoder_offsets_boxes_from_anchor_centres_in_input_pixels() -> None:
    anchors = mediapipe_anchors((128, 128), (8, 16, 16, 16))
    regressors = np.zeros((1, 896, 16), np.float32)
    scores = np.zeros((1, 896, 1), np.float32)
    regressors[0, 600, :4] = [6.4, -12.8, 32.0, 64.0]  # dx, dy, w, h in pixels of 128
    scores[0, 600, 0] = 0.9
    raw = decode_mediapipe(regressors, scores, anchors, (128, 128), score_threshold=0.5)
    cx, cy = anchors[600] + [0.05, -0.1]
    np.testing.assert_allclose(raw.boxes, [[cx - 0.125, cy - 0.25, cx + 0.125, cy + 0.25]], atol=1e-6)
    assert raw.scores.tolist() == pytest.approx([0.9]) and raw.class_ids.tolist() == [0]


def test_mediapipe_outputs_are_told_apart_by_name_then_width() -> None:
    boxes, scores = np.zeros((1, 896, 16), np.float32), np.zeros((1, 896, 1), np.float32)
    assert split_outputs([scores, boxes], ["classificators", "regressors"])[0] is boxes
    assert split_outputs([scores, boxes], ["a", "b"])[0] is boxes


def test_end2end_rows_are_final_boxes_in_input_pixels() -> None:
    out = np.zeros((1, 300, 6), np.float32)
    out[0, 0] = [32, 64, 160, 320, 0.9, 3]
    out[0, 1] = [0, 0, 10, 10, 0.1, 1]  # below the threshold
    raw = decode_end2end(out, (320, 640), score_threshold=0.25)  # height 320, width 640
    np.testing.assert_allclose(raw.boxes, [[0.05, 0.2, 0.25, 1.0]], atol=1e-6)
    assert raw.class_ids.tolist() == [3] and raw.scores.tolist() == pytest.approx([0.9])


def test_exact_ties_rank_the_lower_class_id_first() -> None:
    scores = np.zeros(1000, np.float32)
    scores[[285, 282, 900]] = [0.4, 0.4, 0.2]
    assert [c.class_id for c in classify(scores, None, top_k=3, apply_softmax=False)] == [282, 285, 900]


def test_guess_family_tells_yolox_from_yolov5_by_rows_per_grid_cell() -> None:
    assert guess_family([(1, 8400, 85)], (640, 640)) == "yolox"  # one row per cell of 8/16/32
    assert guess_family([(1, 25200, 85)], (640, 640)) == "yolov5"  # three anchors per cell
    assert guess_family([(1, 2100, 7)], (320, 320)) == "yolox"
    assert guess_family([(1, 8400, 85)]) == "yolov5"  # without the input size: the v5 layout


def test_yolox_decoder_adds_the_cell_and_scales_by_the_stride() -> None:
    out = np.zeros((1, 8 * 8 + 4 * 4 + 2 * 2, 6), np.float32)  # 64x64 input
    out[0, 64 + 1 * 4 + 2] = [0.5, 0.5, np.log(2.0), 0.0, 0.8, 0.5]  # stride 16, cell x 2, y 1
    raw = decode_yolox(out, (64, 64), score_threshold=0.25)
    cx, cy, w, h = 2.5 * 16, 1.5 * 16, 32, 16
    np.testing.assert_allclose(
        raw.boxes, [[(cx - w / 2) / 64, (cy - h / 2) / 64, (cx + w / 2) / 64, (cy + h / 2) / 64]], atol=1e-6
    )
    assert raw.scores.tolist() == pytest.approx([0.4]) and raw.class_ids.tolist() == [0]


def test_yolov8_decoder_reads_past_the_rows_after_its_classes() -> None:
    """A pose head [1, 4+1+3, N]: key point values (here 0.9) are not class scores."""
    head = np.zeros((1, 8, 2), np.float32)
    head[0, :4, 0] = [50, 50, 20, 20]
    head[0, 4, 0] = 0.6  # the one class
    head[0, 5:, :] = 0.9  # key points
    decoder = Decoder(family="yolov8", labels=None, input_size=(100, 100), output_names=["o"], num_classes=1)
    raw = decoder.detect([head])
    assert raw.class_ids.tolist() == [0] and raw.scores.tolist() == pytest.approx([0.6])
    np.testing.assert_allclose(raw.boxes, [[0.4, 0.4, 0.6, 0.6]], atol=1e-6)
    assert Decoder(family="yolov8", labels=None, input_size=(100, 100), output_names=["o"]).detect(
        [head]
    ).class_ids.tolist() == [1, 1]  # without num_classes: key point rows read as classes


@pytest.mark.parametrize("layout", ["score_class", "class_scores"])
def test_rtdetr_rows_are_normalised_centre_boxes_without_nms(layout: str) -> None:
    """Ultralytics 8.4 RT-DETR exports (cx, cy, w, h, score, class); earlier ones C class scores."""
    boxes = np.array([[0.5, 0.5, 0.2, 0.4], [0.52, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]], np.float32)
    if layout == "score_class":
        tail = np.array([[0.9, 2], [0.8, 2], [0.1, 0]], np.float32)
    else:
        tail = np.array([[0.0, 0.1, 0.9], [0.0, 0.0, 0.8], [0.1, 0.05, 0.0]], np.float32)
    out = np.concatenate([boxes, tail], axis=1)[None]
    raw = Decoder(family="rtdetr", labels=None, input_size=(64, 64), output_names=["o"]).detect([out])
    assert raw.class_ids.tolist() == [2, 2]  # overlapping queries both kept: no NMS
    assert raw.scores.tolist() == pytest.approx([0.9, 0.8])
    np.testing.assert_allclose(raw.boxes[0], [0.4, 0.3, 0.6, 0.7], atol=1e-6)
