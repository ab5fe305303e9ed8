"""Backends behind one Protocol, imported lazily so a missing runtime only matters when chosen."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from edge_runtime.errors import InputError
from edge_runtime.inference.base import Backend, BackendOptions

BACKENDS = {
    "onnx": "edge_runtime.inference.onnx:OnnxBackend",
    "tflite": "edge_runtime.inference.tflite:TfliteBackend",
}
MODEL_SUFFIX = {".onnx": "onnx", ".tflite": "tflite"}
_RUNTIME_MODULES = {"onnx": ("onnxruntime",), "tflite": ("ai_edge_litert", "tflite_runtime")}

__all__ = ["BACKENDS", "Backend", "BackendOptions", "backend_installed", "create_backend"]


def backend_installed(kind: str) -> bool:
    """Whether the runtime for ``kind`` can be imported (without importing it)."""
    return any(importlib.util.find_spec(m) is not None for m in _RUNTIME_MODULES[kind])


def create_backend(kind: str, path: Path, options: BackendOptions, sha256: str | None = None) -> Backend:
    """Instantiate the backend registered as ``kind`` for the model file ``path``."""
    if kind not in BACKENDS:
        raise InputError(f"unknown backend {kind!r}; use one of {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[kind].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls(path, options, sha256)
    return backend
