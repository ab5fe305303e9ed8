"""ONNX Runtime execution-provider selection: what was asked, what exists, what we choose."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.config.vocabulary import ONNX_ACCELERATORS
from edge_runtime.errors import AcceleratorError

PROVIDER_OF = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "acl": "ACLExecutionProvider",
    "armnn": "ArmNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
ACCELERATOR_OF = {v: k for k, v in PROVIDER_OF.items()}

# `auto` preference, best first: the config's ONNX accelerator names in their order. XNNPACK is
# left out: on x86 and most ARM boards ORT's own CPU kernels (MLAS) are as fast or faster for
# int8 QDQ models.
AUTO_ORDER = tuple(a for a in ONNX_ACCELERATORS if a != "xnnpack")

INSTALL_HINT = {
    "tensorrt": "an onnxruntime build with TensorRT (onnxruntime-gpu, or the JetPack wheel on Jetson) "
    "and TensorRT itself",
    "cuda": "onnxruntime-gpu (or the JetPack onnxruntime wheel on Jetson) with a matching CUDA/cuDNN",
    "openvino": "onnxruntime-openvino",
    "rocm": "an onnxruntime build with ROCm",
    "qnn": "onnxruntime-qnn",
    "dml": "onnxruntime-directml",
}


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    """Providers (with options) to pass to ``InferenceSession`` and why they were chosen."""

    providers: list[tuple[str, dict[str, Any]]]
    accelerator: str
    reason: str


def engine_cache_dir(root: Path, model_sha256: str) -> Path:
    """Per-model TensorRT engine cache: a changed model never reuses a stale engine."""
    return root / "tensorrt" / model_sha256[:16]


def _options(acc: str, user: Mapping[str, Any], cache_root: Path | None, sha: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if acc == "tensorrt" and cache_root is not None:
        cache = engine_cache_dir(cache_root, sha)
        opts |= {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
    return opts | dict(user)


def choose_providers(
    accelerator: str,
    available: Sequence[str],
    *,
    fallback_allowed: bool,
    provider_options: Mapping[str, Any] | None = None,
    cache_root: Path | None = None,
    model_sha256: str = "",
) -> ProviderChoice:
    """Pick providers for ``accelerator`` among ``available`` (``ort.get_available_providers()``).

    TensorRT is followed by CUDA (for the nodes TensorRT does not take) when CUDA exists; CPU is
    always last, as ONNX Runtime assigns unsupported nodes to it.
    """
    have = {ACCELERATOR_OF[p] for p in available if p in ACCELERATOR_OF}
    user = provider_options or {}
    if accelerator == "auto":
        chosen = next(a for a in (*AUTO_ORDER, "cpu") if a in have or a == "cpu")
        reason = f"auto: best of available providers {sorted(available)}"
    elif accelerator not in PROVIDER_OF:
        raise AcceleratorError(
            f"accelerator {accelerator!r} is not an ONNX Runtime provider; use one of {sorted(PROVIDER_OF)}"
        )
    elif accelerator in have:
        chosen, reason = accelerator, "requested in config"
    elif fallback_allowed:
        chosen = "cpu"
        reason = (
            f"requested {accelerator!r} is not available here (have {sorted(available)}); falling back to CPU"
        )
    else:
        hint = INSTALL_HINT.get(accelerator, f"an onnxruntime build with {PROVIDER_OF[accelerator]}")
        raise AcceleratorError(
            f"accelerator {accelerator!r} needs {PROVIDER_OF[accelerator]}, which this onnxruntime "
            f"does not have (available: {', '.join(available)}); install {hint}, "
            "or set allow_cpu_fallback: true"
        )
    names = [chosen]
    if chosen == "tensorrt" and "cuda" in have:
        names.append("cuda")
    if chosen != "cpu":
        names.append("cpu")
    providers = [
        (PROVIDER_OF[n], _options(n, user if n == chosen else {}, cache_root, model_sha256)) for n in names
    ]
    return ProviderChoice(providers, chosen, reason)
