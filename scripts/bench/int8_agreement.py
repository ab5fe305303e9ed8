"""Do the two int8 classifier files give the same answers? Top-1 agreement, top-5 overlap, scores.

    # 1. gather photos from installed packages (any Python with some of them) into a folder
    python scripts/bench/int8_agreement.py collect /tmp/photos
    # 2. compare, through the daemon's own path (load_model + Runner), on those photos and on
    #    deterministic augmentations of each (crops, mirror, rotation, light, blur, JPEG, scale)
    .venv/bin/python scripts/bench/int8_agreement.py compare /tmp/photos \
        [--float efficientnet_lite0_float.onnx] [--model models/efficientnet_lite0] [--json out.json]

Photos come from packages only, nothing is downloaded: scikit-image's ``skimage.data`` (public domain /
CC0), scikit-learn's sample images, matplotlib's ``grace_hopper.jpg``, Ultralytics' ``bus.jpg`` and
``zidane.jpg``, the repository's ``tests/data`` photos and frames of ``samples/demo.mp4``. Each file is
tagged ``calib`` when the bundle's calibration set used that photo (scripts/models/
export_efficientnet_lite0.py) and ``unseen`` otherwise; results are given for both groups.

``--onnx`` replaces the bundle's int8 ONNX file (to try another quantisation). ``--float`` names the
float ONNX export of the same network (made by the export script with
``--work-dir``): then each int8 file is also compared with float.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# the photos the bundle's calibration set was made from (export_efficientnet_lite0.py PHOTOS, OTHER_COLOUR)
CALIBRATION = {
    "astronaut", "chelsea", "cat", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
    "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel",
}  # fmt: skip
SKIMAGE_COLOUR = (
    "astronaut", "chelsea", "cat", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "logo", "horse", "page", "camera", "coins", "moon", "grass", "gravel",
    "brick", "text", "clock", "microaneurysms",
)  # fmt: skip


def collect(out: Path) -> None:
    """Write every photo the installed packages ship into ``out`` as PNG (RGB kept as BGR files)."""
    out.mkdir(parents=True, exist_ok=True)

    def save(name: str, rgb: np.ndarray) -> None:
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8:
            rgb = (np.clip(rgb, 0, 1) * 255).astype(np.uint8) if rgb.max() <= 1 else rgb.astype(np.uint8)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        cv2.imwrite(
            str(out / f"{name}.png"), cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2BGR)
        )

    try:
        from skimage import data

        for name in SKIMAGE_COLOUR:
            try:
                save(f"skimage_{name}", getattr(data, name)())
            except Exception as exc:  # some need a download: skip those
                print(f"skip skimage {name}: {exc}", file=sys.stderr)
        left, right, _ = data.stereo_motorcycle()
        save("skimage_motorcycle_left", left)
        save("skimage_motorcycle_right", right)
    except ImportError:
        print("skip scikit-image (not installed)", file=sys.stderr)
    try:
        from sklearn.datasets import load_sample_images

        for path, img in zip(load_sample_images().filenames, load_sample_images().images, strict=True):
            save(f"sklearn_{Path(path).stem}", img)
    except ImportError:
        print("skip scikit-learn (not installed)", file=sys.stderr)
    for module, rel in (("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
                        ("ultralytics", "assets/bus.jpg"), ("ultralytics", "assets/zidane.jpg")):  # fmt: skip
        try:
            base = Path(__import__(module).__file__).parent
            shutil.copy(base / rel, out / f"{module}_{Path(rel).name}")
        except (ImportError, OSError) as exc:
            print(f"skip {module} {rel}: {exc}", file=sys.stderr)
    capture = cv2.VideoCapture(str(ROOT / "samples" / "demo.mp4"))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % 15 == 7:
            cv2.imwrite(str(out / f"video_{index:04d}.png"), frame)
        index += 1
    print(f"{len(list(out.iterdir()))} files in {out}")


def group(path: Path) -> str:
    """``calib`` when the calibration set saw this photo (or a frame made from one), else ``unseen``."""
    stem = path.stem
    if stem.startswith("video_"):
        return "calib"  # the video pans over tests/data photos, which were in the calibration set
    name = stem.removeprefix("skimage_")
    return "calib" if name in CALIBRATION else "unseen"


def augmentations(bgr: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Deterministic variants a camera could produce."""
    h, w = bgr.shape[:2]
    yield "orig", bgr
    yield "mirror", bgr[:, ::-1]
    for f in (0.8, 0.6):
        ch, cw = int(h * f), int(w * f)
        yield f"crop{f}", bgr[(h - ch) // 2 : (h + ch) // 2, (w - cw) // 2 : (w + cw) // 2]
    s = int(min(h, w) * 0.7)
    for name, (y, x) in {"tl": (0, 0), "br": (h - s, w - s)}.items():
        yield f"corner_{name}", bgr[y : y + s, x : x + s]
    for angle in (-10, 10):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.1)
        yield f"rot{angle}", cv2.warpAffine(bgr, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    for beta in (-40, 40):
        yield f"light{beta:+d}", cv2.convertScaleAbs(bgr, alpha=1.0, beta=beta)
    yield "contrast0.7", cv2.convertScaleAbs(bgr, alpha=0.7, beta=38)
    yield "blur", cv2.GaussianBlur(bgr, (5, 5), 1.5)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 30])
    assert ok
    yield "jpeg30", cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    small = cv2.resize(bgr, (max(1, w // 3), max(1, h // 3)), interpolation=cv2.INTER_AREA)
    yield "lowres", cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def onnx_bundle(model: Path, onnx_file: Path, work: Path, name: str) -> Path:
    """A copy of the bundle with another ONNX file (same preprocess, same labels)."""
    import yaml

    spec = yaml.safe_load((model / "model.yaml").read_text())
    bundle = work / name
    bundle.mkdir()
    shutil.copy(onnx_file, bundle / f"{name}.onnx")
    shutil.copy(model / spec["labels"], bundle / spec["labels"])
    spec["files"] = {"onnx": f"{name}.onnx"}
    spec.pop("sha256", None)
    (bundle / "model.yaml").write_text(yaml.safe_dump(spec))
    return bundle


def top5(runner: Any, bgr: np.ndarray) -> list[tuple[int, float]]:
    return [(c.class_id, c.score) for c in runner.predict(np.ascontiguousarray(bgr)).classes]


def pair_stats(a: list[list[tuple[int, float]]], b: list[list[tuple[int, float]]]) -> dict[str, Any]:
    """Top-1 agreement, mean top-5 overlap, score differences of the shared top-1 class."""
    same = [x[0][0] == y[0][0] for x, y in zip(a, b, strict=True)]
    overlap = [len({c for c, _ in x} & {c for c, _ in y}) / 5 for x, y in zip(a, b, strict=True)]
    diffs = [abs(x[0][1] - y[0][1]) for x, y, s in zip(a, b, same, strict=True) if s]
    return {
        "n": len(a),
        "top1_agreement": round(float(np.mean(same)), 4),
        "top5_overlap": round(float(np.mean(overlap)), 4),
        "top1_score_diff_mean": round(float(np.mean(diffs)), 4) if diffs else None,
        "top1_score_diff_p95": round(float(np.percentile(diffs, 95)), 4) if diffs else None,
        "top1_score_diff_max": round(float(np.max(diffs)), 4) if diffs else None,
    }


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Run every image variant through each model; statistics per pair and per group."""
    from edge_runtime.inference import BackendOptions
    from edge_runtime.model import Runner, load_model

    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    with tempfile.TemporaryDirectory() as tmp:
        onnx = onnx_bundle(args.model, args.onnx, Path(tmp), "int8") if args.onnx else args.model
        models: dict[str, tuple[Path, str]] = {"onnx": (onnx, "onnx"), "tflite": (args.model, "tflite")}
        if args.float:
            models["float"] = (onnx_bundle(args.model, args.float, Path(tmp), "float"), "onnx")
        opts = BackendOptions(threads=args.threads, exact_int8=args.exact_int8)
        runners = {k: Runner(load_model(p, b, opts), top_k=5) for k, (p, b) in models.items()}
        answers: dict[str, list[list[tuple[int, float]]]] = {k: [] for k in runners}
        groups: list[str] = []
        for path in files:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            for _, variant in augmentations(bgr):
                groups.append(group(path))
                for key, runner in runners.items():
                    answers[key].append(top5(runner, variant))
        for runner in runners.values():
            runner.close()
    pairs = [("onnx", "tflite")] + ([("onnx", "float"), ("tflite", "float")] if args.float else [])
    report: dict[str, Any] = {"images": len(files), "variants": len(groups), "exact_int8": args.exact_int8}
    subsets = {
        name: [i for i, g in enumerate(groups) if name in ("all", g)] for name in ("all", "unseen", "calib")
    }
    if args.float:  # where the float model is sure of its answer (top-1 score >= 0.5)
        subsets["float_confident"] = [i for i, a in enumerate(answers["float"]) if a[0][1] >= 0.5]
    for name, idx in subsets.items():
        report[name] = {
            f"{a}_vs_{b}": pair_stats([answers[a][i] for i in idx], [answers[b][i] for i in idx])
            for a, b in pairs
        }
    return report


def main() -> None:
    """``collect DIR`` or ``compare DIR``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="write the packages' photos into a folder")
    c.add_argument("out", type=Path)
    m = sub.add_parser("compare", help="compare the int8 files (and float) on a folder of photos")
    m.add_argument("images", type=Path)
    m.add_argument("--model", type=Path, default=ROOT / "models" / "efficientnet_lite0")
    m.add_argument("--float", type=Path, help="float ONNX export of the same network")
    m.add_argument("--onnx", type=Path, help="an int8 ONNX file to use instead of the bundle's")
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--exact-int8", action="store_true", help="onnx: exact int8 products (x86 without VNNI)")
    m.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    if args.command == "collect":
        collect(args.out)
        return
    report = compare(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
