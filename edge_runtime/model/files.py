"""Where a model's files are: a MODEL argument resolved to model.yaml and model files.

A MODEL argument is a ``.onnx``/``.tflite`` file or a bundle folder with a ``model.yaml``; no
runtime is involved here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_runtime.config.vocabulary import ONNX_ACCELERATORS, TFLITE_ACCELERATORS
from edge_runtime.config.yamlsource import load_yaml, parse_model
from edge_runtime.errors import BackendUnavailableError, ModelError
from edge_runtime.hashing import file_sha256
from edge_runtime.inference import MODEL_SUFFIX, backend_installed
from edge_runtime.model.spec import ModelSpec

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


def verify_hashes(ref: ModelRef, file: Path, sha: str) -> None:
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
