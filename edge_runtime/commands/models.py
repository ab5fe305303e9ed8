"""``edge-runtime models``: bundled models and what can run them on this machine."""

from __future__ import annotations

import argparse
import ctypes.util
import json
from pathlib import Path
from typing import Any

from edge_runtime.config.yamlsource import load_yaml, parse_model
from edge_runtime.errors import EdgeRuntimeError, InputError
from edge_runtime.inference import BACKENDS, backend_installed
from edge_runtime.model.spec import ModelSpec


def default_models_dir() -> Path:
    """``./models`` when it exists, else the ``models/`` of a source checkout."""
    here = Path("models")
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "models"


def _onnx_providers() -> list[str]:
    if not backend_installed("onnx"):
        return []
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def _tflite_delegates() -> dict[str, bool]:
    """Which delegate libraries the dynamic loader can find (nothing is loaded)."""
    return {
        "edgetpu": ctypes.util.find_library("edgetpu") is not None,
        "gpu": ctypes.util.find_library("tensorflowlite_gpu_delegate") is not None,
    }


def runtimes() -> dict[str, Any]:
    """Installed runtimes and their accelerators."""
    return {
        "onnx": {"installed": backend_installed("onnx"), "providers": _onnx_providers()},
        "tflite": {
            "installed": backend_installed("tflite"),
            "delegates": {"xnnpack": backend_installed("tflite"), **_tflite_delegates()},
        },
    }


def bundles(folder: Path) -> list[dict[str, Any]]:
    """Every ``*/model.yaml`` under ``folder``, with its files and whether they can run here."""
    out: list[dict[str, Any]] = []
    for yaml_path in sorted(folder.glob("*/model.yaml")):
        try:
            spec = parse_model(load_yaml(yaml_path), ModelSpec)
        except EdgeRuntimeError as exc:
            out.append({"path": str(yaml_path.parent), "error": str(exc).splitlines()[0]})
            continue
        files = {k: v for k, v in spec.files.model_dump().items() if v}
        out.append(
            {
                "path": str(yaml_path.parent),
                "name": spec.name,
                "version": spec.version,
                "task": spec.task,
                "family": spec.family,
                "license": spec.license,
                "files": files,
                "runnable_with": [k for k in files if k in BACKENDS and backend_installed(k)],
            }
        )
    return out


def cmd_models(args: argparse.Namespace) -> int:
    """Print the bundles and runtimes."""
    folder = Path(args.dir) if args.dir else default_models_dir()
    if args.dir and not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    report: dict[str, Any] = {
        "models_dir": str(folder),
        "models": bundles(folder) if folder.is_dir() else [],
        "runtimes": runtimes(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"models in {folder}:")
    for m in report["models"]:
        if "error" in m:
            print(f"  {m['path']}: INVALID: {m['error']}")
        else:
            print(
                f"  {m['name']} v{m['version']}  {m['task']}/{m['family']}  files: "
                f"{', '.join(m['files'])}  runnable with: "
                f"{', '.join(m['runnable_with']) or 'nothing installed'}"
            )
    rt = report["runtimes"]
    print(
        f"onnx:   {'installed' if rt['onnx']['installed'] else 'not installed'}; providers: "
        f"{', '.join(rt['onnx']['providers']) or '-'}"
    )
    delegates = ", ".join(k for k, v in rt["tflite"]["delegates"].items() if v) or "-"
    print(f"tflite: {'installed' if rt['tflite']['installed'] else 'not installed'}; delegates: {delegates}")
    return 0
