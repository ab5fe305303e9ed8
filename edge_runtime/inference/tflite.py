"""TFLite backend: LiteRT (``ai-edge-litert``), or ``tflite_runtime`` as Coral users often have.

Delegates: Edge TPU (``libedgetpu.so.1``), the GPU delegate, or any external delegate library;
XNNPACK is LiteRT's default CPU path.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import AcceleratorError, BackendUnavailableError, ModelError, first_line
from edge_runtime.inference.base import BackendOptions, guess_layout
from edge_runtime.types import Quantization, TensorSpec

logger = logging.getLogger(__name__)

EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
GPU_DELEGATE_LIBRARY = "libtensorflowlite_gpu_delegate.so"
EDGETPU_HINT = (
    "check that the Edge TPU runtime is installed (apt install libedgetpu1-std), the Coral is "
    "connected (lsusb shows 1a6e:089a or 18d1:9302; prefer a USB3 port) or /dev/apex_0 exists for "
    "PCIe, and the user is in the plugdev (USB) or apex (PCIe) group"
)


def _import_runtime() -> Any:
    """The interpreter module: LiteRT first, then the older tflite_runtime."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError as exc:
            raise BackendUnavailableError(
                "tflite: neither ai-edge-litert nor tflite-runtime is installed; install edge-runtime[tflite]"
            ) from exc
    _quiet_half_made_delegates(interpreter)
    return interpreter


def _quiet_half_made_delegates(runtime: Any) -> None:
    """A delegate library that does not load leaves LiteRT's ``Delegate`` half made: its
    ``__init__`` raises before it sets ``_library``, and its ``__del__`` then fails on the missing
    attribute, printing "Exception ignored in: Delegate.__del__" and a traceback after our own
    clear message. A class-level ``_library = None`` makes that ``__del__`` do nothing (it already
    does nothing for a delegate it has destroyed); a delegate that loads sets its own."""
    delegate = getattr(runtime, "Delegate", None)
    if isinstance(delegate, type) and not hasattr(delegate, "_library"):
        delegate._library = None  # type: ignore[attr-defined]


def is_edgetpu_model(path: Path) -> bool:
    """Models compiled by edgetpu_compiler carry an ``edgetpu-custom-op`` node."""
    with path.open("rb") as fh:
        return b"edgetpu-custom-op" in fh.read()


def edgetpu_only(path: Path, reason: str) -> str:
    """Why a model compiled for the Edge TPU cannot run here, and what runs on the CPU instead.

    edgetpu_compiler replaces the graph (or most of it) with one ``edgetpu-custom-op`` node whose
    options are a program for the Edge TPU: no CPU kernel exists for it, so falling back to the
    CPU cannot help (LiteRT would only say "unresolved custom op"). The file it was compiled from
    (the same name without ``_edgetpu``, as edgetpu_compiler and Ultralytics name them) runs on a CPU.
    """
    source = path.with_name(path.name.replace("_edgetpu", "")) if "_edgetpu" in path.name else None
    if source is not None and source.exists():
        instead = f"{source.name} next to it (the model it was compiled from)"
    elif source is not None:
        instead = f"the model it was compiled from ({source.name})"
    else:
        instead = "the model it was compiled from"
    return (
        f"{path}: compiled for the Edge TPU (edgetpu-custom-op): it runs only on a Coral with the "
        f"Edge TPU runtime, and the CPU cannot run it, fallback or not; {reason}. "
        f"To run on the CPU, use {instead}"
    )


@contextmanager
def native_info_hidden() -> Iterator[None]:
    """While logging is above INFO (``-q``), drop the runtime's native ``INFO:`` lines from stderr.

    LiteRT's C++ logger writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight
    to file descriptor 2 when an interpreter is created, and ai-edge-litert 2.x has no setting for
    it (TF_CPP_MIN_LOG_LEVEL does not reach that logger). So fd 2 goes to a temporary file for the
    call, and every other line (the runtime's warnings and errors, and anything another thread
    wrote meanwhile) is copied to the real stderr afterwards, exception or not.
    """
    if logger.isEnabledFor(logging.INFO):
        yield
        return
    try:
        _flush_stderr()
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = b"".join(line for line in capture if not line.startswith(b"INFO: "))
            while kept:
                kept = kept[os.write(2, kept) :]


def _flush_stderr() -> None:
    """Python's buffered stderr out first, so that it lands on the fd it was written for."""
    if sys.stderr is not None:
        sys.stderr.flush()


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    shape = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
    scale, zero_point = detail.get("quantization", (0.0, 0))
    q = Quantization(float(scale), int(zero_point)) if scale else None
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]), guess_layout(shape), q)  # type: ignore[arg-type]


class TfliteBackend:
    """A ``.tflite`` model in a LiteRT interpreter, optionally with a delegate."""

    kind = "tflite"
    concurrent = False  # an Interpreter holds its tensors: one call at a time

    def __init__(self, path: Path, options: BackendOptions | None = None, sha256: str | None = None) -> None:
        del sha256  # engine caches are an ONNX/TensorRT matter
        rt = _import_runtime()
        options = options or BackendOptions()
        accelerator = options.accelerator
        compiled = is_edgetpu_model(path)
        if accelerator == "auto":
            accelerator = "edgetpu" if compiled else "cpu"
        if compiled and accelerator in ("cpu", "xnnpack"):
            raise AcceleratorError(edgetpu_only(path, f"accelerator {accelerator} was asked for"))
        delegates, self.accelerator = self._delegates(rt, accelerator, options, path if compiled else None)
        self._interpreter = self._make_interpreter(rt, path, options, delegates, compiled)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        self.input_specs: Sequence[TensorSpec] = [_spec(d) for d in inputs]
        self.output_specs: Sequence[TensorSpec] = [_spec(d) for d in outputs]
        self.metadata: Mapping[str, str] = {}
        self._input_index = [int(d["index"]) for d in inputs]
        self._output_index = [int(d["index"]) for d in outputs]
        logger.info(
            "tflite: %s on %s (threads %s; runtime %s)",
            path.name,
            self.accelerator,
            options.threads or "default",
            rt.__name__,
        )

    @staticmethod
    def _make_interpreter(
        rt: Any, path: Path, options: BackendOptions, delegates: list[Any], compiled: bool
    ) -> Any:
        kwargs: dict[str, Any] = {"model_path": str(path), "experimental_delegates": delegates or None}
        if options.threads:
            kwargs["num_threads"] = options.threads
        if not options.xnnpack and hasattr(rt, "OpResolverType"):
            kwargs["experimental_op_resolver_type"] = rt.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with native_info_hidden():
                interpreter = rt.Interpreter(**kwargs)
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            if compiled and "edgetpu-custom-op" in str(exc):  # a delegate other than the Edge TPU's
                raise AcceleratorError(
                    edgetpu_only(path, f"the delegates given cannot run it: {first_line(exc)}")
                ) from exc
            raise ModelError(f"{path}: the TFLite runtime cannot load the model: {first_line(exc)}") from exc
        return interpreter

    def _delegates(
        self, rt: Any, accelerator: str, options: BackendOptions, compiled: Path | None
    ) -> tuple[list[Any], str]:
        """Load the delegate for ``accelerator``; on failure fall back to CPU only if allowed and
        the model can run there (``compiled``: the path of a model compiled for the Edge TPU)."""
        if accelerator in ("cpu", "xnnpack"):
            return [], accelerator
        library, delegate_options, hint = self._delegate_target(accelerator, options)
        try:
            return [rt.load_delegate(library, delegate_options)], accelerator
        except (ValueError, OSError, RuntimeError) as exc:
            message = f"tflite: cannot load the {accelerator} delegate ({library}): {first_line(exc)}; {hint}"
            if compiled is not None:
                raise AcceleratorError(edgetpu_only(compiled, message)) from exc
            if not options.fallback_allowed:
                raise AcceleratorError(message + "; or set allow_cpu_fallback: true") from exc
            logger.warning("%s; falling back to CPU", message)
            return [], "cpu"

    @staticmethod
    def _delegate_target(accelerator: str, options: BackendOptions) -> tuple[str, dict[str, Any], str]:
        opts = {str(k): str(v) for k, v in options.delegate_options.items()}
        if accelerator == "edgetpu":
            if options.device:
                opts["device"] = options.device
            library = EDGETPU_LIBRARY.get(platform.system(), EDGETPU_LIBRARY["Linux"])
            return library, opts, EDGETPU_HINT
        if accelerator == "gpu":
            library = options.delegate_path or GPU_DELEGATE_LIBRARY
            return (
                library,
                opts,
                "check that the TFLite GPU delegate library and an OpenCL/GL driver are installed",
            )
        if accelerator == "external":
            if not options.delegate_path:
                raise AcceleratorError("accelerator 'external' needs delegate_path: the delegate library")
            return options.delegate_path, opts, "check the delegate library path and its options"
        raise AcceleratorError(
            f"accelerator {accelerator!r} is not available for TFLite; "
            "use cpu, xnnpack, edgetpu, gpu or external"
        )

    def infer(self, inputs: Sequence[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """Set inputs, invoke, copy outputs out (the interpreter reuses its buffers)."""
        interpreter = self._interpreter
        for index, array in zip(self._input_index, inputs, strict=True):
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in self._output_index]

    def close(self) -> None:
        """Drop the interpreter and its delegates."""
        self._interpreter = None
