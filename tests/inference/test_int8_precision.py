"""Why the ONNX int8 answers are exact on every CPU, checked where a CPU cannot hide it.

tests/model/test_bundled_models.py compares the backend's default int8 path with ONNX Runtime's
exact one, but on VNNI and ARM CPUs both run the same kernels, so it cannot fail there. On x86
without VNNI, ORT's fast kernels add two uint8 x int8 products in 16 bits. The person detector's
weights of every full (non-depthwise) convolution fit in 7 bits, so those sums stay within 16 bits
(2 * 255 * 64 = 32,640); the classifier uses all 8 bits and is exact because the backend turns on
the exact path on such CPUs. Both are properties checked here on any machine, and ``exact_int8``
in a config (true, false, unset) must reach the ONNX Runtime session itself. Where qemu-user is
installed, the last test runs ONNX Runtime on an emulated Haswell (AVX2, no VNNI), on the very
kernels these claims are about.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.config.loader import load_config
from edge_runtime.inference import BackendOptions
from edge_runtime.inference.onnx import OnnxBackend, cpu_lacks_vnni, lacks_vnni
from edge_runtime.model import Runner, backend_options, load_model

from ..conftest import CLASSIFIER, DETECTOR, image

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


_EMULATED_RUN = """
import json, sys
from pathlib import Path
import cv2
from edge_runtime.inference import BackendOptions
from edge_runtime.inference.onnx import OnnxBackend
from edge_runtime.model import Runner, load_model
bundle, images = Path(sys.argv[1]), sys.argv[2:]
model = load_model(bundle, "onnx", BackendOptions(threads=1))
feeds = [Runner(model).prepare(cv2.imread(p))[0] for p in images]
model.close()
(path,) = bundle.glob("*.onnx")
out = {}
for exact in (True, False):
    backend = OnnxBackend(path, BackendOptions(threads=1, exact_int8=exact))
    out[str(exact)] = [[o.tolist() for o in backend.infer(f)] for f in feeds]
    backend.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("bundle", [CLASSIFIER, DETECTOR], ids=["classifier", "detector"])
def test_on_an_emulated_x86_cpu_without_vnni_the_answers_are_exact(bundle: Path) -> None:
    """The claims above, on the kernels they are about: ONNX Runtime run by qemu as a Haswell
    (AVX2, no VNNI). ``exact_int8: true`` gives bit for bit what this machine's exact path gives
    (the classifier's 8-bit weights need it); the default kernels give it too for the detector,
    whose full convolutions use 7-bit weights, and saturate for the classifier (checked, so that
    this test fails if the emulated CPU ever stops exercising those kernels). The daemon turns the
    exact path on from /proc/cpuinfo, which qemu-user does not emulate, so both settings are set
    explicitly here."""
    qemu = shutil.which("qemu-x86_64-static")
    if platform.machine() not in ("x86_64", "AMD64") or qemu is None:
        pytest.skip("needs an x86_64 host with qemu-x86_64-static (qemu-user-static)")
    names = ("astronaut", "chelsea", "coffee", "rocket")
    paths = [str(image(n)) for n in names]
    run = subprocess.run(
        [qemu, "-cpu", "Haswell", sys.executable, "-c", _EMULATED_RUN, str(bundle), *paths],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    emulated = json.loads(run.stdout.strip().splitlines()[-1])
    model = load_model(bundle, "onnx", BackendOptions(threads=1))
    (path,) = bundle.glob("*.onnx")
    native = OnnxBackend(path, BackendOptions(threads=1, exact_int8=True))
    try:
        reference = [
            [o.tolist() for o in native.infer(Runner(model).prepare(cv2.imread(p))[0])] for p in paths
        ]
    finally:
        native.close()
        model.close()

    def worst(key: str) -> float:
        return max(
            float(np.abs(np.asarray(a) - np.asarray(b)).max())
            for got, want in zip(emulated[key], reference, strict=True)
            for a, b in zip(got, want, strict=True)
        )

    assert worst("True") <= 1e-5, "exact_int8 on a CPU without VNNI differs from the exact answers"
    if bundle == DETECTOR:
        assert worst("False") <= 1e-5, "7-bit weights saturated the default kernels"
    else:
        assert worst("False") > 0.1, "the emulated CPU did not run the saturating kernels"
