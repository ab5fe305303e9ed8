"""ONNX Runtime backend."""

from __future__ import annotations

import logging
import platform
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import AcceleratorError, BackendUnavailableError, ModelError, first_line
from edge_runtime.hashing import file_sha256
from edge_runtime.inference.base import BackendOptions, guess_layout
from edge_runtime.inference.providers import ACCELERATOR_OF, choose_providers
from edge_runtime.types import TensorSpec

logger = logging.getLogger(__name__)

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnx: onnxruntime is not installed; install edge-runtime[onnx] "
            "(or onnxruntime-gpu / the JetPack wheel for GPU)"
        ) from exc
    return onnxruntime


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    dtype = np.dtype(_DTYPES.get(arg.type, np.float32))
    return TensorSpec(arg.name, shape, dtype, guess_layout(shape))  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def cpu_lacks_vnni() -> bool:
    """An x86 CPU without VNNI (AVX2, AVX-512F: most x86 before Ice Lake / Zen 4).

    There ONNX Runtime's default uint8 x int8 kernels add pairs of products in 16 bits and saturate
    with 8-bit weights, so int8 models need its exact kernels to give the answers they give on
    VNNI and ARM CPUs (and on LiteRT). Other machines: False. Unknown x86 flags: True (exact is
    never wrong, only slower).
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        flags = None
    return lacks_vnni(platform.machine(), flags)


def lacks_vnni(machine: str, cpuinfo: str | None) -> bool:
    """:func:`cpu_lacks_vnni` for a given ``platform.machine()`` and ``/proc/cpuinfo`` (None: unreadable)."""
    if machine.lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    if cpuinfo is None:
        return True
    return re.search(r"\b(avx512_vnni|avx_vnni)\b", cpuinfo) is None


def _session_options(ort: Any, options: BackendOptions) -> Any:
    so = ort.SessionOptions()
    levels = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so.graph_optimization_level = levels[options.graph_optimization]
    if options.threads:
        so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    if options.spin_wait is not None:
        # Spinning threads answer the next call a little sooner but burn a core while they wait:
        # on a small board that core is what decoding and publishing need.
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spin_wait else "0")
    if options.exact_int8 or (options.exact_int8 is None and cpu_lacks_vnni()):
        # x86 without VNNI: ORT's uint8 x int8 kernels add pairs of products in 16 bits, which
        # saturates with 8-bit weights; this converts the weights to uint8 for exact kernels.
        so.add_session_config_entry("session.x64quantprecision", "1")
    so.log_severity_level = 3  # ORT's own warnings go to stderr unformatted; we log what matters
    return so


class OnnxBackend:
    """A model in an ``onnxruntime.InferenceSession`` with the chosen execution providers."""

    kind = "onnx"
    concurrent = True  # InferenceSession.run is thread-safe; each call runs on its caller's thread

    def __init__(self, path: Path, options: BackendOptions | None = None, sha256: str | None = None) -> None:
        ort = _import_ort()
        options = options or BackendOptions()
        choice = choose_providers(
            options.accelerator,
            ort.get_available_providers(),
            fallback_allowed=options.fallback_allowed,
            provider_options=options.provider_options,
            cache_root=options.cache_dir,
            model_sha256=sha256 or (file_sha256(path) if options.cache_dir else ""),
        )
        for _, opts in choice.providers:
            if "trt_engine_cache_path" in opts:
                Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=_session_options(ort, options), providers=choice.providers
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise ModelError(f"{path}: onnxruntime cannot load the model: {first_line(exc)}") from exc
        self.accelerator = self._check_active(choice.accelerator, options)
        self.input_specs: Sequence[TensorSpec] = [_spec(a) for a in self._session.get_inputs()]
        self.output_specs: Sequence[TensorSpec] = [_spec(a) for a in self._session.get_outputs()]
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self._input_names = [s.name for s in self.input_specs]
        self._output_names = [s.name for s in self.output_specs]
        logger.info(
            "onnx: %s on %s (providers %s; threads %s; %s)",
            path.name,
            self.accelerator,
            self._session.get_providers(),
            options.threads or "default",
            choice.reason,
        )

    def _check_active(self, wanted: str, options: BackendOptions) -> str:
        """ORT silently drops a provider that fails to initialise; notice and decide."""
        active: list[str] = [ACCELERATOR_OF.get(p, p) for p in self._session.get_providers()]
        if wanted in active:
            return wanted
        if not options.fallback_allowed:
            raise AcceleratorError(
                f"onnxruntime could not initialise the {wanted!r} provider (active: {active}); "
                "check the GPU driver/CUDA/TensorRT libraries, or set allow_cpu_fallback: true"
            )
        logger.warning("onnx: %s provider failed to initialise; running on %s", wanted, active[0])
        return active[0]

    def infer(self, inputs: Sequence[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """Run the session once."""
        feed = dict(zip(self._input_names, inputs, strict=True))
        return self._session.run(self._output_names, feed)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Drop the session (ORT frees it with the last reference)."""
        self._session = None
