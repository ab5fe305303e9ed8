#!/usr/bin/env python3
"""Post-training static int8 quantisation for edge-runtime models.

Two back ends, one comparison:

* ``quantize_onnx`` turns a float ONNX model into an int8 QDQ ONNX model with
  ``onnxruntime.quantization`` (per-channel symmetric int8 weights, asymmetric
  uint8 activations, MinMax calibration): onnxruntime's recommended U8S8
  QDQ, which its CPU provider runs as QLinearConv/QGemm; int8 activations and
  Percentile calibration on request (EfficientNet-Lite0 uses both, then
  qdq_refine.py's bias correction, and qdq_to_tflite.py writes the same
  numbers as its ``.tflite``).
* ``quantize_torch_to_tflite`` turns a ``torch.nn.Module`` into a full-int8
  ``.tflite`` (int8 input and outputs) with litert-torch PT2E static
  quantisation: per-channel symmetric int8 weights, per-tensor int8
  activations (histogram calibration), ReLU6 fused into the convs.
* ``accuracy_report`` compares any two callables (float reference vs int8
  candidate) on the same inputs.

Command line (ONNX only; the torch path needs model code, see
``scripts/models/export_efficientnet_lite0.py``)::

    python scripts/models/quantize.py model.onnx --calibration 'calib/*.jpg' \
        --out model_int8.onnx --size 224 --mean 127 127 127 --std 128 128 128

It prints a JSON report of the float vs int8 outputs on the calibration
images (or on ``--eval`` images). The module is importable from other export
scripts (``import quantize`` with ``scripts/`` on ``sys.path``). torch,
litert-torch and opencv are imported only by the functions that need them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
RESIZE_MODES = ("center_crop", "stretch", "letterbox")


# --------------------------------------------------------------------------
# Image preprocessing (mirrors the daemon's `preprocess:` section)
# --------------------------------------------------------------------------


def load_rgb(path: Path | str) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resize_image(
    rgb: np.ndarray,
    size: int,
    *,
    resize: str = "center_crop",
    crop_fraction: float = 1.0,
    pad_value: int = 114,
) -> np.ndarray:
    """Bring an HxWx3 image to size x size.

    ``center_crop`` keeps a centred square of ``crop_fraction`` times the
    shorter side (rounded as the daemon rounds it), ``stretch`` ignores the
    aspect ratio, ``letterbox`` fits the whole image and pads with
    ``pad_value``. Interpolation is bilinear (``cv2.INTER_LINEAR``).
    """
    import cv2

    h, w = rgb.shape[:2]
    if resize == "center_crop":  # same arithmetic as edge_runtime.preprocess.geometry
        side = max(1, round(size * (min(w / size, h / size) * crop_fraction)))
        top, left = (h - side) // 2, (w - side) // 2
        rgb = rgb[top : top + side, left : left + side]
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    if resize == "stretch":
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    if resize == "letterbox":
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((size, size, 3), pad_value, dtype=rgb.dtype)
        top, left = (size - nh) // 2, (size - nw) // 2
        canvas[top : top + nh, left : left + nw] = small
        return canvas
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")


def normalize(
    rgb: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    layout: str = "nchw",
) -> np.ndarray:
    """(x - mean) / std as float32 with a batch axis, in NCHW or NHWC."""
    x = (rgb.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if layout == "nchw":
        x = x.transpose(2, 0, 1)
    elif layout != "nhwc":
        raise ValueError(f"layout must be nchw or nhwc, got {layout!r}")
    return np.ascontiguousarray(x[None])


def preprocess_image(
    rgb: np.ndarray,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    resize: str = "center_crop",
    crop_fraction: float = 1.0,
    layout: str = "nchw",
) -> np.ndarray:
    """Resize and normalise one RGB image into a float32 batch of one."""
    fitted = resize_image(rgb, size, resize=resize, crop_fraction=crop_fraction)
    return normalize(fitted, mean, std, layout=layout)


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float tensor -> int8 with a TFLite input's scale and zero point."""
    q = np.round(x / scale) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor -> float32 with its scale and zero point."""
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


def find_images(spec: str | Path) -> list[Path]:
    """Image files in a directory (sorted) or matching a glob pattern."""
    path = Path(spec)
    if path.is_dir():
        candidates = sorted(path.iterdir())
    elif path.is_absolute():
        candidates = sorted(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
    else:
        candidates = sorted(Path().glob(str(spec)))
    files = [p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise FileNotFoundError(f"no images found for {spec}")
    return files


# --------------------------------------------------------------------------
# ONNX: onnxruntime static QDQ quantisation
# --------------------------------------------------------------------------


def _calibration_reader(calibration: Sequence[dict[str, np.ndarray]]) -> Any:
    """Wrap a list of feed dicts as an onnxruntime CalibrationDataReader."""
    from onnxruntime.quantization import CalibrationDataReader

    class _ListReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

        def rewind(self) -> None:
            self._items = iter(calibration)

    return _ListReader()


def quantize_onnx(
    float_model: Path,
    out_model: Path,
    calibration: Sequence[dict[str, np.ndarray]],
    *,
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    weight_bits: int = 8,
    activations: str = "uint8",
    calibration_method: str = "minmax",
    prepared: Path | None = None,
) -> None:
    """Quantise a float ONNX model to int8 QDQ with onnxruntime.

    ``calibration`` is a list of feed dicts (input name -> array), typically
    50-100 preprocessed samples. ``quant_pre_process`` (shape inference and
    graph optimisation, needs ``sympy``) runs first; then ``quantize_static``
    with QDQ format, per-channel symmetric int8 weights, asymmetric uint8
    activations and MinMax calibration. ``nodes_to_exclude`` keeps nodes in
    float (e.g. a detection head whose outputs mix boxes and scores).

    ``weight_bits``: 8 (the default) uses the full int8 range. On x86 CPUs without VNNI (AVX2,
    AVX-512F) ONNX Runtime's default uint8 x int8 GEMM kernels add pairs of products in 16 bits,
    which 8-bit weights can saturate; edge-runtime runs ONNX Runtime's exact kernels there by
    default (``exact_int8``), so 8-bit weights give the same answers on every CPU. 7 quantises the
    weights of matrix products to 7 bits (``reduce_range``), which those kernels compute exactly
    at full speed, at a cost in accuracy: on EfficientNet-Lite0, top-1 agreement with float on
    package photos and their augmentations fell from 85% to 79%, and with the LiteRT int8 file
    from 95% to 78% (scripts/bench/int8_agreement.py). Depthwise convolutions run in their own
    kernel, which adds in 32 bits: their weights keep all 8 bits either way.

    ``activations``: ``uint8`` (onnxruntime's default U8S8) or ``int8``, TFLite's scheme, needed
    to write the same numbers as a ``.tflite`` (qdq_to_tflite.py). ``calibration_method``:
    ``minmax`` or ``percentile`` (99.999 % of the values: a rare outlier no longer stretches the
    range). ``prepared``: also keep the pre-processed float model there (bias correction in
    qdq_refine.py compares with it node by node).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    if not calibration:
        raise ValueError("calibration data is empty")
    out_model = Path(out_model)
    out_model.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared_model = Path(prepared) if prepared is not None else Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(float_model), str(prepared_model))
        full = {"axis": 0, "reduce_range": False} if per_channel else {"reduce_range": False}
        overrides = {name: [dict(full)] for name in _depthwise_weights(prepared_model)}  # ORT may edit them
        methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
        quantize_static(
            str(prepared_model),
            str(out_model),
            _calibration_reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type={"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[activations],
            weight_type=QuantType.QInt8,
            calibrate_method=methods[calibration_method],
            reduce_range=weight_bits == 7,
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options={
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                "TensorQuantOverrides": overrides,
            },
        )


def _depthwise_weights(model_path: Path) -> list[str]:
    """Names of the weight initialisers of depthwise convolutions (one input channel per group)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    names = []
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        shape = shapes.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if shape and group > 1 and shape[0] == group and shape[1] == 1:
            names.append(node.input[1])
    return names


def onnx_runner(model: Path, *, threads: int = 2) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A callable running a single-input ONNX model on the CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o) for o in session.run(None, {name: x})]

    return run


# --------------------------------------------------------------------------
# TFLite: litert-torch PT2E static quantisation
# --------------------------------------------------------------------------


def _leave_clamps_to_converter(model: Any) -> None:
    """Keep PT2E from quantising a ReLU6 (hardtanh) that follows a conv/linear.

    The stock quantizer gives hardtanh its producer's parameters, i.e. the
    conv's pre-activation range, which wastes most int8 levels and puts a
    QUANTIZE between the clamp and any following zero pad; the converter then
    keeps that pad in NCHW between two TRANSPOSEs. Left unannotated, the clamp
    is fused into the conv (RELU6), the next op's input observer sees the
    clamped [0, 6] range and explicit "SAME" pads fold into the next conv.
    """
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    clamps = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)
    producers = (
        torch.ops.aten.conv2d.default,
        torch.ops.aten.convolution.default,
        torch.ops.aten.linear.default,
    )
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in clamps:
            continue
        source = node.args[0]
        if getattr(source, "target", None) in producers and len(source.users) == 1:
            node.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)


def _route_through_observers(model: Any) -> None:
    """Make every consumer read the observed copy of an observed tensor.

    PT2E prepare sometimes leaves a second consumer (e.g. a chained residual
    add) on the raw float tensor, which the converter then runs in float
    between DEQUANTIZE and QUANTIZE ops.
    """

    def is_observer(node: Any) -> bool:
        return node.op == "call_module" and "activation_post_process" in node.name

    for node in list(model.graph.nodes):
        if node.op != "call_function":
            continue
        for arg in node.all_input_nodes:
            observers = [u for u in arg.users if is_observer(u)]
            if len(observers) == 1 and not is_observer(arg):
                node.replace_input_with(arg, observers[0])
    model.recompile()


def _edge_quantizer() -> Any:
    """litert-torch PT2E quantizer: static, per-channel int8, ReLU6 aware."""
    from litert_torch.quantize import pt2e_quantizer as pq

    class EdgeQuantizer(pq.PT2EQuantizer):
        """PT2EQuantizer that leaves conv -> ReLU6 clamps to the converter."""

        def annotate(self, model: Any) -> Any:
            _leave_clamps_to_converter(model)
            return super().annotate(model)

    config = pq.get_symmetric_quantization_config(is_per_channel=True)
    return EdgeQuantizer().set_global(config)


def quantize_torch_to_tflite(
    module: torch.nn.Module,
    sample_input: torch.Tensor,
    calibration: Sequence[torch.Tensor],
    out_model: Path,
    *,
    channel_last_input: bool = True,
) -> None:
    """Convert a torch module to a full-int8 ``.tflite`` with litert-torch.

    ``sample_input`` and every ``calibration`` tensor are in the module's own
    layout (NCHW for vision models). With ``channel_last_input`` the model is
    wrapped by ``litert_torch.to_channel_last_io`` so the ``.tflite`` takes
    NHWC, and the tensors are permuted to match. Input and outputs are int8;
    read their scale/zero point from the interpreter's tensor details.
    """
    import litert_torch
    import torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    if not calibration:
        raise ValueError("calibration data is empty")
    model: torch.nn.Module = module.eval()

    def layout(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, *range(2, x.ndim), 1).contiguous() if channel_last_input else x

    if channel_last_input:
        model = litert_torch.to_channel_last_io(model, args=[0]).eval()
    sample = (layout(sample_input),)
    quantizer = _edge_quantizer()
    with torch.no_grad():
        graph = torch.export.export(model, sample).module()
        prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
        _route_through_observers(prepared)
        for x in calibration:
            prepared(layout(x))
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        torch.nn.Module.train(converted, False)  # traced in eval mode already
        edge = litert_torch.convert(converted, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    out_model = Path(out_model)
    out_model.parent.mkdir(parents=True, exist_ok=True)
    edge.export(str(out_model))


def tflite_runner(model: Path, *, threads: int = 2) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A callable running a single-input ``.tflite`` on float inputs.

    Quantised inputs are quantised with the input tensor's scale/zero point
    and quantised outputs dequantised, so float and int8 models compare
    directly. Uses ai-edge-litert, or tflite-runtime as a fallback.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the installed runtime
        from tflite_runtime.interpreter import Interpreter  # type: ignore

    interpreter = Interpreter(model_path=str(model), num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    outs = interpreter.get_output_details()

    def run(x: np.ndarray) -> list[np.ndarray]:
        scale, zero = inp["quantization"]
        if inp["dtype"] != np.float32:
            x = quantize_input(x, scale, zero).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        results = []
        for out in outs:
            y = interpreter.get_tensor(out["index"])
            o_scale, o_zero = out["quantization"]
            results.append(dequantize(y, o_scale, o_zero) if o_scale else y.copy())
        return results

    return run


# --------------------------------------------------------------------------
# Accuracy comparison
# --------------------------------------------------------------------------


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened arrays (1.0 for two zero arrays)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm else float(np.allclose(a, b))


def _classification_stats(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and top-5 overlap of two [N, classes] score arrays."""
    top1 = float(np.mean(ref.argmax(-1) == cand.argmax(-1)))
    k = min(5, ref.shape[-1])
    ref5 = np.argsort(-ref, axis=-1, kind="stable")[:, :k]
    cand5 = np.argsort(-cand, axis=-1, kind="stable")[:, :k]
    overlap = [len(set(r) & set(c)) / k for r, c in zip(ref5, cand5, strict=True)]
    return {"top1_agreement": top1, "top5_overlap": float(np.mean(overlap))}


def accuracy_report(
    reference: Callable[[np.ndarray], list[np.ndarray]],
    candidate: Callable[[np.ndarray], list[np.ndarray]],
    inputs: Sequence[np.ndarray],
    *,
    task: str,
) -> dict:
    """Compare a candidate (e.g. int8) model with a reference on the same inputs.

    Both callables take one input array and return the list of outputs in
    the same order and float units (dequantise first). Per output: max and
    mean absolute difference, mean and minimum cosine similarity over the
    inputs. For ``task == "classification"`` the first output is read as
    [batch, classes] scores: top-1 agreement and mean top-5 overlap.
    """
    pairs = [(reference(x), candidate(x)) for x in inputs]
    if not pairs:
        raise ValueError("no inputs to compare")
    outputs = []
    for i in range(len(pairs[0][0])):
        ref = [np.asarray(r[i], np.float32) for r, _ in pairs]
        cand = [np.asarray(c[i], np.float32).reshape(r.shape) for r, (_, c) in zip(ref, pairs, strict=True)]
        diffs = [np.abs(r - c) for r, c in zip(ref, cand, strict=True)]
        cosines = [_cosine(r, c) for r, c in zip(ref, cand, strict=True)]
        outputs.append(
            {
                "index": i,
                "shape": list(ref[0].shape),
                "max_abs_diff": float(max(d.max() for d in diffs)),
                "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
                "cosine_mean": float(np.mean(cosines)),
                "cosine_min": float(np.min(cosines)),
            }
        )
    report: dict[str, Any] = {"task": task, "samples": len(pairs), "outputs": outputs}
    if task == "classification":
        classes = np.asarray(pairs[0][0][0]).shape[-1]
        ref0 = np.concatenate([np.reshape(r[0], (-1, classes)) for r, _ in pairs])
        cand0 = np.concatenate([np.reshape(c[0], (-1, classes)) for _, c in pairs])
        report.update(_classification_stats(ref0, cand0))
    return report


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (for model.yaml's sha256 block)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def yaml_flow(mapping: dict[str, Any]) -> str:
    """A one-line YAML flow mapping; values JSON-encoded (valid YAML)."""
    return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in mapping.items()) + "}"


def tool_versions() -> dict[str, str]:
    """Versions of the conversion tools, for a bundle's provenance (those installed)."""
    versions = {}
    for name, package in (
        ("torch", "torch"),
        ("onnxruntime", "onnxruntime"),
        ("litert_torch", "litert-torch"),
        ("ai_edge_litert", "ai-edge-litert"),
    ):
        try:
            versions[name] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Quantise a float ONNX image model to int8 QDQ and report the accuracy change."
    )
    parser.add_argument("model", type=Path, help="float ONNX model")
    parser.add_argument("--calibration", required=True, help="image directory or glob")
    parser.add_argument("--out", type=Path, required=True, help="int8 ONNX output path")
    parser.add_argument("--eval", help="images to compare on (default: the calibration images)")
    parser.add_argument("--size", type=int, default=224, help="square input size")
    parser.add_argument("--mean", type=float, nargs=3, default=[127.0] * 3)
    parser.add_argument("--std", type=float, nargs=3, default=[128.0] * 3)
    parser.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="center_crop")
    parser.add_argument(
        "--crop-fraction", type=float, default=1.0, help="center_crop: fraction of the shorter side kept"
    )
    parser.add_argument("--bgr", action="store_true", help="feed BGR instead of RGB")
    parser.add_argument(
        "--task", default="classification", help="classification adds top-1/top-5 agreement to the report"
    )
    parser.add_argument(
        "--exclude", nargs="*", default=[], metavar="NODE", help="ONNX node names to keep in float"
    )
    parser.add_argument("--per-tensor", action="store_true", help="per-tensor weights")
    parser.add_argument(
        "--weight-bits",
        type=int,
        choices=(7, 8),
        default=8,
        help="7: weights of matrix products in 7 bits (fast and exact on x86 without VNNI, less accurate)",
    )
    return parser.parse_args(argv)


def _load_inputs(spec: str, args: argparse.Namespace) -> list[np.ndarray]:
    """Preprocess every image matching ``spec`` with the CLI options."""
    inputs = []
    for path in find_images(spec):
        rgb = load_rgb(path)
        image = rgb[..., ::-1] if args.bgr else rgb
        inputs.append(
            preprocess_image(
                image,
                args.size,
                args.mean,
                args.std,
                resize=args.resize,
                crop_fraction=args.crop_fraction,
                layout=args.layout,
            )
        )
    return inputs


def main(argv: Sequence[str] | None = None) -> int:
    """Quantise the model given on the command line and print a JSON report."""
    args = _parse_args(argv)
    import onnx

    input_name = onnx.load(str(args.model), load_external_data=False).graph.input[0].name
    calibration = _load_inputs(args.calibration, args)
    quantize_onnx(
        args.model,
        args.out,
        [{input_name: x} for x in calibration],
        per_channel=not args.per_tensor,
        nodes_to_exclude=args.exclude,
        weight_bits=args.weight_bits,
    )
    inputs = _load_inputs(args.eval, args) if args.eval else calibration
    report = accuracy_report(onnx_runner(args.model), onnx_runner(args.out), inputs, task=args.task)
    report["float_model"] = str(args.model)
    report["int8_model"] = str(args.out)
    report["int8_bytes"] = args.out.stat().st_size
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
