"""Which decoder fits a model, judged from its output shapes when no model.yaml says so."""

from __future__ import annotations

from collections.abc import Sequence

from edge_runtime.errors import ModelError

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


def guess_family(shapes: Sequence[Shape]) -> str:
    """``classification | ssd | tflite_detection_postprocess | yolov5 | yolov8`` or ModelError.

    Dynamic dimensions (-1) count as unknown and never match a rule that needs their value.
    """
    has_count = any(_squeeze(s) == () or s == (1,) for s in shapes)
    if len(shapes) == 4 and has_count and any(len(s) == 3 and s[-1] == 4 for s in shapes):
        return "tflite_detection_postprocess"
    if len(shapes) == 2 and all(len(s) == 3 for s in shapes):
        a, b = shapes
        if a[1] == b[1] and 4 in (a[2], b[2]):
            return "ssd"
    if len(shapes) == 1:
        shape = shapes[0]
        if len(_squeeze(shape)) == 1 and shape[-1] > 1:
            return "classification"
        if len(shape) == 3:
            yolo = _yolo_layout(shape[1], shape[2])
            if yolo:
                return yolo
    listed = ", ".join(str(list(s)) for s in shapes)
    raise ModelError(
        f"outputs {listed} fit no known family (classification [1,C], ssd boxes+scores, "
        "TFLite_Detection_PostProcess, yolov5 [1,N,5+C], yolov8 [1,4+C,N]); "
        "add a model.yaml next to the model with task: and family:"
    )


def num_classes(family: str, shapes: Sequence[Shape], label_offset: int = 0) -> int | None:
    """Number of object classes the outputs encode (None when the shapes don't say)."""
    if family == "classification":
        return shapes[0][-1] - label_offset
    if family == "ssd":
        scores = next(s for s in shapes if s[-1] != 4) if any(s[-1] != 4 for s in shapes) else shapes[1]
        return scores[-1] - label_offset
    if family == "yolov5":
        return shapes[0][-1] - 5
    if family == "yolov8":
        return shapes[0][1] - 4
    return None
