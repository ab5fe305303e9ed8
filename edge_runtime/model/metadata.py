"""Describe a bare model file (no model.yaml) from what it says about itself.

Ultralytics ONNX exports carry ``names``, ``imgsz`` and ``task`` in the ONNX metadata; TFLite
models with metadata carry their labels as an associated file packed into the ``.tflite`` (which
is then also a zip archive; Ultralytics also packs its ``metadata.json`` there). The family comes
from the output shapes, the input size and the metadata (postprocess/families.py).
"""

from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ModelError
from edge_runtime.inference.base import Backend
from edge_runtime.model.spec import ModelSpec
from edge_runtime.postprocess.families import FAMILY_LINES, guess_family

# MediaPipe's face detectors' own thresholds (face_detection_*_common.pbtxt)
_MEDIAPIPE_POSTPROCESS = {"score_threshold": 0.5, "iou_threshold": 0.3}


def _literal(text: str | None) -> Any:
    if not text:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def _ultralytics_labels(metadata: dict[str, str]) -> list[str] | None:
    names = _literal(metadata.get("names"))
    if isinstance(names, dict) and names and all(str(k).isdigit() for k in names):  # JSON: keys are text
        names = {int(k): v for k, v in names.items()}
        return [str(names.get(i, i)) for i in range(max(names) + 1)]
    if isinstance(names, list):
        return [str(n) for n in names]
    return None


def _tflite_packed(file: Path) -> tuple[list[str] | None, dict[str, str]]:
    """Labels (the first ``.txt``) and Ultralytics' ``metadata.json`` packed into a ``.tflite``."""
    if file.suffix != ".tflite" or not zipfile.is_zipfile(file):
        return None, {}
    labels: list[str] | None = None
    meta: dict[str, str] = {}
    with zipfile.ZipFile(file) as zf:
        names = zf.namelist()
        texts = [n for n in names if n.endswith(".txt")]
        if texts:
            lines = zf.read(texts[0]).decode("utf-8", errors="replace").splitlines()
            labels = [line.strip() for line in lines if line.strip()]
        if "metadata.json" in names:
            try:
                loaded = json.loads(zf.read("metadata.json"))
            except ValueError:
                loaded = None
            if isinstance(loaded, dict):
                meta = {str(k): v if isinstance(v, str) else repr(v) for k, v in loaded.items()}
    return labels, meta


# Ultralytics' ``task`` metadata: the tasks whose boxes and classes this runtime reports, and all
# the tasks its exports name (another exporter's ``task`` key is left to the output shapes)
_ULTRALYTICS_BOXES = ("detect", "pose", "segment")
_ULTRALYTICS_TASKS = frozenset({*_ULTRALYTICS_BOXES, "classify", "obb"})


def _flag(value: object) -> bool:
    return str(value).strip().lower() == "true"


def _ultralytics_family(file: Path, meta: dict[str, str], shapes: list[tuple[int, ...]]) -> str | None:
    """The family of an Ultralytics export, from its ``task`` metadata (None: not one).

    ``detect``, ``pose`` and ``segment`` models give boxes and classes (key points and masks are
    not reported): ``yolo_end2end`` when the graph ends in NMS or an end-to-end head (``end2end``
    metadata, ``nms`` export argument), else ``yolov8``; files too old to say are told apart by
    their head's shape. ``obb`` (rotated boxes) is refused.
    """
    task = str(meta.get("task", "")).strip().lower()
    by_ultralytics = "ultralytics" in str(meta.get("author", "")).lower()
    if not task or (task not in _ULTRALYTICS_TASKS and not by_ultralytics):
        return None
    if task == "classify":
        return "classification"
    if task not in _ULTRALYTICS_BOXES:
        what = "oriented (rotated) boxes" if task == "obb" else f"task {task!r}"
        raise ModelError(
            f"{file}: an Ultralytics {task} model ({what}); this runtime reports axis-aligned boxes "
            f"of Ultralytics {', '.join(_ULTRALYTICS_BOXES)} models and classify models' classes"
        )
    if str(meta.get("head", "")) == "RTDETRDecoder":
        return "rtdetr"
    args = _literal(meta.get("args"))
    nms = isinstance(args, dict) and args.get("nms") is True
    if _flag(meta.get("end2end")) or nms:
        return "yolo_end2end"
    if "end2end" in meta:
        return "yolov8"
    head = next((s for s in shapes if len(s) == 3), None)  # older exports: [1, N, 6+K] vs [1, 4+C+K, N]
    if head is not None and 6 <= head[2] < head[1] <= 1000:
        return "yolo_end2end"
    return "yolov8"


def _preprocess(family: str, backend: Backend) -> dict[str, Any]:
    """Defaults: YOLO letterboxes 0..1 pixels; MediaPipe letterboxes -1..1 with black borders;
    quantised inputs take raw pixels; else 0..1."""
    spec = backend.input_specs[0]
    if family in ("yolov5", "yolov8", "yolo_end2end"):
        return {"resize": "letterbox", "mean": (0.0,) * 3, "std": (255.0,) * 3, "pad_value": 114}
    if family == "rtdetr":  # Ultralytics' RT-DETR predictor stretches the image to the input
        return {"resize": "stretch", "mean": (0.0,) * 3, "std": (255.0,) * 3}
    if family == "mediapipe_ssd":
        return {"resize": "letterbox", "mean": (127.5,) * 3, "std": (127.5,) * 3, "pad_value": 0}
    if family == "yolox":  # YOLOX's own preproc: BGR 0..255, image top-left, padding 114 after it
        return {"resize": "letterbox", "color": "bgr", "pad": "bottom_right", "pad_value": 114}
    if np.issubdtype(spec.dtype, np.integer) and spec.quantization is not None:
        q = spec.quantization  # mean/std that make quantise(normalise(p)) == p
        return {"mean": (float(q.zero_point),) * 3, "std": (1.0 / q.scale,) * 3}
    return {"mean": (0.0,) * 3, "std": (255.0,) * 3}


def no_family_message(file: Path, backend: Backend, metadata: dict[str, str]) -> str:
    """What the model has, and the model.yaml that would describe it with each family."""

    def tensors(specs: Any) -> str:
        return ", ".join(f"{s.name} {list(s.shape)} {np.dtype(s.dtype).name}" for s in specs)

    meta = ", ".join(f"{k}={v[:60]!r}" for k, v in sorted(metadata.items())) or "none"
    kind = backend.kind
    lines = [
        f"{file}: its outputs fit no known family; describe it in a model.yaml next to it "
        f"(name: {file.stem}, files: {{{kind}: {file.name}}}, the task and family lines below)",
        f"  inputs:  {tensors(backend.input_specs)}",
        f"  outputs: {tensors(backend.output_specs)}",
        f"  metadata: {meta}",
        "  families:",
    ]
    width = max(len(f) for f, _, _ in FAMILY_LINES)
    lines += [f"    {task:<22} family: {fam:<{width}}  # {what}" for fam, task, what in FAMILY_LINES]
    lines.append("See docs/models.md#families.")
    return "\n".join(lines)


def spec_from_metadata(file: Path, backend: Backend) -> tuple[ModelSpec, list[str] | None]:
    """A ModelSpec (and labels) for a model file without model.yaml, or ModelError."""
    packed_labels, packed_meta = _tflite_packed(file)
    meta = {**packed_meta, **dict(backend.metadata)}
    shapes = [s.shape for s in backend.output_specs]
    imgsz = _literal(meta.get("imgsz"))
    size = backend.input_specs[0].image_size if backend.input_specs else None
    if size is None and isinstance(imgsz, list) and len(imgsz) == 2:
        size = (int(imgsz[0]), int(imgsz[1]))
    family = _ultralytics_family(file, meta, shapes) or guess_family(shapes, size, meta)
    if family is None:
        raise ModelError(no_family_message(file, backend, meta))
    if family == "ssd":
        raise ModelError(
            f"{file}: looks like an SSD head (box encodings + scores) but anchors are unknown; "
            "add a model.yaml with family: ssd and postprocess.anchors (docs/models.md#families)"
        )
    labels = _ultralytics_labels(meta) or packed_labels
    preprocess = _preprocess(family, backend)
    postprocess: dict[str, Any] = _MEDIAPIPE_POSTPROCESS if family == "mediapipe_ssd" else {}
    if family == "yolov8" and "task" in meta and labels:
        postprocess = {"num_classes": len(labels)}  # pose / segment heads: more rows follow
    if family == "classification" and "task" in meta:
        # Ultralytics' classify_transforms: shorter side to the input size, centre crop, 0..1
        preprocess.update({"resize": "center_crop", "interpolation": "antialias"})
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
            "postprocess": postprocess,
        }
    )
    return spec, labels
