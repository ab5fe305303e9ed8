"""``edge-runtime infer``: one result per image, as text or JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_runtime.commands.common import options_from_flags, read_image
from edge_runtime.errors import ImageError, InputError
from edge_runtime.model import InferenceResult, Runner, load_model


def cmd_infer(args: argparse.Namespace) -> int:
    """Run the model on every image; bad images are reported and make the exit code 2."""
    if args.top_k is not None and args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    if args.score_threshold is not None and not 0.0 <= args.score_threshold <= 1.0:
        raise InputError(f"--score-threshold must be within 0..1, got {args.score_threshold}")
    model = load_model(Path(args.model), args.backend, options_from_flags(args))
    annotate = Path(args.annotate) if args.annotate else None
    if annotate is not None:
        annotate.mkdir(parents=True, exist_ok=True)
    failed = 0
    try:
        runner = Runner(model, top_k=args.top_k, score_threshold=args.score_threshold)
        for name in args.images:
            try:
                image = read_image(Path(name))
            except ImageError as exc:
                print(f"edge-runtime: error: {exc}", file=sys.stderr)
                failed += 1
                continue
            result = runner.predict(image)
            line = (
                _json_line(name, result, model.describe())
                if args.json
                else _text(name, result, model.describe())
            )
            print(line, flush=True)
            if annotate is not None:
                _write_annotated(annotate, Path(name), image, result)
    finally:
        model.close()
    return 2 if failed else 0


def _json_line(image: str, result: InferenceResult, model: dict[str, Any]) -> str:
    obj = {
        "image": image,
        "task": result.task,
        "model": model,
        **result.payload(),
        "latency_ms": result.latency_ms,
    }
    return json.dumps(obj, ensure_ascii=False)


def _text(image: str, result: InferenceResult, model: dict[str, Any]) -> str:
    total = sum(result.latency_ms.values())
    head = (
        f"{image}: {result.task} by {model['name']} v{model['version']} "
        f"({model['backend']}/{model['accelerator']}) in {total:.1f} ms"
    )
    if result.task == "classification":
        rows = [f"  {c.class_id:>5}  {c.score:6.3f}  {c.label}" for c in result.classes]
    else:
        rows = [f"  {d.label:<16} {d.score:6.3f}  box {d.box.as_list(3)}" for d in result.detections]
    return "\n".join([head, *(rows or ["  (nothing above the threshold)"])])


def _write_annotated(
    folder: Path, source: Path, image: npt.NDArray[np.uint8], result: InferenceResult
) -> None:
    out = image.copy()
    h, w = out.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    for d in result.detections:
        x1, y1, x2, y2 = (int(d.box.x1 * w), int(d.box.y1 * h), int(d.box.x2 * w), int(d.box.y2 * h))
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), thickness)
        _label(out, f"{d.label} {d.score:.2f}", (x1, max(y1 - 4, 12)), thickness)
    for i, c in enumerate(result.classes[:3]):
        _label(out, f"{c.label} {c.score:.2f}", (8, 22 + 22 * i), thickness)
    target = folder / f"{source.stem}.jpg"
    if not cv2.imwrite(str(target), out):
        raise InputError(f"{target}: cannot write the annotated image")


def _label(image: npt.NDArray[np.uint8], text: str, origin: tuple[int, int], thickness: int) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), thickness, cv2.LINE_AA)
