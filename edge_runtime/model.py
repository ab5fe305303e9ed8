"""A loaded model: bundle (or bare file) + backend + decoder settings + labels.

Composition module (like ``pipeline.py``): it ties ``config.model_spec``, ``inference`` and
``postprocess`` together. A MODEL argument is a ``.onnx``/``.tflite`` file or a bundle folder with
a ``model.yaml``; a bare file without one is described from its own metadata and output shapes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.config.model_spec import ModelSpec, WindowInput
from edge_runtime.config.yamlsource import load_yaml, parse_model
from edge_runtime.errors import BackendUnavailableError, ModelError
from edge_runtime.hashing import file_sha256
from edge_runtime.inference import (
    MODEL_SUFFIX,
    Backend,
    BackendOptions,
    StreamPool,
    backend_installed,
    create_backend,
)
from edge_runtime.inference.base import ONNX_ACCELERATORS, TFLITE_ACCELERATORS
from edge_runtime.model_meta import spec_from_metadata
from edge_runtime.postprocess.decode import Decoder
from edge_runtime.postprocess.detection import DetectionParams
from edge_runtime.postprocess.families import num_classes
from edge_runtime.postprocess.labels import read_labels
from edge_runtime.postprocess.ssd import ssd_anchors
from edge_runtime.types import TensorSpec

logger = logging.getLogger(__name__)

MODEL_YAML = "model.yaml"


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Where a model's files are, before any runtime is involved."""

    spec: ModelSpec | None
    files: dict[str, Path]  # backend kind -> model file
    folder: Path


def resolve(path: Path) -> ModelRef:
    """Find the model files (and model.yaml) that ``path`` names."""
    if not path.exists():
        raise ModelError(f"{path}: no such model file or bundle folder")
    if path.is_dir():
        yaml_path = path / MODEL_YAML
        if yaml_path.is_file():
            spec = parse_model(load_yaml(yaml_path), ModelSpec)
            return ModelRef(spec, _bundle_files(spec, path, yaml_path), path)
        found = {MODEL_SUFFIX[p.suffix]: p for p in sorted(path.iterdir()) if p.suffix in MODEL_SUFFIX}
        if not found:
            raise ModelError(f"{path}: folder has no model.yaml and no .onnx/.tflite file")
        return ModelRef(None, found, path)
    if path.suffix not in MODEL_SUFFIX:
        raise ModelError(f"{path}: not a model (expected a .onnx or .tflite file, or a bundle folder)")
    sibling = path.parent / MODEL_YAML
    if sibling.is_file():
        spec = parse_model(load_yaml(sibling), ModelSpec)
        files = _bundle_files(spec, path.parent, sibling)
        if path.resolve() in {f.resolve() for f in files.values()}:
            return ModelRef(spec, {MODEL_SUFFIX[path.suffix]: path}, path.parent)
    return ModelRef(None, {MODEL_SUFFIX[path.suffix]: path}, path.parent)


def _bundle_files(spec: ModelSpec, folder: Path, yaml_path: Path) -> dict[str, Path]:
    files = {k: folder / v for k, v in (("onnx", spec.files.onnx), ("tflite", spec.files.tflite)) if v}
    for kind, file in files.items():
        if not file.is_file():
            raise ModelError(f"{yaml_path}: files.{kind}: {file.name} does not exist in {folder}")
    return files


def choose_kind(ref: ModelRef, requested: str, accelerator: str) -> str:
    """The backend to use: as requested, or for ``auto`` what the accelerator and installs allow."""
    if requested != "auto":
        if requested not in ref.files:
            raise ModelError(f"{ref.folder}: has no {requested} model file (has: {', '.join(ref.files)})")
        return requested
    kinds = list(ref.files)
    if accelerator in TFLITE_ACCELERATORS and accelerator not in ONNX_ACCELERATORS:
        kinds.sort(key=lambda k: k != "tflite")
    else:
        kinds.sort(key=lambda k: k != "onnx")  # ORT is the faster CPU path for our int8 models
    for kind in kinds:
        if backend_installed(kind):
            return kind
    extras = " or ".join(f"edge-runtime[{k}]" for k in kinds)
    raise BackendUnavailableError(f"no runtime installed for {', '.join(kinds)}; install {extras}")


def _verify_hashes(ref: ModelRef, file: Path, sha: str) -> None:
    """The chosen model file and the labels must match the hashes model.yaml records."""
    assert ref.spec is not None
    checks = {file.name: sha}
    if ref.spec.labels and ref.spec.labels in ref.spec.sha256:
        labels = ref.folder / ref.spec.labels
        checks[ref.spec.labels] = file_sha256(labels) if labels.is_file() else "missing"
    for name, actual in checks.items():
        expected = ref.spec.sha256.get(name)
        if expected and expected.lower() != actual:
            raise ModelError(
                f"{ref.folder / name}: sha256 {actual[:12]}... does not match model.yaml ({expected[:12]}...)"
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
        _verify_hashes(ref, file, sha)
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
        classes = num_classes(spec.family, shapes, spec.postprocess.label_offset)
    except (IndexError, StopIteration) as exc:
        raise ModelError(f"{file}: outputs {shapes} do not fit family {spec.family!r}") from exc
    if labels is not None and classes is not None and classes > 0 and len(labels) != classes:
        raise ModelError(
            f"{file}: labels file has {len(labels)} labels but the model outputs {classes} classes"
        )
    if spec.family == "ssd":
        anchors = make_anchors(spec)
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


def make_anchors(spec: ModelSpec) -> npt.NDArray[np.float32]:
    """SSD anchors from model.yaml (cached per parameter set)."""
    a = spec.postprocess.anchors
    assert a is not None
    return ssd_anchors(
        a.feature_map_sizes,
        min_scale=a.min_scale,
        max_scale=a.max_scale,
        aspect_ratios=a.aspect_ratios,
        reduce_boxes_in_lowest_layer=a.reduce_boxes_in_lowest_layer,
        interpolated_scale_aspect_ratio=a.interpolated_scale_aspect_ratio,
    )


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
        score_activation=post.score_activation,
        label_offset=post.label_offset,
        box_scale=post.box_scale,
        anchors=make_anchors(spec) if spec.family == "ssd" else None,
    )
