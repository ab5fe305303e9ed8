"""Refinements of an int8 QDQ ONNX model (``onnxruntime.quantization.quantize_static`` output).

* :func:`round_weights`: each int8 weight rounded up or down, whichever brings its layer's output
  closer to float on the calibration data (AdaRound's layer objective, minimised greedily), instead
  of to the nearest integer; the scales stay. Runs before bias correction. Not used for the
  bundled classifier: see models/README.md, "Tried and not kept".
* :func:`correct_biases`: empirical bias correction. Rounding the weights to int8 shifts the mean
  of each convolution's output a little; through tens of layers those shifts add up and move the
  logits. Layer by layer, in graph order, the mean output of each Conv/Gemm over the calibration
  data is measured in the quantised model (run unfused: DequantizeLinear -> float op, so the
  value before requantisation is visible) and in the float model, and the difference is taken off
  the int32 bias. Each layer is measured after the ones before it were corrected, so a correction
  never counts an error that an earlier one already removed. On EfficientNet-Lite0 top-1
  agreement with float on package photos and their augmentations went from 87 % to 93 %.
* :func:`float_head`: the final Gemm computes in float (its int8 weights dequantised, its bias in
  float) and gives float logits instead of int8 ones. int8 logits sit on a grid (one step was
  0.066 on EfficientNet-Lite0): two classes often tie exactly, and a one-step difference between
  two runtimes then decides the top-1. In float, ties are gone and both runtimes agree.

* :func:`uint8_activations`: the same activations stored as uint8 (zero point + 128), which ONNX
  Runtime runs faster on x86.

qdq_to_tflite.py writes the result as a ``.tflite`` with the same numbers. Needs ``onnx`` and
``onnxruntime``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


def _channel_means(
    model: Any, names: Sequence[str], data: Sequence[np.ndarray], *, fused: bool
) -> dict[str, np.ndarray]:
    """Per-channel mean of the tensors ``names`` over ``data`` (axis 1 of NCHW or [N, C])."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load_from_string(model.SerializeToString())
    graph = model.graph
    # only what the tensors depend on: a layer near the input costs a fraction of a full run
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    needed: set[int] = set()
    todo = list(names)
    while todo:
        index = producer.get(todo.pop())
        if index is not None and index not in needed:
            needed.add(index)
            todo.extend(nodes[index].input)
    kept = [n for i, n in enumerate(nodes) if i in needed]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names)
    used = {i for n in kept for i in n.input}
    initialisers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initialisers)
    options = ort.SessionOptions()
    if not fused:  # keep DequantizeLinear -> op -> QuantizeLinear as written
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    sums = {name: np.zeros(1, np.float64) for name in names}
    for x in data:
        for name, value in zip(names, session.run(list(names), {feed: x}), strict=True):
            axes = tuple(i for i in range(value.ndim) if i != 1)
            sums[name] = sums[name] + value.mean(axis=axes, dtype=np.float64)
    return {name: total / len(data) for name, total in sums.items()}


class _Layer(NamedTuple):
    node: Any  # the QDQ model's Conv/Gemm
    reference: Any  # the float model's node of the same name
    weight: Any  # int8 initialiser
    float_weight: Any
    scale: np.ndarray  # per output channel
    attributes: dict[str, Any]
    depthwise: bool


def _rounding_layers(qdq: Any, float_model: Any, *, depthwise_only: bool) -> list[_Layer]:
    """The Conv/Gemm nodes of ``qdq`` with int8 weights per output channel and a float twin."""
    import onnx
    from onnx import helper, numpy_helper

    ops = ("Conv", "Gemm")
    reference = {n.name: n for n in float_model.graph.node if n.op_type in ops}
    float_inits = {t.name: t for t in float_model.graph.initializer}
    initialisers = {t.name: t for t in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    layers = []
    for node in (n for n in qdq.graph.node if n.op_type in ops and n.name in reference):
        weight_dq = producer.get(node.input[1])
        weight = initialisers.get(weight_dq.input[0]) if weight_dq is not None else None
        float_weight = float_inits.get(reference[node.name].input[1])
        if weight is None or float_weight is None or weight.data_type != onnx.TensorProto.INT8:
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        shape = tuple(weight.dims)
        depthwise = node.op_type == "Conv" and attributes.get("group", 1) == shape[0] and shape[1] == 1
        if (node.op_type == "Gemm" and not attributes.get("transB", 0)) or (depthwise_only and not depthwise):
            continue
        scale = numpy_helper.to_array(initialisers[weight_dq.input[1]]).astype(np.float64).reshape(-1)
        layers.append(_Layer(node, reference[node.name], weight, float_weight, scale, attributes, depthwise))
    return layers


def _session(model: Any, names: Sequence[str], *, fused: bool) -> Any:
    """An ONNX Runtime session of ``model`` whose outputs are the tensors ``names``."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load_from_string(model.SerializeToString())
    del model.graph.output[:]
    model.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not fused:  # keep DequantizeLinear -> op -> QuantizeLinear as written
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _patches(x: np.ndarray, layer: _Layer) -> np.ndarray:
    """The inputs each output value of ``layer`` sees, one row per output position:
    [positions, C_in * kh * kw] in the order of the weights' axes 1..3 (a Gemm: [N, K]), or for
    a depthwise Conv [C, positions, kh * kw]."""
    shape = tuple(layer.weight.dims)
    if len(shape) == 2:
        return x.reshape(-1, shape[1]).astype(np.float64)
    kh, kw = shape[2], shape[3]
    top, left, bottom, right = layer.attributes.get("pads", [0, 0, 0, 0])
    sh, sw = layer.attributes.get("strides", [1, 1])
    rows = []
    for image in x:  # [C, H, W]
        padded = np.pad(image, ((0, 0), (top, bottom), (left, right)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
        c = windows.shape[0]
        if layer.depthwise:  # [C, Ho, Wo, kh, kw] -> [C, P, kh*kw]
            rows.append(windows.reshape(c, -1, kh * kw))
        else:  # [C, Ho, Wo, kh, kw] -> [P, C*kh*kw]
            rows.append(windows.transpose(1, 2, 0, 3, 4).reshape(-1, c * kh * kw))
    return np.concatenate(rows, axis=-2).astype(np.float64)


def _covariances(
    layers: Sequence[_Layer], qdq: Any, float_model: Any, data: Sequence[np.ndarray], *, float_inputs: bool
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per layer Cov[x, x], Cov[x, y], Cov[y, y] of its inputs over ``data``: x as the quantised
    model computes them (or the float model, with ``float_inputs``), y as the float model does;
    each [C, d, d] for a depthwise Conv (one per channel), else [1, d, d]."""
    if float_inputs:
        quantised = _session(float_model, [layer.reference.input[0] for layer in layers], fused=True)
    else:
        quantised = _session(qdq, [layer.node.input[0] for layer in layers], fused=False)
    floating = _session(float_model, [layer.reference.input[0] for layer in layers], fused=True)
    sums: list[dict[str, Any]] = [{} for _ in layers]
    for x in data:
        xs = quantised.run(None, {quantised.get_inputs()[0].name: x})
        ys = floating.run(None, {floating.get_inputs()[0].name: x})
        for total, layer, xq, yf in zip(sums, layers, xs, ys, strict=True):
            px, py = _patches(xq, layer), _patches(yf, layer)
            if not layer.depthwise:  # one set of inputs for all channels
                px, py = px[None], py[None]
            xt = px.transpose(0, 2, 1)
            terms = {"xx": xt @ px, "xy": xt @ py, "yy": py.transpose(0, 2, 1) @ py}
            terms |= {"x": px.sum(axis=1), "y": py.sum(axis=1), "n": px.shape[1]}
            for key, value in terms.items():
                total[key] = total.get(key, 0) + value
    result = []
    for total in sums:
        n = total["n"]
        mx, my = total["x"] / n, total["y"] / n
        result.append(
            (
                total["xx"] / n - mx[:, :, None] * mx[:, None, :],
                total["xy"] / n - mx[:, :, None] * my[:, None, :],
                total["yy"] / n - my[:, :, None] * my[:, None, :],
            )
        )
    return result


def _output_error(
    q: np.ndarray, w: np.ndarray, scale: np.ndarray, covariances: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> float:
    """Sum over output channels c of Var[s_c q_c . x - w_c . y] (q, w: [C, d])."""
    e = scale[:, None] * q.astype(np.float64)
    a, b, c = (np.broadcast_to(m, (len(w), *m.shape[1:])) for m in covariances)
    return float(
        np.einsum("ci,cij,cj->", e, a, e)
        - 2 * np.einsum("ci,cij,cj->", e, b, w)
        + np.einsum("ci,cij,cj->", w, c, w)
    )


def _greedy_rounding(
    w: np.ndarray, scale: np.ndarray, q: np.ndarray, covariances: tuple[np.ndarray, ...], *, sweeps: int
) -> np.ndarray:
    """Per output channel c, integers q_c, each the floor or the ceiling of w_c / s_c within
    [-127, 127], that lower Var[s_c q_c . x - w_c . y], by greedy coordinate descent from ``q``
    (nearest rounding): one weight at a time moves to its other rounding where that lowers the
    error. w, q: [C, d]; covariances: Cov[x, x] and Cov[x, y], [1 or C, d, d]."""
    a, b = covariances[0], covariances[1]
    floor = np.floor(w / scale[:, None])
    low, high = np.clip(floor, -127, 127), np.clip(floor + 1, -127, 127)
    q = q.astype(np.float64)
    # r = a (s q) - b w, half the gradient of the error in s q
    r = np.einsum("cij,cj->ci", np.broadcast_to(a, (len(w), *a.shape[1:])), scale[:, None] * q) - np.einsum(
        "cij,cj->ci", np.broadcast_to(b, (len(w), *b.shape[1:])), w
    )
    for _ in range(sweeps):
        changed = 0
        for i in range(w.shape[1]):
            step = np.where(q[:, i] == low[:, i], high[:, i], low[:, i]) - q[:, i]
            gain = 2 * scale * step * r[:, i] + (scale * step) ** 2 * a[:, i, i]
            take = (gain < 0) & (step != 0)
            if take.any():
                q[:, i] += np.where(take, step, 0.0)
                r += np.where(take, scale * step, 0.0)[:, None] * a[:, i, :]
                changed += int(take.sum())
        if not changed:
            break
    return q.astype(np.int8)


def round_weights(
    qdq: Any,
    float_model: Any,
    data: Sequence[np.ndarray],
    *,
    depthwise_only: bool = True,
    float_inputs: bool = False,
    sweeps: int = 4,
) -> dict[str, float]:
    """Choose the rounding of each int8 weight (edits ``qdq`` in place): the floor or the ceiling
    of w / s rather than the nearest integer, whichever brings the layer's output closer to the
    float model's on ``data``. The scales stay, so the int32 biases and the .tflite stay valid.

    For each Conv (Gemm) with int8 weights per output channel, the covariances of its inputs in
    the quantised model (x, as it runs with nearest rounding; the float model's with
    ``float_inputs``) and in the float model (y) over ``data`` make each output channel c's error
    Var[s_c q_c . x - w_c . y] a quadratic in its integers q_c (the layer objective of AdaRound,
    Nagel et al. 2020, here minimised greedily rather than trained); the mean of the error is
    left to :func:`correct_biases`, which runs after this. A depthwise channel sees its own input
    channel's k x k taps; other layers all C_in * k * k inputs. By default only the depthwise
    Convs are rounded so (see models/README.md). Returns, per node, the error after rounding
    divided by nearest rounding's on ``data``."""
    from onnx import numpy_helper

    layers = _rounding_layers(qdq, float_model, depthwise_only=depthwise_only)
    if not layers:
        return {}
    ratios: dict[str, float] = {}
    covariances = _covariances(layers, qdq, float_model, data, float_inputs=float_inputs)
    for layer, cov in zip(layers, covariances, strict=True):
        nearest = numpy_helper.to_array(layer.weight)
        q = nearest.reshape(len(nearest), -1)
        w = numpy_helper.to_array(layer.float_weight).astype(np.float64).reshape(q.shape)
        rounded = _greedy_rounding(w, layer.scale, q, cov, sweeps=sweeps)
        before = _output_error(q, w, layer.scale, cov)
        ratios[layer.node.name] = _output_error(rounded, w, layer.scale, cov) / max(before, 1e-30)
        layer.weight.CopyFrom(numpy_helper.from_array(rounded.reshape(nearest.shape), layer.weight.name))
    return ratios


def correct_biases(qdq: Any, float_model: Any, data: Sequence[np.ndarray]) -> dict[str, float]:
    """Correct the int32 biases of ``qdq`` (an onnx ModelProto, edited in place) against
    ``float_model`` on ``data`` (input arrays). Nodes are matched by name, as the quantiser keeps
    them. Returns, per node, the largest per-channel mean error that was corrected."""
    from onnx import numpy_helper

    ops = ("Conv", "Gemm")
    reference = {n.name: n.output[0] for n in float_model.graph.node if n.op_type in ops}
    nodes = [n for n in qdq.graph.node if n.op_type in ops and n.name in reference and len(n.input) > 2]
    expected = _channel_means(float_model, [reference[n.name] for n in nodes], data, fused=True)
    initialisers = {t.name: t for t in qdq.graph.initializer}
    dequantised = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    errors: dict[str, float] = {}
    for node in nodes:
        bias_dq = dequantised.get(node.input[2])
        if bias_dq is None or bias_dq.input[0] not in initialisers:
            continue  # a float bias: not a quantised layer
        got = _channel_means(qdq, [node.output[0]], data, fused=False)[node.output[0]]
        error = got - expected[reference[node.name]]
        bias = initialisers[bias_dq.input[0]]
        scale = numpy_helper.to_array(initialisers[bias_dq.input[1]]).astype(np.float64)
        values = numpy_helper.to_array(bias).astype(np.int64) - np.rint(error / scale).astype(np.int64)
        bias.CopyFrom(
            numpy_helper.from_array(np.clip(values, -(2**31), 2**31 - 1).astype(np.int32), bias.name)
        )
        errors[node.name] = float(np.abs(error).max())
    return errors


def float_head(qdq: Any) -> str:
    """Make the Gemm that produces the graph's output float (edits ``qdq`` in place).

    ``DequantizeLinear(act) -> Gemm(DequantizeLinear(int8 W), DequantizeLinear(int32 b)) ->
    QuantizeLinear -> DequantizeLinear -> output`` becomes ``Gemm(..., float b) -> output``; the
    weights stay int8 with their DequantizeLinear. Returns the Gemm's name.
    """
    from onnx import numpy_helper

    graph = qdq.graph
    outputs = {o.name for o in graph.output}
    producer = {o: n for n in graph.node for o in n.output}
    initialisers = {t.name: t for t in graph.initializer}
    for out in outputs:
        dq = producer.get(out)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        gemm = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if gemm is None or gemm.op_type != "Gemm":
            continue
        bias_dq = producer[gemm.input[2]]
        bias = numpy_helper.to_array(initialisers[bias_dq.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(initialisers[bias_dq.input[1]]).astype(np.float32)
        name = f"{gemm.name}/bias_float"
        graph.initializer.append(numpy_helper.from_array((bias * scale).astype(np.float32), name))
        gemm.input[2] = name
        gemm.output[0] = out
        for node in (q, dq, bias_dq):
            graph.node.remove(node)
        used = {i for n in graph.node for i in n.input}
        for t in [t for t in graph.initializer if t.name not in used]:
            graph.initializer.remove(t)
        return str(gemm.name)
    raise ValueError("no Gemm produces a graph output through QuantizeLinear/DequantizeLinear")


def uint8_activations(qdq: Any) -> int:
    """Store int8 activations as uint8 with the zero point moved by 128 (edits ``qdq`` in place).

    ``round(x / s) + z`` and ``round(x / s) + z + 128`` saturated to their own ranges are the same
    real values, so the model computes exactly what it did; but ONNX Runtime on x86 runs uint8 x
    int8 products (U8S8) 1.75x faster than int8 x int8 (EfficientNet-Lite0 at 1 thread: 4.2 against
    7.3 ms). Weights and biases stay as they are. Returns how many zero points moved.
    """
    from onnx import numpy_helper

    graph = qdq.graph
    initialisers = {t.name: t for t in graph.initializer}
    constants = set(initialisers)
    names = set()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            if node.op_type == "DequantizeLinear" and node.input[0] in constants:
                continue  # a weight or a bias
            names.add(node.input[2])
    for name in sorted(names):
        zp = numpy_helper.to_array(initialisers[name])
        if zp.dtype != np.int8:
            raise ValueError(f"{name}: activation zero point of type {zp.dtype}, expected int8")
        moved = (zp.astype(np.int16) + 128).astype(np.uint8)
        initialisers[name].CopyFrom(numpy_helper.from_array(moved, name))
    return len(names)


def refine(
    qdq_path: Path, float_path: Path, out_path: Path, data: Sequence[np.ndarray], *, rounding: bool = False
) -> dict[str, float]:
    """Bias correction (after :func:`round_weights` with ``rounding``), the float head, uint8
    storage of the activations; write ``out_path``. Returns the bias errors."""
    import onnx

    qdq, reference = onnx.load(str(qdq_path)), onnx.load(str(float_path))
    if rounding:
        round_weights(qdq, reference, data)
    errors = correct_biases(qdq, reference, data)
    float_head(qdq)
    uint8_activations(qdq)
    onnx.checker.check_model(qdq)
    onnx.save(qdq, str(out_path))
    return errors
