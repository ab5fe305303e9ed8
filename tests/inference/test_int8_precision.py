"""Why the ONNX int8 answers are exact on every CPU, checked where a CPU cannot hide it.

tests/model/test_bundled_models.py compares the backend's default int8 path with ONNX Runtime's
exact one, but on VNNI and ARM CPUs both run the same kernels, so it cannot fail there. On x86
without VNNI, ORT's fast kernels add two uint8 x int8 products in 16 bits. The person detector's
weights of every full (non-depthwise) convolution fit in 7 bits, so those sums stay within 16 bits
(2 * 255 * 64 = 32,640); the classifier uses all 8 bits and is exact because the backend turns on
the exact path on such CPUs. Both are properties checked here on any machine, and ``exact_int8``
in a config (true, false, unset) must reach the ONNX Runtime session itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.config.loader import load_config
from edge_runtime.inference import BackendOptions
from edge_runtime.inference.onnx import OnnxBackend, cpu_lacks_vnni, lacks_vnni
from edge_runtime.model import backend_options

from ..conftest import CLASSIFIER, DETECTOR

onnx = pytest.importorskip("onnx", reason="the onnx package (test extras) reads the model files")
numpy_helper = pytest.importorskip("onnx.numpy_helper")

INT16_MAX = 32_767
PRECISION_KEY = "session.x64quantprecision"


def _matrix_weights(path: Path) -> list[tuple[str, int, np.ndarray]]:
    """(node, group, int8 weights) of every Conv/MatMul/Gemm whose weights are dequantised."""
    graph = onnx.load(str(path)).graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    found = []
    for node in graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        assert dq is not None and dq.op_type == "DequantizeLinear", f"{node.name}: weights not int8"
        weights = constants[dq.input[0]]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        found.append((node.name, group, weights))
    return found


def test_detector_full_products_use_7_bit_weights_so_16_bit_pair_sums_cannot_saturate() -> None:
    (path,) = DETECTOR.glob("*.onnx")
    weights = _matrix_weights(path)
    full = [(name, w) for name, group, w in weights if group == 1]
    assert len(full) >= 4, "no full convolution found: the check would be empty"
    for name, w in full:
        assert w.dtype == np.int8, (name, w.dtype)
        largest = int(np.abs(w.astype(np.int32)).max())
        assert 2 * 255 * largest <= INT16_MAX, f"{name}: weight {largest} saturates a 16-bit pair sum"


def test_classifier_uses_8_bit_weights_which_need_the_exact_path_on_x86_without_vnni() -> None:
    (path,) = CLASSIFIER.glob("*.onnx")
    full = [w for _, group, w in _matrix_weights(path) if group == 1]
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in full) * 2 * 255 > INT16_MAX
    backend = OnnxBackend(path, BackendOptions(threads=1))
    try:
        options = backend._session.get_session_options()
        if cpu_lacks_vnni():
            assert options.get_session_config_entry(PRECISION_KEY) == "1"
        else:  # VNNI and ARM: the default kernels are exact already
            with pytest.raises(RuntimeError, match="does not have configuration"):
                options.get_session_config_entry(PRECISION_KEY)
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("machine", "cpuinfo", "lacks"),
    [
        ("x86_64", "flags : fpu sse2 avx2 fma", True),  # AVX2 only (EPYC Zen 2, Skylake client)
        ("x86_64", "flags : avx2 avx512f avx512bw", True),  # AVX-512 without VNNI (Skylake-SP)
        ("x86_64", "flags : avx2 avx512f avx512_vnni", False),  # Cascade Lake and later
        ("x86_64", "flags : avx2 avx_vnni", False),  # Alder Lake
        ("AMD64", None, True),  # flags unreadable (Windows): exact is never wrong
        ("aarch64", "Features : fp asimd asimddp", False),
    ],
)
def test_vnni_detection_from_cpu_flags(machine: str, cpuinfo: str | None, lacks: bool) -> None:
    assert lacks_vnni(machine, cpuinfo) is lacks


def test_exact_int8_from_the_config_reaches_the_onnx_runtime_session(tmp_path: Path) -> None:
    model = Path(__file__).parents[1] / "data" / "saturating_int8.onnx"
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"models:\n  m:\n    path: {model}\n    exact_int8: true\n  n:\n    path: {model}\n"
        f"  o:\n    path: {model}\n    exact_int8: false\n"
        "pipelines:\n  - {name: p, model: m, source: {type: synthetic}}\n"
        "  - {name: q, model: n, source: {type: synthetic}}\n"
        "  - {name: r, model: o, source: {type: synthetic}}\n"
    )
    cfg = load_config(config)
    exact, default, fast = (OnnxBackend(model, backend_options(cfg.models[k], tmp_path)) for k in "mno")
    try:
        assert exact._session.get_session_options().get_session_config_entry(PRECISION_KEY) == "1"
        with pytest.raises(RuntimeError, match="does not have configuration"):
            fast._session.get_session_options().get_session_config_entry(PRECISION_KEY)
        if cpu_lacks_vnni():  # unset: exact where the CPU needs it
            assert default._session.get_session_options().get_session_config_entry(PRECISION_KEY) == "1"
        for backend in (exact, default):
            (out,) = backend.infer([np.ones((1, 64), np.float32)])
            np.testing.assert_allclose(out, 64.0, rtol=1e-5)  # exact on every CPU
    finally:
        for backend in (exact, default, fast):
            backend.close()
