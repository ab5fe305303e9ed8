"""Per-inference overhead of edge-runtime's backend call versus a bare runtime session.

    python scripts/bench/bench_overhead.py [MODEL_BUNDLE] [--threads N] [--seconds S]

Measures, interleaved in one run on the same preprocessed input: a bare
``onnxruntime.InferenceSession.run`` / LiteRT ``Interpreter.invoke`` loop, and edge-runtime's
``backend.infer``. Prints throughput of each and the ratio (1.00 = no overhead).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_runtime.commands.bench import synthetic_image  # noqa: E402
from edge_runtime.inference import BackendOptions  # noqa: E402
from edge_runtime.model import Runner, load_model  # noqa: E402


def bare_onnx(path: Path, threads: int) -> Any:
    """A plain session with the same thread count, as a user would write it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def bare_tflite(path: Path, threads: int) -> Any:
    """A plain LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = [d["index"] for d in it.get_output_details()]

    def run(x: Any) -> list[Any]:
        it.set_tensor(inp, x)
        it.invoke()
        return [it.get_tensor(o) for o in outs]

    return run


def rate(fn: Any, seconds: float) -> float:
    """Calls per second over ``seconds``."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    """Interleave bare and edge-runtime rounds and report the median ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / "models" / "efficientnet_lite0"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0, help="per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    report = {}
    for kind, bare in (("onnx", bare_onnx), ("tflite", bare_tflite)):
        model = load_model(Path(args.model), kind, BackendOptions(threads=args.threads))
        inputs, _ = Runner(model).prepare(synthetic_image())
        bare_run = bare(model.file, args.threads)
        ours, theirs = [], []
        x, backend = inputs[0], model.backend
        for _ in range(args.rounds):  # interleaved so machine noise hits both alike
            theirs.append(rate(lambda run=bare_run, x=x: run(x), args.seconds))
            ours.append(rate(lambda b=backend, i=inputs: b.infer(i), args.seconds))
        model.close()
        ratios = sorted(o / t for o, t in zip(ours, theirs, strict=True))
        report[kind] = {
            "bare_per_s": round(max(theirs), 1),
            "edge_runtime_per_s": round(max(ours), 1),
            "median_ratio": round(ratios[len(ratios) // 2], 3),
        }
        print(
            f"{kind:6s} bare {max(theirs):8.1f}/s  edge-runtime {max(ours):8.1f}/s  "
            f"ratio (median of {args.rounds}) {ratios[len(ratios) // 2]:.3f}"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
