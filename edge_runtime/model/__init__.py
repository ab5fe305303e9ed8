"""The model layer: where a bundle's spec, a backend and a decoder meet.

One name per concept:

* :class:`ModelSpec` (spec.py) — a bundle's ``model.yaml``: task, family, pre- and post-processing;
* :class:`ModelRef` (files.py) — where a MODEL argument's files are, before any runtime;
* :class:`LoadedModel` (loader.py) — a model file loaded in a backend, with its spec and labels;
* :class:`Runner` (runner.py; :class:`WindowRunner` in window.py for sensor windows) — runs a
  loaded model: ``prepare`` (preprocess) -> ``run`` (the backend) -> ``finish`` (the decoder);
* :class:`ModelSlot` (slot.py) — a configured model serving pipelines; an update swaps its runner.

Golden vectors (golden.py) check a runner against the outputs recorded when its bundle was made.
"""

from edge_runtime.model.files import MODEL_YAML, ModelRef, choose_kind, resolve
from edge_runtime.model.loader import LoadedModel, backend_options, load_model
from edge_runtime.model.runner import InferenceResult, Runner
from edge_runtime.model.slot import ModelSlot, load_runner, open_slot, summary
from edge_runtime.model.spec import ModelSpec
from edge_runtime.model.window import WindowResult, WindowRunner, make_runner, source_mismatch

__all__ = [
    "MODEL_YAML",
    "InferenceResult",
    "LoadedModel",
    "ModelRef",
    "ModelSlot",
    "ModelSpec",
    "Runner",
    "WindowResult",
    "WindowRunner",
    "backend_options",
    "choose_kind",
    "load_model",
    "load_runner",
    "make_runner",
    "open_slot",
    "resolve",
    "source_mismatch",
    "summary",
]
