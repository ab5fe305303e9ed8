"""Why the ONNX int8 fast path is exact on every CPU, checked where a CPU cannot hide it.

tests/model/test_bundled_models.py compares ONNX Runtime's fast and exact int8 paths, but on VNNI
and ARM CPUs both run the same kernels, so it cannot fail there. What makes the fast path exact
on x86 without VNNI is a property of the files, checked here on any machine: the weights of
every full (non-depthwise) convolution and matrix product fit in 7 bits, so two uint8 x int8
products add up to at most 2 * 255 * 64 = 32,640, within the 16 bits those kernels add them in.
And ``exact_int8: true`` in a config must reach the ONNX Runtime session itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.config.loader import load_config
from edge_runtime.inference.onnx import OnnxBackend
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


@pytest.mark.parametrize("bundle", [CLASSIFIER, DETECTOR], ids=["classifier", "detector"])
def test_full_products_use_7_bit_weights_so_16_bit_pair_sums_cannot_saturate(bundle: Path) -> None:
    (path,) = bundle.glob("*.onnx")
    weights = _matrix_weights(path)
    full = [(name, w) for name, group, w in weights if group == 1]
    assert len(full) >= 4, "no full convolution found: the check would be empty"
    for name, w in full:
        assert w.dtype == np.int8, (name, w.dtype)
        largest = int(np.abs(w.astype(np.int32)).max())
        assert 2 * 255 * largest <= INT16_MAX, f"{name}: weight {largest} saturates a 16-bit pair sum"


def test_exact_int8_from_the_config_reaches_the_onnx_runtime_session(tmp_path: Path) -> None:
    model = Path(__file__).parents[1] / "data" / "saturating_int8.onnx"
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"models:\n  m:\n    path: {model}\n    exact_int8: true\n  n:\n    path: {model}\n"
        "pipelines:\n  - {name: p, model: m, source: {type: synthetic}}\n"
        "  - {name: q, model: n, source: {type: synthetic}}\n"
    )
    cfg = load_config(config)
    exact = OnnxBackend(model, backend_options(cfg.models["m"], tmp_path))
    default = OnnxBackend(model, backend_options(cfg.models["n"], tmp_path))
    try:
        assert exact._session.get_session_options().get_session_config_entry(PRECISION_KEY) == "1"
        with pytest.raises(RuntimeError, match="does not have configuration"):
            default._session.get_session_options().get_session_config_entry(PRECISION_KEY)
        (out,) = exact.infer([np.ones((1, 64), np.float32)])
        np.testing.assert_allclose(out, 64.0, rtol=1e-5)  # exact on every CPU
    finally:
        exact.close()
        default.close()
