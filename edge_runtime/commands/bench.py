"""``edge-runtime bench``: the bare runtime call in a tight loop, per backend."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.commands.common import options_from_flags, read_image
from edge_runtime.errors import InputError
from edge_runtime.inference import backend_installed
from edge_runtime.model import Runner, WindowRunner, load_model, resolve
from edge_runtime.model.spec import WindowInput


def synthetic_image(height: int = 480, width: int = 640) -> npt.NDArray[np.uint8]:
    """A fixed, deterministic test image (gradients and a few shapes)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 255 // (width + height))], axis=2)
    image[height // 4 : height // 2, width // 3 : width // 2] = (40, 200, 90)
    return image.astype(np.uint8)


def measure(run: Any, seconds: float, warmup: int) -> dict[str, Any]:
    """Latency percentiles (ms) and throughput of ``run()`` over ``seconds``."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline or len(times) < 10:
        t0 = time.perf_counter()
        run()
        now = time.perf_counter()
        times.append(now - t0)
    elapsed = now - start
    ms = np.asarray(times) * 1e3
    return {
        "runs": len(times),
        "seconds": round(elapsed, 3),
        "throughput_per_s": round(len(times) / elapsed, 2),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 3),
            "p95": round(float(np.percentile(ms, 95)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3),
            "mean": round(float(ms.mean()), 3),
            "min": round(float(ms.min()), 3),
        },
    }


def _bench_one(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    model = load_model(Path(args.model), kind, options_from_flags(args))
    try:
        if isinstance(model.spec.input, WindowInput):  # a sensor-window model: a window of zeros
            inputs = WindowRunner(model).prepare(np.zeros(model.input_size, np.float32))[0]
        else:
            image = read_image(Path(args.image)) if args.image else synthetic_image()
            inputs, _ = Runner(model).prepare(image)
        backend = model.backend
        stats = measure(lambda: backend.infer(inputs), args.seconds, args.warmup)
        return {"model": model.describe(), "threads": args.threads, **stats}
    finally:
        model.close()


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark the requested backend, or every backend the bundle has files for."""
    if args.seconds <= 0:
        raise InputError(f"--seconds must be > 0, got {args.seconds}")
    ref = resolve(Path(args.model))
    kinds = [args.backend] if args.backend != "auto" else [k for k in ref.files if backend_installed(k)]
    if not kinds:
        raise InputError(f"{args.model}: no installed runtime for its files ({', '.join(ref.files)})")
    results = [_bench_one(args, kind) for kind in kinds]
    for r in results:
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            m, lat = r["model"], r["latency_ms"]
            print(
                f"{m['name']} [{m['backend']}/{m['accelerator']}, threads {r['threads'] or 'default'}]: "
                f"p50 {lat['p50']:.2f} ms  p95 {lat['p95']:.2f} ms  p99 {lat['p99']:.2f} ms  "
                f"{r['throughput_per_s']:.1f} inferences/s ({r['runs']} runs)"
            )
    if len(results) == 2 and not args.json:
        a, b = results
        ratio = a["throughput_per_s"] / b["throughput_per_s"]
        print(f"{a['model']['backend']} / {b['model']['backend']} throughput: {ratio:.2f}x")
    return 0
