"""Accelerator selection: ONNX execution providers and TFLite delegates, with and without fallback."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import pytest

from edge_runtime.errors import AcceleratorError
from edge_runtime.inference import BackendOptions, create_backend
from edge_runtime.inference.providers import choose_providers, engine_cache_dir

from ..conftest import CLASSIFIER

JETSON = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
PLAIN = ["AzureExecutionProvider", "CPUExecutionProvider"]


def test_auto_prefers_tensorrt_then_cuda_then_cpu() -> None:
    choice = choose_providers("auto", JETSON, fallback_allowed=True)
    assert [p for p, _ in choice.providers] == JETSON
    assert choice.accelerator == "tensorrt"
    choice = choose_providers(
        "auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], fallback_allowed=True
    )
    assert choice.accelerator == "cuda"
    assert choose_providers("auto", PLAIN, fallback_allowed=True).providers == [("CPUExecutionProvider", {})]


def test_tensorrt_gets_an_engine_cache_keyed_by_model_hash(tmp_path: Path) -> None:
    choice = choose_providers(
        "tensorrt",
        JETSON,
        fallback_allowed=False,
        cache_root=tmp_path,
        model_sha256="ab" * 32,
        provider_options={"trt_fp16_enable": True},
    )
    name, opts = choice.providers[0]
    assert name == "TensorrtExecutionProvider"
    assert opts["trt_engine_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == str(engine_cache_dir(tmp_path, "ab" * 32))
    assert opts["trt_fp16_enable"] is True
    other = choose_providers(
        "tensorrt", JETSON, fallback_allowed=False, cache_root=tmp_path, model_sha256="cd" * 32
    )
    assert other.providers[0][1]["trt_engine_cache_path"] != opts["trt_engine_cache_path"]


def test_missing_provider_is_an_error_that_says_what_to_install() -> None:
    with pytest.raises(AcceleratorError, match="onnxruntime-gpu"):
        choose_providers("cuda", PLAIN, fallback_allowed=False)


def test_missing_provider_falls_back_to_cpu_when_allowed() -> None:
    choice = choose_providers("openvino", PLAIN, fallback_allowed=True)
    assert choice.accelerator == "cpu" and "falling back" in choice.reason


def test_fallback_default_depends_on_accelerator() -> None:
    assert BackendOptions(accelerator="auto").fallback_allowed
    assert not BackendOptions(accelerator="edgetpu").fallback_allowed
    assert BackendOptions(accelerator="edgetpu", allow_cpu_fallback=True).fallback_allowed


def test_onnx_backend_refuses_unavailable_cuda_without_fallback() -> None:
    with pytest.raises(AcceleratorError, match="CUDAExecutionProvider"):
        create_backend(
            "onnx", CLASSIFIER / "efficientnet_lite0_int8.onnx", BackendOptions(accelerator="cuda")
        )


# LiteRT's Delegate.__del__ used to trip over its own half-built object after a failed load
# ("Exception ignored in: Delegate.__del__" and a traceback after our message): no more
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_edgetpu_delegate_failure_explains_what_to_check() -> None:
    """libedgetpu is not installed here: loading the real delegate fails and we say why."""
    with pytest.raises(AcceleratorError) as info:
        create_backend(
            "tflite",
            CLASSIFIER / "efficientnet_lite0_int8.tflite",
            BackendOptions(accelerator="edgetpu", device="usb:0"),
        )
    message = str(info.value)
    assert "libedgetpu.so.1" in message and "plugdev" in message and "allow_cpu_fallback" in message
    del info
    gc.collect()  # the half-made Delegate goes here, under this test's filter: quietly


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_edgetpu_falls_back_to_cpu_when_allowed(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        backend = create_backend(
            "tflite",
            CLASSIFIER / "efficientnet_lite0_int8.tflite",
            BackendOptions(accelerator="edgetpu", allow_cpu_fallback=True),
        )
    assert backend.accelerator == "cpu"
    assert "falling back to CPU" in caplog.text
    backend.close()
    # LiteRT's half-made Delegate is collected here, under this test's filter (its __del__ must
    # stay quiet), not in whichever test the garbage collector happens to run in next.
    gc.collect()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_external_delegate_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    with pytest.raises(AcceleratorError, match=r"nope\.so"):
        create_backend(
            "tflite",
            CLASSIFIER / "efficientnet_lite0_int8.tflite",
            BackendOptions(accelerator="external", delegate_path=str(tmp_path / "nope.so")),
        )
    gc.collect()


@pytest.mark.parametrize("device", ["usb", "usb:0", "pci:0"])
def test_edgetpu_device_reaches_the_delegate_and_a_refusal_says_what_to_check(
    monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    """A Coral on USB or PCIe: the configured ``device`` is what libedgetpu gets; when it refuses
    (no runtime, no stick, no permission on /dev/apex_0 or the USB node), the error names each check."""
    from edge_runtime.inference import tflite

    real = tflite._import_runtime()
    calls: list[tuple[str, dict[str, str]]] = []

    def load_delegate(library: str, options: dict[str, str]) -> None:
        calls.append((library, options))
        raise ValueError(f"Failed to load delegate from {library}")

    parts = {"Interpreter": real.Interpreter, "load_delegate": staticmethod(load_delegate)}
    runtime = type("runtime", (), parts)
    monkeypatch.setattr(tflite, "_import_runtime", lambda: runtime)
    with pytest.raises(AcceleratorError) as info:
        create_backend(
            "tflite",
            CLASSIFIER / "efficientnet_lite0_int8.tflite",
            BackendOptions(accelerator="edgetpu", device=device),
        )
    assert calls == [("libedgetpu.so.1", {"device": device})]
    message = str(info.value)
    checks = ("libedgetpu1-std", "lsusb", "/dev/apex_0", "plugdev (USB) or apex (PCIe)", "allow_cpu_fallback")
    for check in checks:
        assert check in message, (check, message)
