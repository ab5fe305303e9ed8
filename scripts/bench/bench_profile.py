"""Where the daemon's time goes: per-thread CPU (psutil) split by what py-spy sees each thread doing.

Used by ``scripts/bench/benchmark.py --only profile --py-spy PATH``. On a running daemon (looping video,
``fps: 0``), after the warm-up, three windows of ``--seconds`` each:

1. no profiler: predictions/s and CPU seconds of every OS thread (native ones included, e.g. the
   onnxruntime intra-op pool, which py-spy cannot see);
2. ``py-spy record`` (active samples only): each Python thread's CPU is split into stages by the
   share of its samples whose innermost recognised frame belongs to that stage;
3. ``py-spy record --gil``: only the thread holding the GIL is sampled, so the sample count over
   the window's ticks is the share of wall time the GIL is held, by stage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
RATE = 100  # samples/s

# (part of the file path, function name or None) -> stage; checked from the innermost frame out
RULES: list[tuple[str, str | None, str]] = [
    ("json/", None, "JSON encoding + ids"),
    ("publish/payloads.py", None, "JSON encoding + ids"),
    ("uuid.py", None, "JSON encoding + ids"),
    ("edge_runtime/inference/", None, "inference call"),
    ("onnxruntime/", None, "inference call"),
    ("edge_runtime/preprocess/", None, "preprocess"),
    ("model/runner.py", "prepare", "preprocess"),
    ("edge_runtime/postprocess/", None, "postprocess"),
    ("model/runner.py", "finish", "postprocess"),
    ("model/runner.py", "payload", "result -> dict"),
    ("publish/outbox.py", "fetch", "outbox fetch/ack (publisher, SQLite)"),
    ("publish/outbox.py", "ack", "outbox fetch/ack (publisher, SQLite)"),
    ("publish/outbox.py", None, "outbox commit (SQLite)"),
    ("capture/base.py", "put", "frame hand-off (queue)"),
    ("capture/base.py", "get", "frame hand-off (queue)"),
    ("capture/base.py", "emit", "frame hand-off (queue)"),
    ("capture/files.py", None, "decode (VideoCapture.read)"),
    ("paho/", None, "paho (MQTT client)"),
    ("publish/publisher.py", None, "publisher loop"),
    ("publish/mqtt.py", None, "MQTT link"),
    ("health/", None, "health"),
    ("logging/", None, "logging"),
    ("threading.py", None, "locks/queues (Python side)"),
    ("queue.py", None, "locks/queues (Python side)"),
    ("edge_runtime/pipeline.py", None, "pipeline loop, metrics"),
]


def stage_of(frames: list[str]) -> str:
    """The stage of one stack (root first), from its innermost recognised frame."""
    for frame in reversed(frames):
        func, _, where = frame.partition(" (")
        for part, name, stage in RULES:
            if part in where and (name is None or func.endswith(name)):
                return stage
    leaf = frames[-1] if frames else "?"
    return "other: " + leaf.split(" (")[0]


def parse_raw(path: Path) -> tuple[dict[int, str], dict[int, Counter[str]]]:
    """py-spy ``--format raw --threads``: thread names, and samples per (thread, stage)."""
    names: dict[int, str] = {}
    samples: dict[int, Counter[str]] = defaultdict(Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("thread ("):
            continue
        tid = int(stack[len("thread (") : stack.index(")")])
        parts = stack.split(": ", 1)[1].split(";")
        names[tid] = parts[0]
        samples[tid][stage_of(parts[1:])] += int(count)
    return names, samples


def thread_cpu(proc: psutil.Process) -> dict[int, float]:
    """CPU seconds of every OS thread of ``proc``."""
    return {t.id: t.user_time + t.system_time for t in proc.threads()}


def _record(py_spy: Path, pid: int, seconds: float, out: Path, gil: bool) -> str:
    cmd = [
        str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(RATE),
        "--format", "raw", "--threads", "--nonblocking", "-o", str(out),
    ]  # fmt: skip
    if gil:
        cmd.append("--gil")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    return " ".join(line for line in done.stdout.splitlines() if "Samples" in line) or done.stderr[-300:]


def profile(bench: Any, r: dict[str, Any], threads: int, *, py_spy: Path | None, log: Any) -> dict[str, Any]:
    """Profile the daemon on one model and thread count."""
    if py_spy is None or not Path(py_spy).exists():
        return {"model": r["name"], "threads": threads, "error": "py-spy not found (pass --py-spy PATH)"}
    folder = bench.scratch("profile")
    config = bench.daemon_config(folder, r, bench.args.backend, threads, 0)
    bench.subscriber.clear()
    started = time.time()
    with (folder / "log.txt").open("wb") as logfile:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "run", str(config)],
            stdout=logfile,
            stderr=logfile,
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    try:
        run = _Run(pid=proc.pid, started=started, folder=folder, py_spy=py_spy, recipe=r, threads=threads)
        return _profile_running(bench, run, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _frames_between(bench: Any, start: float, end: float) -> int:
    return sum(1 for t, _, _ in bench.subscriber.records if start <= t <= end)


@dataclass(frozen=True)
class _Run:
    """A daemon being profiled."""

    pid: int
    started: float
    folder: Path
    py_spy: Path
    recipe: dict[str, Any]
    threads: int


def _profile_running(bench: Any, run: _Run, log: Any) -> dict[str, Any]:
    pid, started, folder, py_spy, r, threads = (
        run.pid,
        run.started,
        run.folder,
        run.py_spy,
        run.recipe,
        run.threads,
    )
    seconds = bench.args.seconds
    ps = psutil.Process(pid)
    first = bench.subscriber.first_after(started, 120)
    if first is None:
        return {"model": r["name"], "threads": threads, "error": "no prediction within 120 s"}
    time.sleep(max(0.0, first + bench.args.warmup - time.time()))
    others = {"mosquitto": psutil.Process(bench.broker.proc.pid), "benchmark (subscriber)": psutil.Process()}
    t0, cpu0, o0 = time.time(), thread_cpu(ps), {k: sum(p.cpu_times()[:2]) for k, p in others.items()}
    time.sleep(seconds)
    t1, cpu1, o1 = time.time(), thread_cpu(ps), {k: sum(p.cpu_times()[:2]) for k, p in others.items()}
    frames = _frames_between(bench, t0, t1)
    active_file, gil_file = folder / "active.txt", folder / "gil.txt"
    a0 = time.time()
    active_info = _record(py_spy, pid, seconds, active_file, gil=False)
    a1 = time.time()
    gil_info = _record(py_spy, pid, seconds, gil_file, gil=True)
    names, active = parse_raw(active_file)
    gil_names, gil = parse_raw(gil_file)
    names.update(gil_names)
    wall = t1 - t0
    per_thread = {
        tid: cpu1.get(tid, 0.0) - cpu0.get(tid, 0.0)
        for tid in cpu1
        if cpu1.get(tid, 0) - cpu0.get(tid, 0) > 0
    }
    stages: dict[str, float] = defaultdict(float)
    for tid, cpu_s in per_thread.items():
        total = sum(active.get(tid, Counter()).values())
        if tid in names and total:
            for stage, n in active[tid].items():
                stages[f"{stage} [{names[tid]}]"] += cpu_s * n / total
        else:
            stages["native threads (no Python frames: runtime pool)"] += cpu_s
    ticks = RATE * seconds
    gil_stages: Counter[str] = Counter()
    for tid, counts in gil.items():
        gil_stages.update({f"{stage} [{names.get(tid, tid)}]": n for stage, n in counts.items()})
    result = {
        "model": r["name"],
        "backend": bench.args.backend,
        "threads": threads,
        "fps_without_profiler": frames / wall,
        "fps_under_py_spy": _frames_between(bench, a0, a1) / (a1 - a0),
        "process_cpu_percent": 100 * sum(per_thread.values()) / wall,
        "outside_cpu_ms_per_frame": {k: round(1e3 * (o1[k] - o0[k]) / max(frames, 1), 3) for k in others},
        "threads_cpu_percent": {
            f"{names.get(tid, 'native')} ({tid})": round(100 * s / wall, 1)
            for tid, s in sorted(per_thread.items(), key=lambda kv: -kv[1])
        },
        "cpu_ms_per_frame": {
            k: round(1e3 * v / max(frames, 1), 3) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])
        },
        "gil_held_percent_of_wall": {
            k: round(100 * v / ticks, 1) for k, v in sorted(gil_stages.items(), key=lambda kv: -kv[1])
        },
        "gil_held_total_percent": round(100 * sum(gil_stages.values()) / ticks, 1),
        "py_spy": {"active": active_info, "gil": gil_info},
    }
    log(
        f"  profile {r['name']} threads {threads}: {result['fps_without_profiler']:.1f}/s, "
        f"GIL held {result['gil_held_total_percent']}% of the time; top: "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in list(result["cpu_ms_per_frame"].items())[:4])
    )
    return result


def markdown(profiles: list[dict[str, Any]]) -> list[str]:
    """A table per profiled configuration."""
    lines = ["## Profile of the daemon (py-spy + per-thread CPU)", ""]
    for p in profiles:
        if "error" in p:
            lines += [f"{p['model']} threads {p['threads']}: {p['error']}", ""]
            continue
        lines += [
            f"### {p['model']} [{p['backend']}, {p['threads']} thread(s)]",
            "",
            f"{p['fps_without_profiler']:.1f} predictions/s without the profiler "
            f"({p['fps_under_py_spy']:.1f}/s while py-spy samples); process CPU "
            f"{p['process_cpu_percent']:.0f}%; GIL held {p['gil_held_total_percent']}% of wall time.",
            "",
            "Outside the daemon, CPU ms per prediction: "
            + ", ".join(f"{k} {v:.2f}" for k, v in p["outside_cpu_ms_per_frame"].items()),
            "",
            "Threads (CPU % of one core): "
            + ", ".join(f"{k} {v}" for k, v in p["threads_cpu_percent"].items()),
            "",
            "| stage | CPU ms per prediction | GIL held (% of wall time) |",
            "|---|---|---|",
        ]
        gil = p["gil_held_percent_of_wall"]
        keys = list(p["cpu_ms_per_frame"]) + [k for k in gil if k not in p["cpu_ms_per_frame"]]
        lines += [f"| {k} | {p['cpu_ms_per_frame'].get(k, 0):.3f} | {gil.get(k, 0):.1f} |" for k in keys]
        lines.append("")
    return lines
