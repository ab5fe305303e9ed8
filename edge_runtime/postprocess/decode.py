"""One entry point from dequantised output tensors to results, chosen by the model's family."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import ModelError
from edge_runtime.postprocess.classification import classify, looks_like_probabilities, softmax
from edge_runtime.postprocess.detection import DetectionParams, RawDetections, select
from edge_runtime.postprocess.mediapipe import decode_mediapipe, split_outputs
from edge_runtime.postprocess.ssd import decode_ssd
from edge_runtime.postprocess.tflite_detect import decode_postprocessed
from edge_runtime.postprocess.yolo import (
    decode_end2end,
    decode_rtdetr,
    decode_yolov5,
    decode_yolov8,
    decode_yolox,
)
from edge_runtime.types import Classification

Arr = npt.NDArray[np.float32]


def activate(x: Arr, activation: str) -> Arr:
    """Apply ``sigmoid``/``softmax`` (over the last axis) or nothing."""
    if activation == "sigmoid":
        # clipped: exp(88) overflows float32 (MediaPipe heads give logits beyond +-100)
        return (1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))).astype(np.float32)
    if activation == "softmax":
        return softmax(x)
    return x


@dataclass(frozen=True)
class Decoder:
    """Decoder settings resolved at model load; :meth:`decode` runs per frame."""

    family: str
    labels: list[str] | None
    input_size: tuple[int, int]  # (height, width) of the model input
    output_names: Sequence[str]
    detection: DetectionParams = field(default_factory=DetectionParams)
    top_k: int = 5
    apply_softmax: Literal["auto"] | bool = "auto"
    class_score_threshold: float = 0.0
    score_activation: str = "none"
    label_offset: int = 0
    num_classes: int | None = None  # yolov8: class rows when more rows follow them
    box_scale: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    anchors: Arr | None = field(default=None, repr=False)
    # "auto" softmax, decided on the first output: a model gives logits or it gives probabilities
    _softmax: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def classify(self, outputs: Sequence[Arr]) -> list[Classification]:
        """Top-k classes (classification family)."""
        apply = self.apply_softmax
        if apply == "auto":
            if "auto" not in self._softmax:
                scores = np.asarray(outputs[0], np.float32).reshape(-1)
                self._softmax["auto"] = not looks_like_probabilities(scores)
            apply = self._softmax["auto"]
        return classify(
            outputs[0],
            self.labels,
            top_k=self.top_k,
            apply_softmax=apply,
            score_threshold=self.class_score_threshold,
            label_offset=self.label_offset,
        )

    def detect(self, outputs: Sequence[Arr], input_size: tuple[int, int] | None = None) -> RawDetections:
        """Detections with boxes normalised to the MODEL INPUT (map them back with the transform).

        ``input_size`` (height, width): the size this frame's input had, for a model with dynamic
        height/width (default: the model's).
        """
        p = self.detection
        size = input_size or self.input_size
        if self.family == "tflite_detection_postprocess":
            raw = decode_postprocessed(outputs, self.output_names, label_offset=self.label_offset)
            return select(raw, p, apply_nms=False)
        if self.family == "ssd":
            boxes, scores = ssd_outputs(outputs)
            assert self.anchors is not None
            raw = decode_ssd(
                boxes,
                activate(scores, self.score_activation),
                self.anchors,
                box_scale=self.box_scale,
                label_offset=self.label_offset,
                score_threshold=p.score_threshold,
            )
        elif self.family == "mediapipe_ssd":
            assert self.anchors is not None
            regressors, scores = split_outputs(outputs, self.output_names)
            raw = decode_mediapipe(
                regressors,
                activate(scores, self.score_activation),
                self.anchors,
                size,
                score_threshold=p.score_threshold,
            )
        elif self.family == "yolo_end2end":
            raw = decode_end2end(yolo_head(outputs), size, score_threshold=p.score_threshold)
            return select(raw, p, apply_nms=False)
        elif self.family == "rtdetr":
            raw = decode_rtdetr(yolo_head(outputs), score_threshold=p.score_threshold)
            return select(raw, p, apply_nms=False)
        elif self.family == "yolox":
            raw = decode_yolox(outputs[0], size, score_threshold=p.score_threshold)
        elif self.family == "yolov5":
            out = self._activate_scores(outputs[0], axis=-1)
            raw = decode_yolov5(out, size, score_threshold=p.score_threshold)
        elif self.family == "yolov8":
            out = self._activate_scores(yolo_head(outputs), axis=-2)
            raw = decode_yolov8(out, size, score_threshold=p.score_threshold, num_classes=self.num_classes)
        else:
            raise ModelError(f"family {self.family!r} is not a detector")
        return select(raw, p)

    def _activate_scores(self, out: Arr, axis: int) -> Arr:
        """Sigmoid on the score rows/columns of a YOLO head (never on the box coordinates)."""
        if self.score_activation == "none":
            return out
        out = out.copy()
        index: list[slice] = [slice(None)] * out.ndim
        index[axis] = slice(4, None)
        out[tuple(index)] = activate(out[tuple(index)], "sigmoid")
        return out


def yolo_head(outputs: Sequence[Arr]) -> Arr:
    """The detection head of a YOLO model: its one 3-D output (an Ultralytics segment model has a
    second, 4-D output of mask prototypes, which is not used)."""
    heads = [o for o in outputs if o.ndim == 3]
    return heads[0] if len(heads) == 1 else outputs[0]


def ssd_outputs(outputs: Sequence[Arr]) -> tuple[Arr, Arr]:
    """(box encodings ``[.., N, 4]``, class scores ``[.., N, C]``) in whatever order they come."""
    if len(outputs) != 2:
        raise ModelError(f"an SSD model has 2 outputs (boxes, scores); this one has {len(outputs)}")
    a, b = outputs
    return (a, b) if a.shape[-1] == 4 and b.shape[-1] != 4 else (b, a)
