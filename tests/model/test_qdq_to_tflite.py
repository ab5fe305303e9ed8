"""scripts/models/qdq_to_tflite.py and qdq_refine.py: one quantisation, written for both runtimes.

A small float network with the operators of EfficientNet-Lite / MobileNet (a strided SAME conv,
a depthwise conv, ReLU6, a residual Add, global average pooling, a Gemm head) is quantised by
ONNX Runtime's own quantiser, written as a ``.tflite`` and run on both runtimes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="test extra: onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_runtime.inference import BackendOptions  # noqa: E402
from edge_runtime.inference.onnx import OnnxBackend  # noqa: E402
from edge_runtime.inference.tflite import TfliteBackend  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIER = ROOT / "models" / "efficientnet_lite0"
sys.path.insert(0, str(ROOT / "scripts" / "models"))
import qdq_refine  # noqa: E402
import qdq_to_tflite  # noqa: E402


def _float_network(path: Path, *, sigmoid: bool = False) -> Path:
    """input [1,3,32,32] -> stem conv s2 (SAME: pads 0,0,1,1) + ReLU6 -> depthwise 3x3 + ReLU6 ->
    1x1 project -> + stem (residual) -> 1x1 expand + ReLU6 -> global average pool -> [1,16] ->
    Gemm -> 10 logits."""
    rng = np.random.default_rng(7)
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    six, zero = const("six", np.array(6.0)), const("zero", np.array(0.0))

    def conv(
        name: str, x: str, *, cin: int, cout: int, k: int, stride: int, pads: list[int], group: int = 1
    ) -> str:
        w = const(f"{name}.w", rng.normal(0, 0.4, (cout, cin // group, k, k)))
        b = const(f"{name}.b", rng.normal(0, 0.2, cout))
        nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [f"{name}.out"], name=name, strides=[stride] * 2, pads=pads, group=group
            )
        )
        return f"{name}.out"

    def relu6(x: str) -> str:
        nodes.append(helper.make_node("Clip", [x, zero, six], [f"{x}.relu6"], name=f"{x}.clip"))
        return f"{x}.relu6"

    stem = relu6(conv("stem", "input", cin=3, cout=8, k=3, stride=2, pads=[0, 0, 1, 1]))
    dw = relu6(conv("dw", stem, cin=8, cout=8, k=3, stride=1, pads=[1, 1, 1, 1], group=8))
    project = conv("project", dw, cin=8, cout=8, k=1, stride=1, pads=[0] * 4)
    nodes.append(helper.make_node("Add", [project, stem], ["residual"], name="add"))
    last = relu6(conv("expand", "residual", cin=8, cout=16, k=1, stride=1, pads=[0] * 4))
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", [last], ["gated"], name="gate"))
        last = "gated"
    nodes.append(helper.make_node("GlobalAveragePool", [last], ["pooled"], name="pool"))
    inits.append(numpy_helper.from_array(np.array([1, 16], np.int64), "shape"))
    nodes.append(helper.make_node("Reshape", ["pooled", "shape"], ["flat"], name="flatten"))
    w, b = const("fc.w", rng.normal(0, 0.3, (10, 16))), const("fc.b", rng.normal(0, 0.1, 10))
    nodes.append(helper.make_node("Gemm", ["flat", w, b], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # smooth random images, as photos are: low-resolution noise scaled up
    small = rng.uniform(-1, 1, (n, 3, 8, 8)).astype(np.float32)
    return [np.ascontiguousarray(s.repeat(4, axis=1).repeat(4, axis=2)[None]) for s in small]


def _quantise(float_path: Path, out: Path, *, activations: str = "QInt8") -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": x} for x in _images(32, seed=1)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(float_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=getattr(QuantType, activations),
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    return out


def _run_both(
    onnx_path: Path, tflite_path: Path, images: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Real logits from both runtimes through the daemon's backends; the TFLite output's scale."""
    options = BackendOptions(threads=1)
    ort_backend, tfl_backend = OnnxBackend(onnx_path, options), TfliteBackend(tflite_path, options)
    q_in = tfl_backend.input_specs[0].quantization
    q_out = tfl_backend.output_specs[0].quantization
    assert q_in is not None
    a, b = [], []
    for x in images:
        q = np.clip(np.rint(x.transpose(0, 2, 3, 1) / q_in.scale) + q_in.zero_point, -128, 127).astype(
            np.int8
        )
        real = ((q.astype(np.float32) - q_in.zero_point) * q_in.scale).transpose(0, 3, 1, 2)
        a.append(ort_backend.infer([np.ascontiguousarray(real)])[0].reshape(-1))
        out = tfl_backend.infer([q])[0].reshape(-1).astype(np.float32)
        b.append(out if q_out is None else (out - q_out.zero_point) * q_out.scale)
    ort_backend.close()
    tfl_backend.close()
    return np.array(a), np.array(b), (q_out.scale if q_out is not None else 0.0)


def test_the_tflite_file_computes_what_the_onnx_file_computes(tmp_path: Path) -> None:
    """Same int8 weights, biases, scales and zero points: outputs equal or one step apart (two
    kernels may round a requantisation half-way point differently), never more than two."""
    qdq = _quantise(_float_network(tmp_path / "f.onnx"), tmp_path / "q.onnx")
    qdq_to_tflite.convert(qdq, tmp_path / "q.tflite")
    a, b, step = _run_both(qdq, tmp_path / "q.tflite", _images(24, seed=2))
    assert step > 0, "the head stays int8 here"
    steps = np.abs(a - b) / step
    assert steps.max() <= 2.0 + 1e-3, steps.max()
    assert np.mean(steps < 0.5) >= 0.9, np.mean(steps < 0.5)


def test_bias_correction_and_float_head(tmp_path: Path) -> None:
    """After correction the quantised layers' mean outputs match float's; the float head makes
    the logits float on both runtimes, and they agree to float precision of the int8 features."""
    float_path = _float_network(tmp_path / "f.onnx")
    qdq_path = _quantise(float_path, tmp_path / "q.onnx")
    data = _images(32, seed=1)
    qdq, reference = onnx.load(str(qdq_path)), onnx.load(str(float_path))
    before = qdq_refine.correct_biases(qdq, reference, data)
    after = qdq_refine.correct_biases(onnx.load_from_string(qdq.SerializeToString()), reference, data)
    assert set(before) == {"stem", "dw", "project", "expand", "fc"}
    assert max(before.values()) > 1e-3  # int8 rounding did shift the means
    for name in before:  # what is left is the rounding of the int32 bias and of the means
        assert after[name] <= before[name] / 4, (name, before[name], after[name])
    assert qdq_refine.float_head(qdq) == "fc"
    refined = tmp_path / "refined.onnx"
    onnx.save(qdq, str(refined))
    qdq_to_tflite.convert(refined, tmp_path / "refined.tflite")
    a, b, step = _run_both(refined, tmp_path / "refined.tflite", _images(24, seed=2))
    assert step == 0.0, "float logits"
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
    assert np.abs(a - b).max() <= 0.05 * float(np.ptp(a)), np.abs(a - b).max()


def test_uint8_activations_are_the_same_numbers(tmp_path: Path) -> None:
    """int8 activations stored as uint8 (zero point + 128) give ONNX Runtime's exact outputs again
    (ONNX Runtime runs them faster on x86), and a model quantised with uint8 activations from the
    start converts as well as an int8 one."""
    import onnxruntime as ort

    float_path = _float_network(tmp_path / "f.onnx")
    qdq = onnx.load(str(_quantise(float_path, tmp_path / "q.onnx")))
    assert qdq_refine.uint8_activations(qdq) > 0
    onnx.save(qdq, str(tmp_path / "u.onnx"))
    sessions = [
        ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"])
        for f in ("q.onnx", "u.onnx")
    ]
    for x in _images(8, seed=3):
        a, b = (s.run(None, {"input": x})[0] for s in sessions)
        np.testing.assert_array_equal(a, b)
    converted = [
        qdq_to_tflite.Converter(onnx.load(str(tmp_path / f))).convert("") for f in ("q.onnx", "u.onnx")
    ]
    assert converted[0] == converted[1]
    uint8_from_the_start = _quantise(float_path, tmp_path / "u8.onnx", activations="QUInt8")
    qdq_to_tflite.convert(uint8_from_the_start, tmp_path / "u8.tflite")
    a, b, step = _run_both(uint8_from_the_start, tmp_path / "u8.tflite", _images(8, seed=2))
    assert np.abs(a - b).max() / step <= 2.0 + 1e-3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("float", "stem: input 'input' is not a quantised activation"),
        ("sigmoid", "gate: Sigmoid is not translated"),
    ],
)
def test_what_it_cannot_translate_is_refused_by_name(tmp_path: Path, change: str, message: str) -> None:
    float_path = _float_network(tmp_path / "f.onnx", sigmoid=change == "sigmoid")
    model = float_path if change == "float" else _quantise(float_path, tmp_path / "q.onnx")
    with pytest.raises(qdq_to_tflite.UnsupportedGraphError, match=message):
        qdq_to_tflite.convert(model, tmp_path / "q.tflite")
    assert not (tmp_path / "q.tflite").exists()


def test_the_bundled_tflite_classifier_is_its_onnx_file_converted(tmp_path: Path) -> None:
    """The two bundled classifier files hold one quantisation (models/README.md): converting the
    ONNX file again gives the committed ``.tflite`` byte for byte."""
    out = tmp_path / "again.tflite"
    qdq_to_tflite.convert(CLASSIFIER / "efficientnet_lite0_int8.onnx", out)
    assert out.read_bytes() == (CLASSIFIER / "efficientnet_lite0_int8.tflite").read_bytes()


def _layer_error(qdq: Any, reference: Any, name: str, data: list[np.ndarray]) -> float:
    """Sum over channels of the variance over ``data`` of (quantised - float) output of the node
    ``name``, the quantised one taken before requantisation; both models run by ONNX Runtime."""
    import onnxruntime as ort

    outputs = []
    for original, fused in ((qdq, False), (reference, True)):
        model = onnx.load_from_string(original.SerializeToString())
        out = next(n.output[0] for n in model.graph.node if n.name == name)
        del model.graph.output[:]
        model.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        if not fused:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outputs.append(np.concatenate([session.run(None, {"input": x})[0] for x in data]))
    diff = (outputs[0] - outputs[1]).astype(np.float64)  # [N, C, H, W]
    per_channel = diff.transpose(1, 0, 2, 3).reshape(diff.shape[1], -1)
    return float(per_channel.var(axis=1).sum())


def _int8_weights(model: Any) -> dict[str, np.ndarray]:
    return {
        t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.INT8
    }


def test_weight_rounding_lowers_the_output_error(tmp_path: Path) -> None:
    """Rounding each int8 weight up or down to fit the calibration data rather than to the
    nearest integer: the depthwise layer's output error (measured by ONNX Runtime, apart from its
    mean, which bias correction takes) is lower than with nearest rounding, on the calibration
    data and on other images; every weight stays the floor or the ceiling of w / s."""
    float_path = _float_network(tmp_path / "f.onnx")
    qdq_path = _quantise(float_path, tmp_path / "q.onnx")
    calibration, other = _images(32, seed=1), _images(32, seed=3)
    reference = onnx.load(str(float_path))
    nearest = onnx.load(str(qdq_path))
    rounded = onnx.load_from_string(nearest.SerializeToString())
    ratios = qdq_refine.round_weights(rounded, reference, calibration)
    assert set(ratios) == {"dw"}
    assert ratios["dw"] < 0.95, ratios
    for data in (calibration, other):
        before = _layer_error(nearest, reference, "dw", data)
        after = _layer_error(rounded, reference, "dw", data)
        assert after < before, (before, after)
    old, new = _int8_weights(nearest), _int8_weights(rounded)
    changed = {name for name in old if not np.array_equal(old[name], new[name])}
    assert len(changed) == 1, changed  # the depthwise weights only; scales and biases as they were
    for name in old:
        assert np.abs(new[name].astype(int) - old[name].astype(int)).max() <= 1

    every = onnx.load_from_string(nearest.SerializeToString())
    ratios = qdq_refine.round_weights(every, reference, calibration, depthwise_only=False)
    assert set(ratios) == {"stem", "dw", "project", "expand", "fc"}
    assert all(r <= 1.0 + 1e-9 for r in ratios.values()), ratios
    floats = {t.name: numpy_helper.to_array(t) for t in reference.graph.initializer}
    producer = {o: n for n in every.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in every.graph.initializer}
    for node in (n for n in every.graph.node if n.name in ratios):
        dq = producer[node.input[1]]
        q, scale = inits[dq.input[0]].astype(np.float64), inits[dq.input[1]]
        shape = (-1,) + (1,) * (q.ndim - 1)
        w = floats[f"{node.name}.w"].astype(np.float64) / scale.astype(np.float64).reshape(shape)
        bad = ~((q == np.floor(w)) | (q == np.ceil(w)))
        assert not bad.any(), (node.name, q[bad], w[bad])
    qdq_refine.correct_biases(every, reference, calibration)
    qdq_refine.float_head(every)
    onnx.save(every, str(tmp_path / "rounded.onnx"))
    qdq_to_tflite.convert(tmp_path / "rounded.onnx", tmp_path / "rounded.tflite")
    a, b, _ = _run_both(tmp_path / "rounded.onnx", tmp_path / "rounded.tflite", _images(24, seed=2))
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
