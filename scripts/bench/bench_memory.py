"""Where the daemon's memory goes: RSS step by step, and a running process's RSS by mapping.

    python scripts/bench/bench_memory.py MODEL_FILE VIDEO THREADS RECIPE.json

prints ``RESULT {json}``: RSS and USS (memory only this process holds) after each start-up step of
an ONNX classifier pipeline, in a fresh process, importing in the daemon's order. Used by
``scripts/bench/benchmark.py --only memory``, which also calls :func:`by_mapping` on the running daemon.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]


def by_mapping(pid: int, top: int = 12) -> list[dict[str, Any]]:
    """Resident memory of a process grouped by what is mapped (shared library, heap, anonymous)."""
    sizes: dict[str, int] = defaultdict(int)
    name = "?"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            path = fields[5] if len(fields) > 5 else "[anonymous]"
            name = _group(path)
        elif fields and fields[0] == "Rss:":
            sizes[name] += int(fields[1]) * 1024
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])
    rows = [{"mapping": k, "rss_bytes": v} for k, v in ranked[:top]]
    rows.append({"mapping": "(rest)", "rss_bytes": sum(v for _, v in ranked[top:])})
    return rows


def _group(path: str) -> str:
    """Shared objects of one package count together (cv2 ships its codecs as separate .so files)."""
    for package in ("cv2", "onnxruntime", "numpy", "opencv_python", "ai_edge_litert", "cryptography"):
        if f"/{package}" in path:
            return f"{package} (.so files)"
    if "/python3" in path and (".so" in path or "lib-dynload" in path):
        return "other Python extensions"
    return Path(path).name if path.startswith("/") else path


def main() -> None:
    """Measure each step in this fresh process."""
    model_file, video, threads, recipe = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    proc = psutil.Process()
    steps: list[dict[str, Any]] = []

    def step(name: str) -> None:
        info = proc.memory_full_info()
        steps.append({"step": name, "rss_bytes": info.rss, "uss_bytes": info.uss})

    step("python + psutil")
    import numpy  # noqa: F401

    step("+ numpy")
    import cv2  # noqa: F401

    step("+ cv2")
    import onnxruntime as ort

    step("+ onnxruntime")
    import paho.mqtt.client  # noqa: F401
    import pydantic  # noqa: F401
    import yaml  # noqa: F401

    step("+ paho, pydantic, yaml")
    sys.path.insert(0, str(ROOT))
    import edge_runtime.app
    import edge_runtime.cli  # noqa: F401

    step("+ edge_runtime (all modules the daemon imports)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(model_file, so, providers=["CPUExecutionProvider"])
    step("+ onnxruntime session (model loaded)")
    sys.path.insert(0, str(ROOT / "scripts" / "bench"))
    import bench_workers

    stream = bench_workers.frames(video)
    r = json.loads(Path(recipe).read_text())
    image = next(stream)[0]
    step("+ video opened, first frame decoded")
    name = session.get_inputs()[0].name
    session.run(None, {name: bench_workers.preprocess(image, r)[0]})
    step("+ first inference")
    for _ in range(300):
        session.run(None, {name: bench_workers.preprocess(next(stream)[0], r)[0]})
    step("+ 300 more frames")
    biggest = by_mapping(proc.pid, top=8)
    print("RESULT " + json.dumps({"steps": steps, "by_mapping": biggest}), flush=True)


if __name__ == "__main__":
    main()
