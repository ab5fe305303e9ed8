"""One sensor window through one model: standardise -> infer -> score/values/classes, each timed.

A :class:`WindowRunner` is the :class:`~edge_runtime.model.runner.Runner` of a model whose
model.yaml says ``input: {kind: window}``; pipelines call its stages the same way with the
window's ``[samples, channels]`` array instead of an image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.config.sources import SensorSource as SensorConfig
from edge_runtime.config.sources import SourceConfig
from edge_runtime.errors import ModelError
from edge_runtime.model.loader import LoadedModel
from edge_runtime.model.runner import InferenceResult, Runner
from edge_runtime.model.spec import WindowInput
from edge_runtime.postprocess.window import anomaly_score, regression_values
from edge_runtime.preprocess.tensor import dequantize, quantize

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WindowResult(InferenceResult):
    """What one window gave: an anomaly score and flag, regression values, or classes."""

    score: float | None = None
    threshold: float | None = None
    values: tuple[float, ...] = ()
    value_labels: tuple[str, ...] = ()

    @property
    def flag(self) -> bool:
        """An anomaly: the score reached the threshold."""
        return self.score is not None and self.threshold is not None and self.score >= self.threshold

    def payload(self) -> dict[str, Any]:
        """The task-specific part of a JSON result."""
        if self.task == "anomaly":
            assert self.score is not None and self.threshold is not None
            return {
                "anomaly": {
                    "score": round(self.score, 6),
                    "threshold": round(self.threshold, 6),
                    "flag": self.flag,
                }
            }
        if self.task == "regression":
            body: dict[str, Any] = {"values": [round(v, 6) for v in self.values]}
            if self.value_labels:
                body["labels"] = list(self.value_labels)
            return body
        return InferenceResult.payload(self)


class WindowRunner(Runner):
    """Runs a sensor-window model on float ``[samples, channels]`` windows."""

    def __init__(
        self, model: LoadedModel, *, top_k: int | None = None, score_threshold: float | None = None
    ) -> None:
        if not isinstance(model.spec.input, WindowInput):
            raise ModelError(f"{model.file}: not a sensor-window model (model.yaml input.kind: window)")
        super().__init__(model, top_k=top_k, score_threshold=score_threshold)
        self.window: WindowInput = model.spec.input
        n = len(self.window.channels)
        self._mean = np.asarray(self.window.mean or (0.0,) * n, np.float32)
        self._inv_std = 1.0 / np.asarray(self.window.std or (1.0,) * n, np.float32)
        anomaly = model.spec.anomaly
        self.threshold = (
            score_threshold if score_threshold is not None else anomaly.threshold if anomaly else None
        )

    def prepare(self, window: npt.NDArray[Any]) -> tuple[list[npt.NDArray[Any]], Any]:
        """A ``[samples, channels]`` window -> ([the tensor the model takes], the standardised window).

        The standardised float window is what ``finish`` compares an autoencoder's output with.
        """
        expected = (self.window.window, len(self.window.channels))
        if window.shape != expected:
            raise ModelError(f"window of shape {list(window.shape)}, the model takes {list(expected)}")
        x = (window.astype(np.float32) - self._mean) * self._inv_std
        if self.window.layout == "NCW":
            x = x.T
        x = np.ascontiguousarray(x[np.newaxis])
        spec = self.model.image_input
        if np.issubdtype(spec.dtype, np.integer) and spec.quantization is not None:
            return [quantize(x, spec.quantization, spec.dtype)], x
        return [x.astype(spec.dtype, copy=False)], x

    def finish(self, outputs: list[npt.NDArray[Any]], context: Any) -> WindowResult:
        """Output tensors -> the task's result (``context``: the standardised window)."""
        x: npt.NDArray[np.float32] = context
        real = [dequantize(o, s.quantization) for o, s in zip(outputs, self._output_specs, strict=True)]
        spec = self.model.spec
        if spec.task == "anomaly":
            return WindowResult(
                "anomaly", score=anomaly_score(spec.family, real, x), threshold=self.threshold
            )
        if spec.task == "regression":
            labels = tuple(self.model.labels or ())
            return WindowResult("regression", values=regression_values(real), value_labels=labels)
        return WindowResult("classification", classes=tuple(self.decoder.classify(real)))


def make_runner(
    model: LoadedModel, *, top_k: int | None = None, score_threshold: float | None = None
) -> Runner:
    """The runner that fits the model: a WindowRunner for sensor-window models."""
    kind = WindowRunner if isinstance(model.spec.input, WindowInput) else Runner
    return kind(model, top_k=top_k, score_threshold=score_threshold)


def source_mismatch(source: SourceConfig, model: LoadedModel) -> str | None:
    """Why ``source`` cannot feed ``model`` (None when it can); minor differences are logged.

    Sensor sources need a sensor-window model with the same window length and channel count
    (and image sources an image model). Other channel names or another sample rate than the
    model was trained at are allowed, with a warning.
    """
    window = model.spec.input
    if not isinstance(window, WindowInput):
        is_sensor = isinstance(source, SensorConfig)
        return f"model {model.spec.name} takes images, not sensor windows" if is_sensor else None
    if not isinstance(source, SensorConfig):
        return f"model {model.spec.name} takes sensor windows; use a source of type sensor"
    if source.window != window.window or len(source.channels) != len(window.channels):
        return (
            f"source gives windows of {source.window} samples x {len(source.channels)} channels, "
            f"model {model.spec.name} takes {window.window} x {len(window.channels)}"
        )
    if list(source.channels) != list(window.channels):
        logger.warning(
            "source channels %s feed model channels %s in that order", source.channels, list(window.channels)
        )
    if window.rate_hz is not None and abs(source.rate_hz - window.rate_hz) > 1e-6 * window.rate_hz:
        logger.warning(
            "source rate %s Hz, model %s trained at %s Hz", source.rate_hz, model.spec.name, window.rate_hz
        )
    return None
