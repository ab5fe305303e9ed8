"""The backend Protocol: backends only run tensors (decoding lives in ``postprocess/``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy.typing as npt

from edge_runtime.types import TensorSpec


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """How to run a model; every field has a default that works on a CPU-only box.

    ``allow_cpu_fallback=None`` means: allowed for ``accelerator="auto"``, refused otherwise.
    """

    accelerator: str = "auto"
    threads: int | None = None
    allow_cpu_fallback: bool | None = None
    graph_optimization: str = "all"  # onnx: disabled | basic | extended | all
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None  # onnx/tensorrt: engine cache root
    device: str | None = None  # tflite/edgetpu: usb | usb:N | pci:N
    delegate_path: str | None = None  # tflite: external delegate library
    delegate_options: Mapping[str, Any] = field(default_factory=dict)
    xnnpack: bool = True  # tflite: use the XNNPACK CPU delegate
    spin_wait: bool | None = None  # onnx: idle intra-op threads spin (None: the runtime's default, on)
    # onnx: exact uint8 x uint8 products on x86 CPUs without VNNI (None: there, and only there)
    exact_int8: bool | None = None
    # Copies of the model that run at once, ``threads`` split among them (inference/pool.py);
    # None: one per thread on the CPU, one on an accelerator.
    streams: int | None = 1

    @property
    def fallback_allowed(self) -> bool:
        """Whether a missing accelerator may silently become the CPU."""
        if self.allow_cpu_fallback is None:
            return self.accelerator == "auto"
        return self.allow_cpu_fallback


@runtime_checkable
class Backend(Protocol):
    """A loaded model that turns input arrays into output arrays."""

    kind: str  # "onnx" | "tflite"
    accelerator: str  # what actually runs it: cpu, xnnpack, cuda, tensorrt, edgetpu, ...
    input_specs: Sequence[TensorSpec]
    output_specs: Sequence[TensorSpec]
    metadata: Mapping[str, str]  # model-embedded metadata (ONNX custom metadata map)
    concurrent: bool  # infer() may run on several threads at once (one instance serves every stream)

    def infer(self, inputs: Sequence[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """Run once; inputs in ``input_specs`` order, outputs in ``output_specs`` order."""
        ...

    def close(self) -> None:
        """Release the runtime's resources."""
        ...


def guess_layout(shape: Sequence[int]) -> str:
    """NCHW or NHWC for 4-D image tensors (channels 1, 3 or 4), else 'other'."""
    if len(shape) != 4:
        return "other"
    if shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return "NCHW"
    if shape[3] in (1, 3, 4):
        return "NHWC"
    return "NCHW" if shape[1] in (1, 3, 4) else "other"
