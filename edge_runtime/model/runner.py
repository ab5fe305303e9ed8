"""One image through one model: prepare -> run -> finish, each stage timed.

A :class:`Runner` runs a :class:`~edge_runtime.model.loader.LoadedModel`: ``prepare`` is the
preprocessing (geometry, then the input tensor), ``run`` the backend call, ``finish`` the decoder
(outputs to classes or boxes in the original image). The daemon's pipelines call the three stages
from different threads (pipeline.py); ``predict`` runs them in a row (the CLI, golden vectors).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy.typing as npt

from edge_runtime.errors import ModelError
from edge_runtime.model.loader import LoadedModel, make_decoder
from edge_runtime.postprocess.detection import to_detections
from edge_runtime.preprocess import geometry
from edge_runtime.preprocess.tensor import InputEncoder, dequantize
from edge_runtime.types import Classification, Detection


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """What one image gave. Boxes are normalised xyxy in the original image."""

    task: str
    classes: tuple[Classification, ...] = ()
    detections: tuple[Detection, ...] = ()
    latency_ms: dict[str, float] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The task-specific part of a JSON result."""
        if self.task == "classification":
            return {
                "classes": [
                    {"class_id": c.class_id, "label": c.label, "score": round(c.score, 4)}
                    for c in self.classes
                ]
            }
        return {
            "detections": [
                {"class_id": d.class_id, "label": d.label, "score": round(d.score, 4), "box": d.box.as_list()}
                for d in self.detections
            ]
        }


# An end-to-end YOLO head (YOLOv10, YOLO26) ends in a TopK over every cell of its stride 8/16/32
# grids, k = Ultralytics' max_det (300 by default): a rectangle with fewer cells (a panorama at a
# small input size) would fail inside the runtime, so it is padded further.
END2END_CELLS = 300


def _with_cells(size: tuple[int, int], full: tuple[int, int], stride: int, cells: int) -> tuple[int, int]:
    """``size`` grown by ``stride`` steps, shorter side first, until its grids have ``cells`` cells
    (or it is ``full``)."""
    h, w = size
    while sum((h // s) * (w // s) for s in (8, 16, 32)) < cells and (h < full[0] or w < full[1]):
        if h < full[0] and (h <= w or w >= full[1]):
            h = min(full[0], h + stride)
        else:
            w = min(full[1], w + stride)
    return h, w


class Runner:
    """Runs a :class:`LoadedModel` on BGR images (as OpenCV decodes them)."""

    def __init__(
        self, model: LoadedModel, *, top_k: int | None = None, score_threshold: float | None = None
    ) -> None:
        self.model = model
        self.decoder = make_decoder(model, top_k=top_k, score_threshold=score_threshold)
        prep = model.spec.preprocess
        self._prep = prep
        self._output_specs = list(model.backend.output_specs)
        self._encoder: InputEncoder | None = None
        # A model that takes any height/width gets the smallest stride-aligned letterbox around
        # each image (as Ultralytics does) instead of padding to the full square. ONNX Runtime only:
        # a TFLite interpreter would have to be re-allocated for every new shape.
        dynamic = model.image_input.image_size is None and model.backend.kind == "onnx"
        self._rect_stride = prep.stride if prep.resize == "letterbox" and dynamic else 0
        self._min_cells = END2END_CELLS if model.spec.family == "yolo_end2end" else 0

    def prepare(self, image_bgr: npt.NDArray[Any]) -> tuple[list[npt.NDArray[Any]], Any]:
        """BGR image -> (input tensors, the transform back to the image for ``finish``)."""
        if self.model.spec.input.kind == "window":
            raise ModelError(
                f"{self.model.file}: a sensor-window model (task {self.model.spec.task}); it takes "
                "windows from a sensor source in a pipeline, not images"
            )
        p = self._prep
        size = self.model.input_size
        # Geometry first, colour order after: resizing treats channels alike, so swapping them on
        # the small image gives the same pixels for a fraction of the work.
        if self._rect_stride:
            size = geometry.stride_rectangle(image_bgr.shape[:2], size, self._rect_stride)
            size = _with_cells(size, self.model.input_size, self._rect_stride, self._min_cells)
        if p.resize == "letterbox":
            resized, transform = geometry.letterbox(
                image_bgr, size, p.pad_value, p.interpolation, centre=p.pad == "centre"
            )
        elif p.resize == "center_crop":
            resized, transform = geometry.center_crop(image_bgr, size, p.crop_fraction, p.interpolation)
        else:
            resized, transform = geometry.stretch(image_bgr, size, p.interpolation)
        if self._encoder is None:
            self._encoder = InputEncoder(self.model.image_input, p.mean, p.std)
        return [self._encoder(resized, swap_rb=p.color == "rgb")], transform

    def run(self, inputs: list[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """The backend call; the pool gives each concurrent caller its own copy of the model.

        Raises BackendClosedError when an update closed this runner after the caller picked it up.
        """
        return self.model.backend.infer(inputs)

    def finish(self, outputs: list[npt.NDArray[Any]], context: Any) -> InferenceResult:
        """Output tensors -> result in original-image coordinates (``context``: the transform)."""
        transform: geometry.Transform = context
        real = [dequantize(o, s.quantization) for o, s in zip(outputs, self._output_specs, strict=True)]
        if self.model.spec.task == "classification":
            return InferenceResult("classification", classes=tuple(self.decoder.classify(real)))
        raw = self.decoder.detect(real, (transform.dst_height, transform.dst_width))
        boxes = transform.to_original(raw.boxes)
        return InferenceResult("detection", detections=tuple(to_detections(boxes, raw, self.model.labels)))

    @property
    def streams(self) -> int:
        """How many inference calls can run at once (copies of the model, inference/pool.py)."""
        return self.model.backend.streams

    def close(self) -> None:
        """Release the backend once no call is inside it; later calls raise BackendClosedError."""
        self.model.close()

    def predict(self, data: npt.NDArray[Any]) -> InferenceResult:
        """All three stages, with per-stage latency in milliseconds."""
        t0 = time.perf_counter()
        inputs, context = self.prepare(data)
        t1 = time.perf_counter()
        outputs = self.run(inputs)
        t2 = time.perf_counter()
        result = self.finish(outputs, context)
        t3 = time.perf_counter()
        latency = {
            "preprocess": round((t1 - t0) * 1e3, 3),
            "inference": round((t2 - t1) * 1e3, 3),
            "postprocess": round((t3 - t2) * 1e3, 3),
        }
        return replace(result, latency_ms=latency)
