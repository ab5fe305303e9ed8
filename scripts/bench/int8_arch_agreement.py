"""Top-1 agreement of the bundled classifier's int8 files (ONNX, TFLite) with each other and with
a float reference, on this machine's CPU kernels (run it natively and inside the arm64 root).

    python scripts/bench/int8_arch_agreement.py IMAGE... [--float FLOAT.onnx] [--json OUT]

The float reference is the float EfficientNet-Lite0 ONNX export that scripts/models/
export_efficientnet_lite0.py makes before quantising (same input tensor as the int8 ONNX file).
Prints one row per image (top-1 label and score of each) and the counts side by side.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_runtime.inference import BackendOptions  # noqa: E402
from edge_runtime.model import Runner, load_model  # noqa: E402

BUNDLE = ROOT / "models" / "efficientnet_lite0"


def _float_top(session: Any, tensor: np.ndarray) -> tuple[int, float]:
    (logits,) = session.run(None, {session.get_inputs()[0].name: tensor})
    z = logits[0].astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(p.argmax()), float(p.max())


def main() -> int:
    """Measure and print; exit 0."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--float", dest="float_model", type=Path, help="float ONNX export (optional)")
    ap.add_argument("--json", type=Path, help="write the rows and counts here")
    args = ap.parse_args()
    onnx = Runner(load_model(BUNDLE, "onnx", BackendOptions(threads=2)))
    tflite = Runner(load_model(BUNDLE, "tflite", BackendOptions(threads=2)))
    session = None
    if args.float_model is not None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(args.float_model), providers=["CPUExecutionProvider"])
    labels = onnx.model.labels
    rows = []
    for path in args.images:
        img = cv2.imread(str(path))
        if img is None:
            print(f"skipped {path}: not an image", file=sys.stderr)
            continue
        a, b = onnx.predict(img).classes, tflite.predict(img).classes
        row: dict[str, Any] = {
            "image": path.name,
            "onnx": [a[0].class_id, round(a[0].score, 3)],
            "tflite": [b[0].class_id, round(b[0].score, 3)],
            "onnx_top5": [c.class_id for c in a[:5]],
            "tflite_top5": [c.class_id for c in b[:5]],
        }
        if session is not None:
            tensor = onnx.prepare(img)[0][0]
            cls, score = _float_top(session, tensor)
            row["float"] = [cls, round(score, 3)]
        rows.append(row)

    def name(entry: list[Any]) -> str:
        return f"{labels[entry[0]] if labels else entry[0]} {entry[1]:.3f}"

    print(f"machine: {platform.machine()}; images: {len(rows)}")
    print(f"{'image':34s} {'float':28s} {'onnx int8':28s} {'tflite int8':28s}")
    for r in rows:
        ref = name(r["float"]) if "float" in r else "-"
        print(f"{r['image'][:34]:34s} {ref[:28]:28s} {name(r['onnx'])[:28]:28s} {name(r['tflite'])[:28]:28s}")
    counts = {
        "images": len(rows),
        "onnx_eq_tflite": sum(r["onnx"][0] == r["tflite"][0] for r in rows),
        "onnx_in_tflite_top5": sum(r["onnx"][0] in r["tflite_top5"] for r in rows),
    }
    if session is not None:
        counts["onnx_eq_float"] = sum(r["onnx"][0] == r["float"][0] for r in rows)
        counts["tflite_eq_float"] = sum(r["tflite"][0] == r["float"][0] for r in rows)
    print("counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.json is not None:
        report = {"machine": platform.machine(), "counts": counts, "rows": rows}
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
