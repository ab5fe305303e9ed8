"""One image through one model: preprocess -> infer -> postprocess, each stage timed.

Composition module (like ``pipeline.py``): the daemon's pipelines call the same three stages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import BackendClosedError, ModelError
from edge_runtime.model import LoadedModel, make_decoder
from edge_runtime.postprocess.detection import to_detections
from edge_runtime.preprocess import geometry
from edge_runtime.preprocess.tensor import InputEncoder, dequantize
from edge_runtime.types import Classification, Detection


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """What one image gave. Boxes are normalised xyxy in the original image."""

    task: str
    width: int
    height: int
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


class PredictorClosedError(RuntimeError):
    """The predictor was closed (replaced by a model update) after a caller picked it up."""


class Predictor:
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

    def preprocess(
        self, image_bgr: npt.NDArray[np.uint8]
    ) -> tuple[list[npt.NDArray[Any]], geometry.Transform]:
        """BGR image -> input tensors and the transform back to the image."""
        if self.model.spec.input.kind == "window":
            raise ModelError(
                f"{self.model.file}: a sensor-window model (task {self.model.spec.task}); it takes "
                "windows from a sensor source in a pipeline, not images"
            )
        p = self._prep
        size = self.model.input_size
        # Geometry first, colour order after: resizing treats channels alike, so swapping them on
        # the small image gives the same pixels for a fraction of the work.
        if p.resize == "letterbox":
            resized, transform = geometry.letterbox(image_bgr, size, p.pad_value, p.interpolation)
        elif p.resize == "center_crop":
            resized, transform = geometry.center_crop(image_bgr, size, p.crop_fraction, p.interpolation)
        else:
            resized, transform = geometry.stretch(image_bgr, size, p.interpolation)
        if self._encoder is None:
            self._encoder = InputEncoder(self.model.image_input, p.mean, p.std)
        return [self._encoder(resized, swap_rb=p.color == "rgb")], transform

    def postprocess(self, outputs: list[npt.NDArray[Any]], transform: geometry.Transform) -> InferenceResult:
        """Output tensors -> result in original-image coordinates."""
        real = [dequantize(o, s.quantization) for o, s in zip(outputs, self._output_specs, strict=True)]
        w, h = transform.src_width, transform.src_height
        if self.model.spec.task == "classification":
            return InferenceResult("classification", w, h, classes=tuple(self.decoder.classify(real)))
        raw = self.decoder.detect(real)
        boxes = transform.to_original(raw.boxes)
        return InferenceResult(
            "detection", w, h, detections=tuple(to_detections(boxes, raw, self.model.labels))
        )

    @property
    def streams(self) -> int:
        """How many inference calls can run at once (copies of the model, inference/pool.py)."""
        return self.model.backend.streams

    def close(self) -> None:
        """Release the backend once no call is inside it; later calls raise PredictorClosedError."""
        self.model.close()

    # -- the three stages, as the pipeline's threads call them --------------------------------
    def prepare(self, data: npt.NDArray[Any]) -> tuple[list[npt.NDArray[Any]], Any]:
        """Input data -> (input tensors, what ``finish`` needs to interpret the outputs)."""
        return self.preprocess(data)

    def run(self, inputs: list[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """The backend call; the pool gives each concurrent caller its own copy of the model."""
        try:
            return self.model.backend.infer(inputs)
        except BackendClosedError as exc:
            raise PredictorClosedError(self.model.spec.name) from exc

    def finish(self, outputs: list[npt.NDArray[Any]], context: Any) -> InferenceResult:
        """Output tensors -> the result."""
        return self.postprocess(outputs, context)

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
