"""Throughput of the daemon with every integration on versus all off, side by side.

    python scripts/bench/bench_integrations.py [--frames N] [--rounds R] [--threads T]

Each round runs the real daemon twice on the same video (played as fast as the pipeline takes
it), alternating the order: once with no integration configured, once with all of them: snapshots
on every person (at most one a second), the metrics endpoint and textfile, the status page, Home
Assistant discovery and states every 0.5 s, while a client plays Prometheus and a browser
(``/metrics`` every second, ``/api/status`` and ``/snapshot/front.jpg`` twice a second).
Throughput is predictions per second as a subscriber receives them (first to last); prints each
run, the median of each mode and the ratio on/off (1.00 = no cost).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mqtt import Broker, Subscriber, free_port  # noqa: E402


def make_video(path: Path, frames: int) -> Path:
    """The astronaut photo panning, 320x240 (a person in every frame)."""
    photo = cv2.imread(str(ROOT / "tests" / "data" / "astronaut.jpg"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 15, (320, 240))
    for i in range(frames):
        shift = np.float32([[1, 0, (i % 20) - 10], [0, 1, 0]])
        writer.write(cv2.resize(cv2.warpAffine(photo, shift, photo.shape[1::-1]), (320, 240)))
    writer.release()
    return path


def config(tmp: Path, broker: int, video: Path, threads: int, on: bool) -> tuple[Path, int, int]:
    """The daemon's config; with ``on`` every integration enabled. Returns (file, http, metrics)."""
    http, metrics = free_port(), free_port()
    pipeline: dict[str, Any] = {
        "name": "front",
        "model": "person",
        "source": {"type": "video", "path": str(video), "fps": 0, "loop": False},
    }
    doc: dict[str, Any] = {
        "device": {"id": "bench"},
        "mqtt": {"host": "127.0.0.1", "port": broker, "topic_prefix": "edge"},
        "outbox": {"path": str(tmp / f"outbox-{on}.db")},
        "health": {"interval_s": 5},
        "models": {
            "person": {"path": str(ROOT / "models" / "ssdlite_mobilenet_v2_person"), "threads": threads}
        },
        "pipelines": [pipeline],
        "updates": {"store": str(tmp / "models")},
    }
    if on:
        pipeline["snapshots"] = {"labels": ["person"], "min_interval_s": 1}
        doc["http"] = {"listen": f"127.0.0.1:{http}"}
        doc["metrics"] = {"listen": f"127.0.0.1:{metrics}", "textfile": str(tmp / "edge.prom")}
        doc["home_assistant"] = {"enabled": True, "state_interval_s": 0.5}
    path = tmp / f"config-{on}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, http, metrics


def clients(http: int, metrics: int, stop: threading.Event) -> threading.Thread:
    """Prometheus and a browser, played: the daemon serves them while it works."""

    def fetch(url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
        except OSError:
            pass

    def run() -> None:
        tick = 0
        while not stop.wait(0.5):
            fetch(f"http://127.0.0.1:{http}/api/status")
            fetch(f"http://127.0.0.1:{http}/snapshot/front.jpg")
            if tick % 2 == 0:
                fetch(f"http://127.0.0.1:{metrics}/metrics")
            tick += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def one_run(
    tmp: Path, broker: Broker, video: Path, frames: int, *, threads: int, on: bool
) -> dict[str, float]:
    """One daemon run; predictions per second and the median end-to-end latency (ms)."""
    cfg, http, metrics = config(tmp, broker.port, video, threads, on)
    sub = Subscriber(broker.port, "edge/bench/predictions/front", client_id=f"bench-{time.time_ns()}")
    stop = threading.Event()
    log = (tmp / f"daemon-{on}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime", "run", str(cfg)], cwd=ROOT, stdout=log, stderr=log
    )
    if on:
        clients(http, metrics, stop)
    cpu: list[float] = []  # the daemon's CPU seconds at the first and at the last prediction
    try:
        deadline = time.monotonic() + 600
        while sub.count() < frames and time.monotonic() < deadline and proc.poll() is None:
            if not cpu and sub.count() > 0:
                cpu.append(_cpu_s(proc.pid))
            time.sleep(0.05)
        cpu.append(_cpu_s(proc.pid))
        records = list(sub.records)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(30)
        log.close()
        sub.close()
    if len(records) < frames:
        raise RuntimeError(f"only {len(records)} of {frames} predictions (see {tmp})")
    first, last = records[0][0], records[frames - 1][0]
    totals = [json.loads(p)["latency_ms"]["total"] for _, _, p in records[:frames]]
    return {
        "fps": (frames - 1) / (last - first),
        "total_p50_ms": statistics.median(totals),
        "cpu_ms": (cpu[-1] - cpu[0]) * 1e3 / (frames - 1),
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its threads."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def observer_cost(calls: int = 20000) -> float:
    """Microseconds per frame that the inference path's side pays with everything on: the snapshot
    holder's offer (with its label trigger) and the two histogram observations, on a real result."""
    sys.path.insert(0, str(ROOT))
    from edge_runtime.integrations.metrics import Metrics
    from edge_runtime.integrations.snapshots import SnapshotHolder, SnapshotTrigger
    from edge_runtime.model import Runner, load_model
    from edge_runtime.types import Frame

    image = cv2.imread(str(ROOT / "tests" / "data" / "astronaut.jpg"))
    runner = Runner(load_model(ROOT / "models" / "ssdlite_mobilenet_v2_person"))
    result = runner.predict(image)
    runner.close()
    holder = SnapshotHolder("front", trigger=SnapshotTrigger(["person"], 1.0, None))

    # the histograms only: the daemon's collector is read at scrape time, not per frame
    metrics = Metrics(None)  # type: ignore[arg-type]
    observers = [holder.offer, metrics.observer("front")]
    frame, stages = Frame(0, time.time(), image, 1.0, time.perf_counter()), {"inference": 20.0, "total": 30.0}
    t0 = time.perf_counter()
    for _ in range(calls):
        for observe in observers:
            observe(frame, result, stages)
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-integrations-") as name:
        tmp = Path(name)
        video = make_video(tmp / "video.mp4", args.frames)
        broker = Broker(tmp).start()
        results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        try:
            for r in range(args.rounds):
                for on in (False, True) if r % 2 == 0 else (True, False):
                    res = one_run(tmp, broker, video, args.frames, threads=args.threads, on=on)
                    results[on].append(res)
                    mode = "all on " if on else "all off"
                    print(
                        f"round {r + 1} {mode}: {res['fps']:7.2f} predictions/s  "
                        f"total p50 {res['total_p50_ms']:6.1f} ms  CPU {res['cpu_ms']:5.1f} ms/prediction"
                    )
        finally:
            broker.kill()
    off = statistics.median(r["fps"] for r in results[False])
    on_ = statistics.median(r["fps"] for r in results[True])
    print(f"\nmedian over {args.rounds} rounds, {args.frames} frames, threads {args.threads}:")
    print(f"  all off  {off:7.2f} predictions/s")
    print(f"  all on   {on_:7.2f} predictions/s")
    print(f"  ratio on/off {on_ / off:.3f}")
    print(f"  per frame on the pipeline's side (observers): {observer_cost():.1f} us")
    cpu_off = statistics.median(r["cpu_ms"] for r in results[False])
    cpu_on = statistics.median(r["cpu_ms"] for r in results[True])
    print(
        f"  daemon CPU per prediction: off {cpu_off:.1f} ms, on {cpu_on:.1f} ms "
        f"(ratio {cpu_on / cpu_off:.3f})"
    )


if __name__ == "__main__":
    main()
