"""Describe a bare model file (no model.yaml) from what it says about itself.

Ultralytics ONNX exports carry ``names``, ``imgsz`` and ``task`` in the ONNX metadata; TFLite
models with metadata carry their labels as an associated file packed into the ``.tflite`` (which
is then also a zip archive). The family comes from the output shapes.
"""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ModelError
from edge_runtime.inference.base import Backend
from edge_runtime.model.spec import ModelSpec
from edge_runtime.postprocess.families import guess_family


def _literal(text: str | None) -> Any:
    if not text:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def _ultralytics_labels(metadata: dict[str, str]) -> list[str] | None:
    names = _literal(metadata.get("names"))
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        return [str(names.get(i, i)) for i in range(max(names) + 1)]
    if isinstance(names, list):
        return [str(n) for n in names]
    return None


def _tflite_packed_labels(file: Path) -> list[str] | None:
    if file.suffix != ".tflite" or not zipfile.is_zipfile(file):
        return None
    with zipfile.ZipFile(file) as zf:
        texts = [n for n in zf.namelist() if n.endswith(".txt")]
        if not texts:
            return None
        lines = zf.read(texts[0]).decode("utf-8", errors="replace").splitlines()
    return [line.strip() for line in lines if line.strip()]


def _preprocess(family: str, backend: Backend) -> dict[str, Any]:
    """Defaults: YOLO letterboxes 0..1 pixels; quantised inputs take raw pixels; else 0..1."""
    spec = backend.input_specs[0]
    if family in ("yolov5", "yolov8"):
        return {"resize": "letterbox", "mean": (0.0,) * 3, "std": (255.0,) * 3, "pad_value": 114}
    if np.issubdtype(spec.dtype, np.integer) and spec.quantization is not None:
        q = spec.quantization  # mean/std that make quantise(normalise(p)) == p
        return {"mean": (float(q.zero_point),) * 3, "std": (1.0 / q.scale,) * 3}
    return {"mean": (0.0,) * 3, "std": (255.0,) * 3}


def spec_from_metadata(file: Path, backend: Backend) -> tuple[ModelSpec, list[str] | None]:
    """A ModelSpec (and labels) for a model file without model.yaml, or ModelError."""
    shapes = [s.shape for s in backend.output_specs]
    family = guess_family(shapes)
    if family == "ssd":
        raise ModelError(
            f"{file}: looks like an SSD head (box encodings + scores) but anchors are unknown; "
            "add a model.yaml with family: ssd and postprocess.anchors"
        )
    meta = dict(backend.metadata)
    labels = _ultralytics_labels(meta) or _tflite_packed_labels(file)
    imgsz = _literal(meta.get("imgsz"))
    preprocess = _preprocess(family, backend)
    if isinstance(imgsz, list) and len(imgsz) == 2:
        preprocess["input_size"] = tuple(int(v) for v in imgsz)
    stride = _literal(meta.get("stride"))
    if isinstance(stride, int) and stride > 0:
        preprocess["stride"] = stride
    spec = ModelSpec.model_validate(
        {
            "name": file.stem,
            "version": "0",
            "task": "classification" if family == "classification" else "detection",
            "family": family,
            "files": {backend.kind: file.name},
            "preprocess": preprocess,
        }
    )
    return spec, labels
