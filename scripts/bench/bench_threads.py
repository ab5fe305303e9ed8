"""Where the daemon's CPU goes, per thread, in milliseconds of CPU per prediction.

    python scripts/bench/bench_threads.py [MODEL] [--threads 2] [--seconds 5] [--runs 3] [--video V]

Starts a private mosquitto, a subscriber and the daemon (video source looping at ``fps: 0``), then
reads every thread's CPU time from ``/proc`` over a window and divides by the predictions the
subscriber received in it. The broker, the subscriber and the whole machine are counted the same
way. The daemon's threads get their Python names at the OS level (``prctl``, injected through a
``sitecustomize`` for this run only), so ``/proc`` can tell them apart.

``inference`` is the CPU spent inside the runtime's own call (``InferenceSession.run``, timed with
the calling thread's CPU clock by the same ``sitecustomize`` and summed in a shared counter), so
work an inference thread does besides the call (posting results) counts as the rest; with
``streams: 1`` and several threads, ONNX Runtime's pool threads are not in it. ``rest/inference``
is the CPU of everything else, machine-wide, divided by that. The machine's speed moves by tens
of percent on a shared host; this ratio moves far less, so it is the number to compare two
versions of the code by. With as many inference threads as cores, the daemon's throughput over a
bare runtime loop's is bounded by about ``k / (1 + rest/inference)`` (docs/performance.md, Results).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mqtt import Broker, Subscriber

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")

SITECUSTOMIZE = """\
import ctypes, mmap, os, struct, sys, threading, time
_prctl = ctypes.CDLL(None).prctl
_inner = threading.Thread._bootstrap_inner
_fd = os.open(os.environ["BENCH_RUNTIME_CPU"], os.O_RDWR)
_counter = mmap.mmap(_fd, 8)
_add = threading.Lock()
def _timed(run):
    def timed(*a, **k):
        t0 = time.thread_time_ns()
        try:
            return run(*a, **k)
        finally:
            spent = time.thread_time_ns() - t0
            with _add:
                struct.pack_into("q", _counter, 0, struct.unpack_from("q", _counter, 0)[0] + spent)
    return timed
def _named(self):
    try:
        _prctl(15, self.name[:15].encode(), 0, 0, 0)  # PR_SET_NAME
    except Exception:
        pass
    ort = sys.modules.get("onnxruntime")
    if ort is not None and not getattr(ort.InferenceSession, "_bench_timed", False):
        ort.InferenceSession.run = _timed(ort.InferenceSession.run)
        ort.InferenceSession._bench_timed = True
    return _inner(self)
threading.Thread._bootstrap_inner = _named
"""


def _ticks(stat: str) -> int:
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def process_ticks(pid: int) -> int:
    """User + system CPU ticks of a process (all its threads, living ones)."""
    return _ticks(Path(f"/proc/{pid}/stat").read_text())


def thread_ticks(pid: int) -> dict[tuple[str, str], int]:
    """CPU ticks of each thread of ``pid``, keyed by (tid, name)."""
    out: dict[tuple[str, str], int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        out[(task.name, stat[stat.index("(") + 1 : stat.rindex(")")])] = _ticks(stat)
    return out


def runtime_ns(counter: Path) -> int:
    """CPU nanoseconds the daemon's threads spent inside runtime calls so far (SITECUSTOMIZE)."""
    return int.from_bytes(counter.read_bytes()[:8], sys.byteorder, signed=True)


def machine_ticks() -> int:
    """Busy CPU ticks of the whole machine (user, nice, system, irq, softirq)."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return sum(int(x) for x in f[:3]) + int(f[5]) + int(f[6])


@dataclass
class Run:
    """One measured window: ms of CPU per prediction, by thread and by process."""

    fps: float
    threads: dict[str, float]
    runtime: float
    broker: float
    subscriber: float
    machine: float
    vmhwm_mb: float

    @property
    def daemon(self) -> float:
        """All the daemon's threads."""
        return sum(self.threads.values())

    @property
    def inference(self) -> float:
        """Inside the runtime's call (ONNX Runtime); for other runtimes, the inference threads."""
        return self.runtime or sum(v for k, v in self.threads.items() if k.startswith("infer"))

    @property
    def rest_over_inference(self) -> float:
        """Machine CPU outside the runtime's call, over the CPU inside it."""
        return (self.machine - self.inference) / self.inference if self.inference else float("nan")


def status_kb(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` value in kB (VmHWM, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def one_run(args: argparse.Namespace, work: Path) -> Run:
    """Start broker, subscriber and daemon; measure one window; stop them."""
    broker = Broker(work).start()
    daemon: subprocess.Popen[bytes] | None = None
    sub = Subscriber(broker.port, "bench/+/predictions/#", client_id=f"threads-{broker.port}")
    try:
        model = {"path": str(args.model), "backend": "onnx", "threads": args.threads}
        if args.streams:
            model["streams"] = args.streams
        cfg = {
            "device": {"id": "bench"},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "topic_prefix": "bench"},
            "outbox": {"path": str(work / f"outbox-{broker.port}.db")},
            "models": {"model": model},
            "pipelines": [
                {
                    "name": "cam",
                    "model": "model",
                    "source": {"type": "video", "path": str(args.video), "fps": 0, "loop": True},
                }
            ],
            "updates": {"store": str(work / "models")},
        }
        config = work / f"config-{broker.port}.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        site = work / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
        counter = work / f"runtime-cpu-{broker.port}"
        counter.write_bytes(bytes(8))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), BENCH_RUNTIME_CPU=str(counter))
        with (work / "daemon.log").open("ab") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "edge_runtime", "run", str(config)], env=env, stderr=log, cwd=ROOT
            )
        deadline = time.monotonic() + 60
        while sub.count() < 20:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon gave no predictions; see {work / 'daemon.log'}")
            time.sleep(0.05)
        time.sleep(args.warmup)
        own, broker_pid = os.getpid(), broker.proc.pid if broker.proc else 0
        a = (thread_ticks(daemon.pid), process_ticks(broker_pid), process_ticks(own), machine_ticks())
        n0, t0, r0 = sub.count(), time.monotonic(), runtime_ns(counter)
        time.sleep(args.seconds)
        b = (thread_ticks(daemon.pid), process_ticks(broker_pid), process_ticks(own), machine_ticks())
        spent_ns = runtime_ns(counter) - r0
        n, elapsed = sub.count() - n0, time.monotonic() - t0
        hwm = status_kb(daemon.pid, "VmHWM")
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(15)
        sub.close()
        broker.kill()

    def ms(ticks: int) -> float:
        return ticks / TICK * 1e3 / max(1, n)

    per_thread: dict[str, float] = {}
    for key, ticks in b[0].items():
        per_thread[key[1]] = per_thread.get(key[1], 0.0) + ms(ticks - a[0].get(key, 0))
    runtime = spent_ns / 1e6 / max(1, n)
    processes = ms(b[1] - a[1]), ms(b[2] - a[2]), ms(b[3] - a[3])
    return Run(n / elapsed, per_thread, runtime, *processes, hwm / 1024)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", type=Path, default=ROOT / "models" / "efficientnet_lite0")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--streams", type=int, default=None, help="models.<n>.streams (default: auto)")
    p.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds after the first predictions")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--video", type=Path, default=ROOT / "samples" / "demo.mp4")
    args = p.parse_args()
    args.model, args.video = args.model.resolve(), args.video.resolve()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        for i in range(args.runs):
            r = one_run(args, Path(tmp))
            results.append(r)
            print(
                f"run {i + 1}/{args.runs}: {r.fps:.1f} predictions/s, machine {r.machine:.2f} ms "
                f"CPU per prediction, inference {r.inference:.2f}, rest/inference "
                f"{r.rest_over_inference:.3f}, daemon VmHWM {r.vmhwm_mb:.0f} MB",
                file=sys.stderr,
            )
    first = results[0].threads
    names = sorted({k for r in results for k in r.threads}, key=lambda k: -first.get(k, 0.0))
    what = f"{args.model.name}, {args.threads} threads"
    print(f"\nms of CPU per prediction, median of {len(results)} runs ({what}):")
    rows = [(name, [r.threads.get(name, 0.0) for r in results]) for name in names]
    for label in ("broker", "subscriber", "daemon", "machine", "runtime", "inference"):
        rows.append((label, [float(getattr(r, label)) for r in results]))
    for name, values in rows:
        if statistics.median(values) >= 0.005:
            print(f"  {name:18s} {statistics.median(values):7.3f}")
    ratios = [r.rest_over_inference for r in results]
    runs = ", ".join(f"{x:.3f}" for x in ratios)
    print(f"  rest/inference     {statistics.median(ratios):7.3f}  (runs: {runs})")
    print(f"  predictions/s      {statistics.median([r.fps for r in results]):7.1f}")


if __name__ == "__main__":
    main()
