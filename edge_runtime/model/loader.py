"""A loaded model: a model file in a backend, with its spec, labels and decoder settings.

``load_model`` resolves a MODEL path (files.py), verifies the hashes model.yaml records, creates
the backend and checks that the model's inputs and outputs fit the declared task and family; a
bare file without model.yaml is described from its own metadata (metadata.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.config.sections import ModelConfig
from edge_runtime.errors import ModelError
from edge_runtime.hashing import file_sha256
from edge_runtime.inference import Backend, BackendOptions, StreamPool, create_backend
from edge_runtime.model.files import choose_kind, resolve, verify_hashes
from edge_runtime.model.metadata import spec_from_metadata
from edge_runtime.model.spec import MediapipeAnchorSpec, ModelSpec, WindowInput
from edge_runtime.postprocess.decode import Decoder
from edge_runtime.postprocess.detection import DetectionParams
from edge_runtime.postprocess.families import num_classes
from edge_runtime.postprocess.labels import read_labels
from edge_runtime.postprocess.mediapipe import known_anchors, mediapipe_anchors
from edge_runtime.postprocess.ssd import ssd_anchors
from edge_runtime.types import TensorSpec

logger = logging.getLogger(__name__)


def backend_options(mc: ModelConfig, cache_dir: Path) -> BackendOptions:
    """How the runtime runs a configured model (the config's ``models.<name>`` section)."""
    return BackendOptions(
        accelerator=mc.accelerator,
        threads=mc.threads,
        allow_cpu_fallback=mc.allow_cpu_fallback,
        provider_options=mc.provider_options,
        cache_dir=cache_dir,
        device=mc.device,
        delegate_path=mc.delegate_path,
        delegate_options=mc.delegate_options,
        spin_wait=mc.spin_wait,
        exact_int8=mc.exact_int8,
        streams=None if mc.streams == "auto" else mc.streams,
    )


@dataclass
class LoadedModel:
    """Everything needed to turn images into results with one model file."""

    spec: ModelSpec
    file: Path
    sha256: str
    backend: StreamPool
    labels: list[str] | None
    image_input: TensorSpec  # the input tensor (of a sensor-window model too)
    input_size: tuple[int, int]  # (height, width); (window, channels) for a sensor-window model

    def describe(self) -> dict[str, Any]:
        """The ``model`` object of a result."""
        return {
            "name": self.spec.name,
            "version": self.spec.version,
            "sha256": self.sha256,
            "backend": self.backend.kind,
            "accelerator": self.backend.accelerator,
        }

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()


def load_model(path: Path, backend: str = "auto", options: BackendOptions | None = None) -> LoadedModel:
    """Resolve, verify, load and describe a model; raises ModelError with the reason."""
    options = options or BackendOptions()
    ref = resolve(path)
    kind = choose_kind(ref, backend, options.accelerator)
    file = ref.files[kind]
    sha = file_sha256(file)
    if ref.spec is not None:
        verify_hashes(ref, file, sha)
    runtime = create_backend(kind, file, options, sha)
    try:
        if ref.spec is not None:
            spec = ref.spec
            labels = read_labels(ref.folder / spec.labels) if spec.labels else None
        else:
            spec, labels = spec_from_metadata(file, runtime)
        image_input, size = _image_input(spec, runtime, file)
        _check_outputs(spec, runtime, labels, file)
    except BaseException:
        runtime.close()
        raise
    return LoadedModel(spec, file, sha, runtime, labels, image_input, size)


def _image_input(spec: ModelSpec, backend: Backend, file: Path) -> tuple[TensorSpec, tuple[int, int]]:
    if isinstance(spec.input, WindowInput):
        return _window_input(spec.input, backend, file)
    images = [s for s in backend.input_specs if len(s.shape) == 4 and s.layout != "other"]
    if len(backend.input_specs) != 1 or not images:
        shapes = ", ".join(f"{s.name}{list(s.shape)}" for s in backend.input_specs)
        raise ModelError(f"{file}: expected one image input [1,H,W,C] or [1,C,H,W], got {shapes}")
    batch = images[0].shape[0]
    if batch > 1:
        raise ModelError(
            f"{file}: the input takes a fixed batch of {batch} images {list(images[0].shape)}; frames are "
            "run one at a time: export the model with batch 1 (or a dynamic batch)"
        )
    size = images[0].image_size or spec.preprocess.input_size
    if size is None:
        raise ModelError(f"{file}: input size is dynamic; set preprocess.input_size: [H, W] in model.yaml")
    return images[0], size


def _window_input(window: WindowInput, backend: Backend, file: Path) -> tuple[TensorSpec, tuple[int, int]]:
    """The one input must be [1, window, channels] (NWC) or [1, channels, window] (NCW)."""
    w, c = window.window, len(window.channels)
    expected = (1, w, c) if window.layout == "NWC" else (1, c, w)
    specs = list(backend.input_specs)
    fits = len(specs) == 1 and len(specs[0].shape) == 3
    if not fits or any(d not in (e, -1) for d, e in zip(specs[0].shape, expected, strict=True)):
        shapes = ", ".join(f"{s.name}{list(s.shape)}" for s in specs)
        raise ModelError(
            f"{file}: model.yaml input says {window.layout} {list(expected)}, the model takes {shapes}"
        )
    return specs[0], (w, c)


def _check_outputs(spec: ModelSpec, backend: Backend, labels: list[str] | None, file: Path) -> None:
    shapes = [s.shape for s in backend.output_specs]
    if spec.family in ("anomaly_score", "reconstruction", "regression"):
        _check_window_outputs(spec, backend, file)
        return
    try:
        post = spec.postprocess
        classes = num_classes(spec.family, shapes, post.label_offset, post.num_classes)
    except (IndexError, StopIteration) as exc:
        raise ModelError(f"{file}: outputs {shapes} do not fit family {spec.family!r}") from exc
    except ModelError as exc:
        raise ModelError(f"{file}: {exc}") from exc
    if labels is not None and classes is not None and classes > 0 and len(labels) != classes:
        raise ModelError(
            f"{file}: labels file has {len(labels)} labels but the model outputs {classes} classes"
        )
    if spec.family in ("ssd", "mediapipe_ssd"):
        anchors = make_anchors(spec, _input_size(spec, backend), shapes)
        if not any(len(s) == 3 and s[1] == anchors.shape[0] for s in shapes):
            raise ModelError(
                f"{file}: postprocess.anchors give {anchors.shape[0]} anchors but outputs are {shapes}"
            )


def _check_window_outputs(spec: ModelSpec, backend: Backend, file: Path) -> None:
    shapes = [s.shape for s in backend.output_specs]
    if len(shapes) != 1:
        raise ModelError(f"{file}: a {spec.family} model has one output, this one has {shapes}")
    size = int(abs(np.prod(shapes[0])))
    if spec.family == "anomaly_score" and size != 1:
        raise ModelError(f"{file}: family anomaly_score outputs one score, got shape {list(shapes[0])}")
    inputs = backend.input_specs[0].shape
    if spec.family == "reconstruction" and shapes[0] != inputs:
        raise ModelError(
            f"{file}: family reconstruction outputs the input's shape {list(inputs)}, got {list(shapes[0])}"
        )


def _input_size(spec: ModelSpec, backend: Backend) -> tuple[int, int]:
    size = backend.input_specs[0].image_size or spec.preprocess.input_size
    return size or (0, 0)


def make_anchors(
    spec: ModelSpec, input_size: tuple[int, int] = (0, 0), shapes: Sequence[tuple[int, ...]] = ()
) -> npt.NDArray[np.float32]:
    """Anchors of an SSD model (cached per parameter set): from model.yaml's ``postprocess.anchors``
    or, for ``mediapipe_ssd`` without them, the face detectors' options whose count fits ``shapes``.
    """
    a = spec.postprocess.anchors
    if isinstance(a, MediapipeAnchorSpec):
        return mediapipe_anchors(
            input_size,
            a.strides,
            aspect_ratios=a.aspect_ratios,
            interpolated_scale_aspect_ratio=a.interpolated_scale_aspect_ratio,
            anchor_offset=a.anchor_offset,
        )
    if spec.family == "mediapipe_ssd":
        count = shapes[0][1] if shapes and len(shapes[0]) == 3 else -1
        found = known_anchors(input_size, count)
        if found is None:
            raise ModelError(
                f"{spec.name}: no MediaPipe face-detector anchor options give {count} anchors for input "
                f"{list(input_size)}; add postprocess.anchors: {{generator: mediapipe, strides: [...]}}"
            )
        return found
    assert a is not None
    return ssd_anchors(
        a.feature_map_sizes,
        min_scale=a.min_scale,
        max_scale=a.max_scale,
        aspect_ratios=a.aspect_ratios,
        reduce_boxes_in_lowest_layer=a.reduce_boxes_in_lowest_layer,
        interpolated_scale_aspect_ratio=a.interpolated_scale_aspect_ratio,
    )


def _activation(spec: ModelSpec) -> str:
    """``auto``: MediaPipe heads give logits; every other family's outputs are used as they are."""
    if spec.postprocess.score_activation != "auto":
        return spec.postprocess.score_activation
    return "sigmoid" if spec.family == "mediapipe_ssd" else "none"


def make_decoder(
    model: LoadedModel, *, top_k: int | None = None, score_threshold: float | None = None
) -> Decoder:
    """Decoder settings from model.yaml, overridden by the caller (CLI flags, config)."""
    spec, post = model.spec, model.spec.postprocess
    is_detector = spec.task == "detection"
    threshold = score_threshold if score_threshold is not None else post.score_threshold
    return Decoder(
        family=spec.family,
        labels=model.labels,
        input_size=model.input_size,
        output_names=[s.name for s in model.backend.output_specs],
        detection=DetectionParams(
            score_threshold=threshold if threshold is not None else 0.25,
            iou_threshold=post.iou_threshold,
            max_detections=post.max_detections,
            class_agnostic=post.class_agnostic_nms,
        ),
        top_k=top_k or post.top_k,
        apply_softmax=post.softmax,
        class_score_threshold=threshold if threshold is not None and not is_detector else 0.0,
        score_activation=_activation(spec),
        label_offset=post.label_offset,
        num_classes=post.num_classes,
        box_scale=post.box_scale,
        anchors=(
            make_anchors(spec, model.input_size, [s.shape for s in model.backend.output_specs])
            if spec.family in ("ssd", "mediapipe_ssd")
            else None
        ),
    )
