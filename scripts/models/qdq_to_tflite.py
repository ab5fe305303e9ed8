#!/usr/bin/env python3
"""Write a quantised (QDQ) ONNX network as a full-int8 NHWC ``.tflite`` with the SAME numbers.

    python scripts/models/qdq_to_tflite.py MODEL_int8.onnx MODEL_int8.tflite [--check N]

The ``.tflite`` keeps every int8 weight, int32 bias, scale and zero point of the ONNX file, so
ONNX Runtime and LiteRT compute the same integer products and differ only where a kernel rounds a
requantisation differently (one step, now and then). Quantising the two files separately (two
calibrations, two sets of activation ranges) made them disagree on hard images; one set of numbers
for both is how the bundled classifier gives one answer on both runtimes.

The input is what ``onnxruntime.quantization.quantize_static`` writes with ``QuantFormat.QDQ``,
int8 or uint8 activations (uint8 ones become int8 with the zero point 128 lower: the same real
values) and symmetric int8 weights (per channel or per tensor): a
float input quantised once, then ``DequantizeLinear -> op -> QuantizeLinear`` around each of Conv
(plain and depthwise; ReLU/ReLU6 already folded into the output range by the quantiser), Add,
GlobalAveragePool, Reshape/Flatten (on 1x1 maps) and Gemm, and a dequantised output. Anything else
is refused with the node's name. Convolution padding must be what TF calls SAME or VALID (as the
EfficientNet-Lite and MobileNet exports have it). The input becomes int8 NHWC with the ONNX input's
scale and zero point; the output stays int8 with its scale and zero point (the daemon dequantises).

Needs ``onnx`` and ``ai-edge-litert`` (plus ``onnxruntime`` for ``--check``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tflite_writer import Graph, Quant  # sibling script, importable once its folder is on sys.path


class UnsupportedGraphError(ValueError):
    """The ONNX graph has something this converter does not translate."""


@dataclass(frozen=True)
class Activation:
    """An int8 activation tensor already in the TFLite graph."""

    index: int
    shape: tuple[int, ...]  # NHWC (or [N, C] after a reshape)
    scale: float
    zero_point: int


class Converter:
    """One pass over the ONNX nodes in order, one TFLite operator per compute node."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.init = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.dq = {n.output[0]: n for n in self.graph.node if n.op_type == "DequantizeLinear"}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.graph.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.g = Graph()
        self.acts: dict[str, Activation] = {}  # QuantizeLinear output name -> TFLite tensor
        self.inputs: list[int] = []
        self.float_outputs: dict[str, int] = {}  # graph outputs computed in float

    # ---- helpers --------------------------------------------------------------------------

    def _q_params(self, node: Any) -> tuple[float, int]:
        """(scale, int8 zero point) of an activation; uint8 ones are the same values 128 lower."""
        scale = self.init[node.input[1]]
        zp = self.init[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
        if scale.size != 1:
            raise UnsupportedGraphError(f"{node.name or node.output[0]}: per-channel activation quantisation")
        if zp.dtype == np.uint8:
            return float(scale.reshape(())), int(zp.reshape(())) - 128
        if zp.dtype != np.int8:
            raise UnsupportedGraphError(f"{node.name or node.output[0]}: {zp.dtype} activations")
        return float(scale.reshape(())), int(zp.reshape(()))

    def _activation(self, name: str, node: Any) -> Activation:
        """The int8 tensor behind a dequantised input ``name`` of ``node``."""
        dq = self.dq.get(name)
        if dq is None or dq.input[0] not in self.acts:
            raise UnsupportedGraphError(f"{node.name}: input {name!r} is not a quantised activation")
        return self.acts[dq.input[0]]

    def _constant(self, name: str, node: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(integers, scales, zero points, axis) of a dequantised initialiser."""
        dq = self.dq.get(name)
        if dq is None or dq.input[0] not in self.init:
            raise UnsupportedGraphError(f"{node.name}: {name!r} is not a quantised constant")
        values = self.init[dq.input[0]]
        scale = self.init[dq.input[1]].reshape(-1).astype(np.float64)
        zp = self.init[dq.input[2]].reshape(-1) if len(dq.input) > 2 else np.zeros(1, values.dtype)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        return values, scale, zp, axis

    def _output(self, node: Any, shape: tuple[int, ...]) -> tuple[int, Activation, str]:
        """The TFLite tensor for ``node``'s output: the QuantizeLinear that follows it."""
        users = self.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            raise UnsupportedGraphError(
                f"{node.name}: its output is not quantised once (QDQ format expected)"
            )
        q = users[0]
        scale, zp = self._q_params(q)
        index = self.g.tensor(q.output[0], shape, np.int8, quant=(scale, zp))
        act = Activation(index, shape, scale, zp)
        self.acts[q.output[0]] = act
        return index, act, q.output[0]

    @staticmethod
    def _attrs(node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    # ---- operators ------------------------------------------------------------------------

    def graph_input(self, node: Any) -> None:
        """``QuantizeLinear(input)``: the model's int8 NHWC input."""
        (inp,) = [i for i in self.graph.input if i.name == node.input[0]]
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        if len(dims) != 4 or 0 in dims:
            raise UnsupportedGraphError(f"input {inp.name}: a fixed NCHW shape is needed, got {dims}")
        n, c, h, w = dims
        scale, zp = self._q_params(node)
        shape = (n, h, w, c)
        index = self.g.tensor(inp.name, shape, np.int8, quant=(scale, zp))
        self.acts[node.output[0]] = Activation(index, shape, scale, zp)
        self.inputs.append(index)

    def conv(self, node: Any) -> None:
        x = self._activation(node.input[0], node)
        w, w_scale, w_zp, axis = self._constant(node.input[1], node)
        if w.dtype != np.int8 or np.any(w_zp != 0) or (w_scale.size > 1 and axis != 0):
            raise UnsupportedGraphError(f"{node.name}: weights must be symmetric int8 (per output channel)")
        a = self._attrs(node)
        group = int(a.get("group", 1))
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise UnsupportedGraphError(f"{node.name}: dilated convolution")
        sh, sw = a.get("strides", [1, 1])
        kh, kw = w.shape[2:]
        n, h, wd, c = x.shape
        padding = _padding(node.name, (h, wd), (kh, kw), (sh, sw), a.get("pads", [0, 0, 0, 0]))
        out_c = w.shape[0]
        oh, ow = _out_size(h, kh, sh, padding), _out_size(wd, kw, sw, padding)
        scales = np.broadcast_to(w_scale, (out_c,))
        depthwise = group > 1 and group == c and w.shape[1] == 1
        if group != 1 and not depthwise:
            raise UnsupportedGraphError(f"{node.name}: grouped convolution (group {group})")
        if depthwise:
            weights = w.transpose(1, 2, 3, 0)  # [1, kh, kw, C * multiplier]
            w_quant = Quant([float(s) for s in scales], [0] * out_c, dim=3)
        else:
            weights = w.transpose(0, 2, 3, 1)  # [O, kh, kw, I]
            w_quant = Quant([float(s) for s in scales], [0] * out_c, dim=0)
        wi = self.g.tensor(f"{node.name}/weights", weights.shape, np.int8, data=weights, quant=w_quant)
        bias_scales = [float(s * x.scale) for s in scales]
        if len(node.input) > 2 and node.input[2]:
            b, b_scale, _, _ = self._constant(node.input[2], node)
            if b.dtype != np.int32 or not np.allclose(
                np.broadcast_to(b_scale, (out_c,)), bias_scales, rtol=1e-5
            ):
                raise UnsupportedGraphError(f"{node.name}: bias is not int32 at input scale x weight scale")
        else:
            b = np.zeros(out_c, np.int32)
        bi = self.g.tensor(
            f"{node.name}/bias", [out_c], np.int32, data=b, quant=Quant(bias_scales, [0] * out_c, dim=0)
        )
        out, _, _ = self._output(node, (n, oh, ow, out_c))
        if depthwise:
            opts = tfl.DepthwiseConv2DOptionsT()
            opts.depthMultiplier = out_c // c
            kind: tuple[int, Any] = (tfl.BuiltinOptions.DepthwiseConv2DOptions, opts)
            code, version = tfl.BuiltinOperator.DEPTHWISE_CONV_2D, 3
        else:
            opts = tfl.Conv2DOptionsT()
            kind = (tfl.BuiltinOptions.Conv2DOptions, opts)
            code, version = tfl.BuiltinOperator.CONV_2D, 3
        opts.padding, opts.strideH, opts.strideW = padding, int(sh), int(sw)
        opts.dilationHFactor = opts.dilationWFactor = 1
        opts.fusedActivationFunction = tfl.ActivationFunctionType.NONE  # the output range clamps
        self.g.op(code, [x.index, wi, bi], [out], options=kind, version=version)

    def add(self, node: Any) -> None:
        a, b = (self._activation(name, node) for name in node.input)
        if a.shape != b.shape:
            raise UnsupportedGraphError(f"{node.name}: Add with broadcasting")
        out, _, _ = self._output(node, a.shape)
        self.g.op(
            tfl.BuiltinOperator.ADD,
            [a.index, b.index],
            [out],
            options=(tfl.BuiltinOptions.AddOptions, tfl.AddOptionsT()),
            version=2,
        )

    def global_average_pool(self, node: Any) -> None:
        x = self._activation(node.input[0], node)
        n, _, _, c = x.shape
        axes = self.g.tensor(f"{node.name}/axes", [2], np.int32, data=np.array([1, 2], np.int32))
        out, _, _ = self._output(node, (n, 1, 1, c))
        opts = tfl.ReducerOptionsT()
        opts.keepDims = True
        self.g.op(
            tfl.BuiltinOperator.MEAN,
            [x.index, axes],
            [out],
            options=(tfl.BuiltinOptions.ReducerOptions, opts),
            version=2,
        )

    def flatten(self, node: Any) -> None:
        """Reshape/Flatten of an ``[N, C, 1, 1]`` map to ``[N, C]`` (same order in NHWC)."""
        x = self._activation(node.input[0], node)
        if len(x.shape) != 4 or x.shape[1:3] != (1, 1):
            raise UnsupportedGraphError(f"{node.name}: reshape of a {list(x.shape)} NHWC map")
        shape = (x.shape[0], x.shape[3])
        target = self.g.tensor(f"{node.name}/shape", [2], np.int32, data=np.array(shape, np.int32))
        out, act, _ = self._output(node, shape)
        if (act.scale, act.zero_point) != (x.scale, x.zero_point):
            raise UnsupportedGraphError(f"{node.name}: a reshape that requantises")
        opts = tfl.ReshapeOptionsT()
        opts.newShape = list(shape)
        self.g.op(
            tfl.BuiltinOperator.RESHAPE,
            [x.index, target],
            [out],
            options=(tfl.BuiltinOptions.ReshapeOptions, opts),
        )

    def gemm(self, node: Any) -> None:
        """FULLY_CONNECTED: int8 in and out, or (a float head) int8 in, float weights and out."""
        x = self._activation(node.input[0], node)
        a = self._attrs(node)
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise UnsupportedGraphError(f"{node.name}: Gemm with transA, alpha or beta")
        w, w_scale, w_zp, axis = self._constant(node.input[1], node)
        if w.dtype != np.int8 or np.any(w_zp != 0):
            raise UnsupportedGraphError(f"{node.name}: weights must be symmetric int8")
        if not a.get("transB", 0):
            w, axis = w.T, 1 - axis
        out_c = w.shape[0]
        if w_scale.size > 1 and axis != 0:
            raise UnsupportedGraphError(f"{node.name}: per-channel weights along the input axis")
        scales = [float(s) for s in np.broadcast_to(w_scale, (out_c,))]
        w_quant = Quant(scales, [0] * out_c, dim=0)
        wi = self.g.tensor(
            f"{node.name}/weights", w.shape, np.int8, data=np.ascontiguousarray(w), quant=w_quant
        )
        options = (tfl.BuiltinOptions.FullyConnectedOptions, tfl.FullyConnectedOptionsT())
        outputs = {o.name for o in self.graph.output}
        if node.output[0] in outputs:  # float head: the same float products on both runtimes
            self._float_head(node, x, wi, out_c, options)
            return
        bias_scales = [s * x.scale for s in scales]
        b, _, _, _ = self._constant(node.input[2], node) if len(node.input) > 2 else (None,) * 4
        b = np.zeros(out_c, np.int32) if b is None else b
        bi = self.g.tensor(
            f"{node.name}/bias", [out_c], np.int32, data=b, quant=Quant(bias_scales, [0] * out_c, dim=0)
        )
        out, _, _ = self._output(node, (x.shape[0], out_c))
        self.g.op(tfl.BuiltinOperator.FULLY_CONNECTED, [x.index, wi, bi], [out], options=options, version=5)

    def _float_head(self, node: Any, x: Activation, weights: int, out_c: int, options: Any) -> None:
        """``Gemm`` on dequantised inputs with a float bias and a float output (a graph output):
        DEQUANTIZE the activation and the int8 weights (once: they are constant), float FC."""
        real_x = self.g.tensor(f"{node.name}/input_float", x.shape)
        real_w = self.g.tensor(f"{node.name}/weights_float", self.g.tensors[weights].shape)
        self.g.op(tfl.BuiltinOperator.DEQUANTIZE, [x.index], [real_x], version=2)
        self.g.op(tfl.BuiltinOperator.DEQUANTIZE, [weights], [real_w], version=2)
        bias = self.init.get(node.input[2]) if len(node.input) > 2 else None
        if bias is None or bias.dtype != np.float32:
            raise UnsupportedGraphError(f"{node.name}: a float head needs a float bias initialiser")
        bi = self.g.tensor(f"{node.name}/bias", [out_c], np.float32, data=bias.reshape(-1))
        out = self.g.tensor(node.output[0], (x.shape[0], out_c))
        self.float_outputs[node.output[0]] = out
        self.g.op(tfl.BuiltinOperator.FULLY_CONNECTED, [real_x, real_w, bi], [out], options=options)

    # ---- the pass -------------------------------------------------------------------------

    def convert(self, description: str) -> bytes:
        graph_inputs = {i.name for i in self.graph.input} - set(self.init)
        handlers = {
            "Conv": self.conv,
            "Add": self.add,
            "GlobalAveragePool": self.global_average_pool,
            "Reshape": self.flatten,
            "Flatten": self.flatten,
            "Gemm": self.gemm,
        }
        for node in self.graph.node:
            if node.op_type == "DequantizeLinear":
                continue  # read through by the node that uses it
            if node.op_type == "QuantizeLinear":
                if node.input[0] in graph_inputs:
                    self.graph_input(node)
                continue  # otherwise made by the node before it (_output)
            handler = handlers.get(node.op_type)
            if handler is None:
                raise UnsupportedGraphError(f"{node.name}: {node.op_type} is not translated")
            handler(node)
        outputs = []
        for out in self.graph.output:
            if out.name in self.float_outputs:
                outputs.append(self.float_outputs[out.name])
                continue
            dq = next((n for n in self.graph.node if out.name in n.output), None)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in self.acts:
                raise UnsupportedGraphError(f"output {out.name}: not a dequantised int8 tensor")
            act = self.acts[dq.input[0]]
            self.g.tensors[act.index].name = out.name
            outputs.append(act.index)
        return self.g.model(self.inputs, outputs, description)


def _padding(
    name: str, size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], pads: list[int]
) -> int:
    """TFLite's SAME or VALID for ONNX ``pads`` ``[top, left, bottom, right]``, or refuse."""
    same = []
    for i in range(2):
        out = -(-size[i] // stride[i])
        total = max((out - 1) * stride[i] + kernel[i] - size[i], 0)
        same.append((total // 2, total - total // 2))
    if list(pads) == [same[0][0], same[1][0], same[0][1], same[1][1]]:
        return tfl.Padding.SAME
    if not any(pads):
        return tfl.Padding.VALID
    raise UnsupportedGraphError(f"{name}: pads {list(pads)} are neither SAME {same} nor VALID")


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    if padding == tfl.Padding.SAME:
        return -(-size // stride)
    return (size - kernel) // stride + 1


def convert(onnx_path: Path, tflite_path: Path) -> None:
    """Read the QDQ ONNX file, write the ``.tflite``."""
    import onnx

    model = onnx.load(str(onnx_path))
    tflite_path.write_bytes(Converter(model).convert(f"int8, the numbers of {onnx_path.name}"))


def check(onnx_path: Path, tflite_path: Path, samples: int = 8, seed: int = 0) -> dict[str, float]:
    """Run both files on random images: the largest output difference (in output quantisation
    steps for an int8 output, absolute for a float one) and how often the top-1 is the same."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    in_scale, in_zp = inp["quantization"]
    out_scale, out_zp = out["quantization"]
    rng = np.random.default_rng(seed)
    worst, same_top1 = 0.0, 0
    for _ in range(samples):
        q = rng.integers(-128, 128, size=inp["shape"], dtype=np.int8)
        real = ((q.astype(np.float32) - in_zp) * in_scale).transpose(0, 3, 1, 2)
        (reference,) = session.run(None, {session.get_inputs()[0].name: real})
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"]).astype(np.float32)
        if out_scale:  # int8 output: compare in its steps
            got = (got - out_zp) * out_scale
        worst = max(worst, float(np.abs(got - reference).max() / (out_scale or 1.0)))
        same_top1 += int(got.argmax() == reference.argmax())
    return {"max_diff_steps": worst, "top1_same": same_top1 / samples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", type=Path, help="QDQ int8 ONNX file (onnxruntime quantize_static)")
    ap.add_argument("tflite", type=Path, help="the .tflite to write")
    ap.add_argument("--check", type=int, metavar="N", default=0, help="compare both on N random inputs")
    args = ap.parse_args(argv)
    try:
        convert(args.onnx, args.tflite)
    except UnsupportedGraphError as exc:
        print(f"{args.onnx}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.tflite}")
    if args.check:
        print(check(args.onnx, args.tflite, args.check))
    return 0


if __name__ == "__main__":
    sys.exit(main())
