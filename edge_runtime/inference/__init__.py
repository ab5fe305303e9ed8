"""Backends behind one Protocol, imported lazily so a missing runtime only matters when chosen."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import replace
from pathlib import Path

from edge_runtime.errors import InputError
from edge_runtime.inference.base import Backend, BackendOptions
from edge_runtime.inference.pool import StreamPool

BACKENDS = {
    "onnx": "edge_runtime.inference.onnx:OnnxBackend",
    "tflite": "edge_runtime.inference.tflite:TfliteBackend",
}
MODEL_SUFFIX = {".onnx": "onnx", ".tflite": "tflite"}
_RUNTIME_MODULES = {"onnx": ("onnxruntime",), "tflite": ("ai_edge_litert", "tflite_runtime")}

CPU_ACCELERATORS = ("cpu", "xnnpack")  # where copies of a model can share the cores

__all__ = ["BACKENDS", "Backend", "BackendOptions", "StreamPool", "backend_installed", "create_backend"]


def backend_installed(kind: str) -> bool:
    """Whether the runtime for ``kind`` can be imported (without importing it)."""
    return any(importlib.util.find_spec(m) is not None for m in _RUNTIME_MODULES[kind])


def create_backend(kind: str, path: Path, options: BackendOptions, sha256: str | None = None) -> StreamPool:
    """The backend registered as ``kind`` for the model file ``path``, in a pool of ``streams`` copies.

    The threads are split among the copies. A backend that takes concurrent calls (ONNX Runtime)
    is loaded once and called by ``streams`` threads at once: the same throughput as separate
    copies, with one copy of the weights in memory and in the cache.

    ``streams=None`` gives one single-thread copy per thread when the model runs on the CPU, and
    one copy with all the threads on an accelerator (a GPU or TPU runs one call at a time better
    than it shares).
    """
    if kind not in BACKENDS:
        raise InputError(f"unknown backend {kind!r}; use one of {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[kind].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    auto = options.streams is None
    streams = options.streams or 1
    if auto and options.accelerator in ("auto", *CPU_ACCELERATORS) and options.threads:
        streams = options.threads
    each = replace(options, threads=max(1, options.threads // streams) if options.threads else None)
    first: Backend = cls(path, each if streams > 1 else options, sha256)
    members = [first]
    if auto and first.accelerator not in CPU_ACCELERATORS:  # "auto" found an accelerator
        streams = 1
    if first.concurrent:  # one session, run by ``streams`` callers at once: one copy of the weights
        return StreamPool([first] * streams)
    try:
        each = replace(each, accelerator=first.accelerator)
        members += [cls(path, each, sha256) for _ in range(streams - 1)]
    except BaseException:
        for member in members:
            member.close()
        raise
    return StreamPool(members)
