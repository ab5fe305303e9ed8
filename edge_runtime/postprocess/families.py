"""Which decoder fits a model, judged from its output shapes when no model.yaml says so."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edge_runtime.errors import ModelError
from edge_runtime.postprocess.mediapipe import known_anchors

Shape = tuple[int, ...]


def _squeeze(shape: Shape) -> Shape:
    """Drop size-1 dimensions and a dynamic batch dimension."""
    return tuple(d for i, d in enumerate(shape) if d != 1 and not (i == 0 and d == -1))


def _yolo_layout(a: int, b: int) -> str | None:
    """``[1, 4+C, N]`` (v8: fewer rows than anchors) or ``[1, N, 5+C]`` (v5); -1 = dynamic."""
    if a > 4 and b > 4:
        return "yolov8" if a < b else "yolov5"
    if a > 4 and b == -1:
        return "yolov8"
    if a == -1 and b > 5:
        return "yolov5"
    return None


# Every family, with the model.yaml lines that select it and the outputs it decodes: the message of
# a model that fits none lists them, so the user can pick one.
FAMILY_LINES: tuple[tuple[str, str, str], ...] = (
    ("classification", "task: classification", "[1, C] scores or logits"),
    ("yolov8", "task: detection", "[1, 4+C, N]: YOLOv8 / YOLO11 (cx, cy, w, h + class scores)"),
    ("yolov5", "task: detection", "[1, N, 5+C]: YOLOv5 / YOLOv7 (cx, cy, w, h, objectness + classes)"),
    ("yolo_end2end", "task: detection", "[1, N, 6]: x1, y1, x2, y2, score, class (NMS inside)"),
    ("yolox", "task: detection", "[1, N, 5+C]: YOLOX raw head, one row per cell of strides 8, 16, 32"),
    ("rtdetr", "task: detection", "[1, N, 6] cx, cy, w, h (0..1), score, class, or [1, N, 4+C]: RT-DETR"),
    ("tflite_detection_postprocess", "task: detection", "the 4 outputs of TFLite_Detection_PostProcess"),
    ("ssd", "task: detection", "boxes [1, N, 4] + scores [1, N, C], with postprocess.anchors"),
    ("mediapipe_ssd", "task: detection", "regressors [1, N, 4+2K] + classificators [1, N, C] (BlazeFace)"),
)


def _yolox_cells(input_size: tuple[int, int] | None) -> int:
    if input_size is None:
        return -2
    h, w = input_size
    return sum((h // s) * (w // s) for s in (8, 16, 32))


def _single_output(
    shape: Shape, metadata: Mapping[str, str], input_size: tuple[int, int] | None = None
) -> str | None:
    if len(_squeeze(shape)) == 1 and shape[-1] > 1:
        return "classification"
    if len(shape) != 3:
        return None
    end2end = str(metadata.get("end2end", "")).lower() == "true"
    # [1, N, 6] with a few hundred rows is an exported NMS (max_det 300); YOLOv5 with one class has
    # thousands of anchors (6300 at 320)
    if shape[2] == 6 and (end2end or 0 < shape[1] <= 1000):
        return "yolo_end2end"
    # one row per cell of strides 8/16/32 is YOLOX; YOLOv5 has 3 anchors per cell (25200 at 640)
    if shape[1] == _yolox_cells(input_size) and shape[2] > 5:
        return "yolox"
    return _yolo_layout(shape[1], shape[2])


def guess_family(
    shapes: Sequence[Shape],
    input_size: tuple[int, int] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> str | None:
    """The family the outputs fit, or None.

    Dynamic dimensions (-1) count as unknown and never match a rule that needs their value.
    ``input_size`` (height, width) tells MediaPipe anchor grids apart from TF SSD heads.
    """
    has_count = any(_squeeze(s) == () or s == (1,) for s in shapes)
    if len(shapes) == 4 and has_count and any(len(s) == 3 and s[-1] == 4 for s in shapes):
        return "tflite_detection_postprocess"
    if len(shapes) == 2 and all(len(s) == 3 for s in shapes) and shapes[0][1] == shapes[1][1]:
        if input_size is not None and known_anchors(input_size, shapes[0][1]) is not None:
            return "mediapipe_ssd"
        if 4 in (shapes[0][2], shapes[1][2]):
            return "ssd"
    if len(shapes) == 1:
        return _single_output(shapes[0], metadata or {}, input_size)
    return None


def num_classes(
    family: str, shapes: Sequence[Shape], label_offset: int = 0, declared: int | None = None
) -> int | None:
    """Number of object classes the outputs encode (None when the shapes don't say).

    ``declared``: model.yaml's ``num_classes`` of a ``yolov8`` head whose class rows are followed by
    other rows (key points, mask coefficients); ModelError when the head has fewer rows.
    """
    if family == "classification":
        return shapes[0][-1] - label_offset
    if family == "ssd":
        scores = next(s for s in shapes if s[-1] != 4) if any(s[-1] != 4 for s in shapes) else shapes[1]
        return scores[-1] - label_offset
    if family in ("yolov5", "yolox"):
        return shapes[0][-1] - 5
    if family == "yolov8":
        rows = next((s[1] for s in shapes if len(s) == 3), shapes[0][1])
        if declared is None:
            return rows - 4
        if 0 < rows < 4 + declared:
            raise ModelError(f"num_classes {declared} needs {4 + declared} output rows, the model has {rows}")
        return declared
    if family == "mediapipe_ssd":
        return min(shapes[0][-1], shapes[1][-1]) - label_offset
    return None
