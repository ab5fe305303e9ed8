#!/usr/bin/env python3
"""Build ``models/vibration_anomaly/``: a tiny fault detector for 3-axis machine vibration.

Data: ``scripts/models/vibration.py`` simulates accelerometers (1000 Hz, x/y/z in g) on rotating
machines at 900-2400 rpm, healthy or with one of four faults (imbalance, misalignment, mechanical
looseness, an outer-race bearing defect). Every window is 256 samples (0.256 s, 4-10 shaft turns).

Model: a 1-D convolutional network on the raw window, standardised per channel: three strided
convolutions (16, 24, 32 filters; ReLU) learn band-pass filters, then the mean and the maximum of
each filter's response over the window (energy in a band; the strongest impulse) feed one logistic
unit. Its output is the probability that the window shows a fault; model.yaml flags scores from
0.5. It is trained supervised on healthy and faulty machines: it detects faults like these four
(a novelty detector, e.g. an autoencoder, is the choice for faults nobody can describe; the daemon
also runs those, ``family: reconstruction``). About 7,000 parameters.

Steps: simulate -> train (torch, CPU, seeded, deterministic) -> float ONNX (opset 17, checked
against torch) -> int8 QDQ ONNX (onnxruntime) and full-int8 ``.tflite`` (litert-torch PT2E) ->
evaluate every file on held-out machines (other seeds) -> ``report.json`` and ``model.yaml``.

Needs the conversion environment (torch 2.13 CPU, litert-torch, onnx, onnxruntime, sympy, pyyaml,
numpy); run from the repository root::

    python scripts/models/make_vibration_model.py [--out-dir DIR] [--work-dir DIR]

Two runs give the same files (fixed seeds, one thread, deterministic algorithms).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quantize as q  # sibling scripts, importable once their folder is on sys.path
import vibration as vib

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "models" / "vibration_anomaly"
NAME = "vibration_anomaly"
ONNX_FILE = f"{NAME}_int8.onnx"
TFLITE_FILE = f"{NAME}_int8.tflite"
WINDOW = 256
OPSET = 17
THRESHOLD = 0.5
TRAIN_SEED, HOLDOUT_SEED = 20240601, 777
TRAIN_MACHINES, HOLDOUT_MACHINES = (2400, 600), (400, 100)  # (healthy, per fault)
WINDOWS_PER_MACHINE = 4
EPOCHS, BATCH, LEARNING_RATE, WEIGHT_DECAY = 40, 128, 3e-3, 1e-3

Runner = Callable[[np.ndarray], float]


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def dataset(seed: int, machines: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows [N, 256, 3], labels [N] (1 = fault) and the fault index per window (-1 healthy)."""
    rng = np.random.default_rng(seed)
    healthy, per_fault = machines
    xs, kinds = [], []
    plan = [(None, healthy)] + [(f, per_fault) for f in vib.FAULTS]
    for fault, count in plan:
        for _ in range(count):
            machine = vib.random_machine(rng, fault)
            xs.append(vib.windows(machine, WINDOWS_PER_MACHINE, WINDOW, rng))
            kinds += [-1 if fault is None else vib.FAULTS.index(fault)] * WINDOWS_PER_MACHINE
    x = np.concatenate(xs)
    kind = np.asarray(kinds)
    return x, (kind >= 0).astype(np.float32), kind


def standardisation(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the healthy training windows (rounded: they go in model.yaml)."""
    healthy = x[labels == 0].reshape(-1, x.shape[-1]).astype(np.float64)
    return np.round(healthy.mean(axis=0), 4), np.round(healthy.std(axis=0), 4)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


def make_net() -> Any:
    """The network (torch imported here: the rest of the script's helpers need only numpy)."""
    import torch
    from torch import nn

    class VibrationNet(nn.Module):
        """[N, 256, 3] standardised window -> [N, 1] fault probability."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv1d(3, 16, 7, stride=2, padding=3),
                nn.ReLU(),
                nn.Conv1d(16, 24, 7, stride=2, padding=3),
                nn.ReLU(),
                nn.Conv1d(24, 32, 5, stride=2, padding=2),
                nn.ReLU(),
            )
            self.head = nn.Linear(64, 1)

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            h = self.features(x.transpose(1, 2))
            return self.head(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.logits(x))

    return VibrationNet()


def train(x: np.ndarray, y: np.ndarray) -> tuple[Any, list[float]]:
    """AdamW on binary cross-entropy; returns the model (eval mode) and the loss per epoch."""
    import torch

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    net = make_net()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)[:, None]
    optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, EPOCHS)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(EPOCHS):
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            optimiser.zero_grad()
            loss = loss_fn(net.logits(xt[idx]), yt[idx])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        schedule.step()
        losses.append(round(total / len(xt), 5))
    return net.eval(), losses


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def torch_runner(net: Any) -> Runner:
    """Fault probability of one standardised window [256, 3] by the float torch model."""
    import torch

    def run(window: np.ndarray) -> float:
        with torch.no_grad():
            return float(net(torch.from_numpy(window[None]))[0, 0])

    return run


def export_float_onnx(net: Any, path: Path, windows: np.ndarray) -> float:
    """opset-17 float ONNX (TorchScript exporter); max |diff| to torch on ``windows``."""
    import torch

    torch.onnx.export(
        net,
        (torch.from_numpy(windows[:1]),),
        str(path),
        input_names=["window"],
        output_names=["score"],
        opset_version=OPSET,
        dynamo=False,
    )
    reference, exported = torch_runner(net), q.onnx_runner(path)
    diff = max(abs(reference(w) - float(exported(w[None])[0].reshape(-1)[0])) for w in windows)
    if diff > 1e-4:
        raise RuntimeError(f"float ONNX differs from torch by {diff}")
    return diff


def build_tflite(net: Any, calibration: np.ndarray, path: Path) -> None:
    """Full-int8 ``.tflite`` with the input in the window's own layout [1, 256, 3]."""
    import torch

    tensors = [torch.from_numpy(w[None]) for w in calibration]
    q.quantize_torch_to_tflite(net, tensors[0], tensors, path, channel_last_input=False)


def as_runner(batch_runner: Callable[[np.ndarray], list[np.ndarray]]) -> Runner:
    """A runner taking [1, 256, 3] float arrays -> a runner of one window returning the score."""
    return lambda window: float(batch_runner(window[None].astype(np.float32))[0].reshape(-1)[0])


def tflite_io(path: Path) -> dict[str, Any]:
    """Shape, dtype and quantisation of the ``.tflite`` input and output."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))

    def describe(detail: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = detail["quantization"]
        return {
            "shape": [int(d) for d in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero_point),
        }

    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    return {
        "inputs": [describe(d) for d in interpreter.get_input_details()],
        "outputs": [describe(d) for d in interpreter.get_output_details()],
        "ops": ops,
    }


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def evaluate(runner: Runner, x: np.ndarray, kind: np.ndarray) -> dict[str, Any]:
    """Detection rate per fault and overall, false-positive rate, median latency per window."""
    scores, times = np.empty(len(x)), []
    for i, window in enumerate(x):
        t0 = time.perf_counter()
        scores[i] = runner(window)
        times.append(time.perf_counter() - t0)
    flagged = scores >= THRESHOLD
    report: dict[str, Any] = {
        "false_positive_rate": round(float(flagged[kind < 0].mean()), 4),
        "detection_rate": round(float(flagged[kind >= 0].mean()), 4),
        "detection_rate_by_fault": {
            f: round(float(flagged[kind == i].mean()), 4) for i, f in enumerate(vib.FAULTS)
        },
        "healthy_windows": int((kind < 0).sum()),
        "faulty_windows": int((kind >= 0).sum()),
        "median_latency_ms": round(1e3 * float(np.median(times)), 4),
    }
    return report


def agreement(a: Runner, b: Runner, x: np.ndarray) -> dict[str, float]:
    """How often two runners flag the same windows, and their largest score difference."""
    sa, sb = np.array([a(w) for w in x]), np.array([b(w) for w in x])
    return {
        "same_flag": round(float(((sa >= THRESHOLD) == (sb >= THRESHOLD)).mean()), 4),
        "max_abs_score_diff": round(float(np.abs(sa - sb).max()), 4),
    }


# --------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------


MODEL_YAML = """\
name: {name}
version: "1"
task: anomaly
family: anomaly_score         # the single output is the score
description: Machine-vibration fault detector (3-axis accelerometer, 1000 Hz, 256-sample windows), int8
license: Apache-2.0
files:
  onnx: {onnx}
  tflite: {tflite}
input:
  kind: window
  channels: [ax, ay, az]      # acceleration in g
  window: {window}
  rate_hz: 1000
  layout: NWC                 # [1, window, channels]
  mean: {mean}
  std: {std}
anomaly:
  threshold: {threshold}
  score: probability that the window shows a machine fault (imbalance, misalignment, looseness, bearing)
sha256:
  {onnx}: {onnx_sha}
  {tflite}: {tflite_sha}
provenance:
  data: synthetic, simulated by scripts/models/vibration.py (seeded); nothing downloaded
  script: scripts/models/make_vibration_model.py
  training: {training}
  tools: {tools}
"""


def write_model_yaml(out_dir: Path, mean: np.ndarray, std: np.ndarray, training: dict[str, Any]) -> None:
    """model.yaml with the files' hashes; parsed back to check it."""
    import yaml

    text = MODEL_YAML.format(
        name=NAME,
        onnx=ONNX_FILE,
        tflite=TFLITE_FILE,
        window=WINDOW,
        mean=json.dumps([float(v) for v in mean]),
        std=json.dumps([float(v) for v in std]),
        threshold=THRESHOLD,
        onnx_sha=q.file_sha256(out_dir / ONNX_FILE),
        tflite_sha=q.file_sha256(out_dir / TFLITE_FILE),
        training=q.yaml_flow(training),
        tools=q.yaml_flow({**q.tool_versions(), "numpy": np.__version__}),
    )
    parsed = yaml.safe_load(text)
    if parsed["input"]["window"] != WINDOW or len(parsed["sha256"]) != 2:
        raise RuntimeError("model.yaml template does not round-trip")
    (out_dir / "model.yaml").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def build(out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Every file of the bundle; returns the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train, _ = dataset(TRAIN_SEED, TRAIN_MACHINES)
    x_test, _, kind_test = dataset(HOLDOUT_SEED, HOLDOUT_MACHINES)
    mean, std = standardisation(x_train, y_train)
    z_train = ((x_train - mean) / std).astype(np.float32)
    z_test = ((x_test - mean) / std).astype(np.float32)
    net, losses = train(z_train, y_train)
    calibration = z_train[:: len(z_train) // 256][:256]
    float_onnx = work_dir / f"{NAME}_float.onnx"
    onnx_diff = export_float_onnx(net, float_onnx, z_test[:16])
    q.quantize_onnx(float_onnx, out_dir / ONNX_FILE, [{"window": w[None]} for w in calibration])
    build_tflite(net, calibration, out_dir / TFLITE_FILE)
    runners = {
        "torch_float": torch_runner(net),
        "onnx_int8": as_runner(q.onnx_runner(out_dir / ONNX_FILE, threads=1)),
        "tflite_int8": as_runner(q.tflite_runner(out_dir / TFLITE_FILE, threads=1)),
    }
    training = {
        "machines": {"healthy": TRAIN_MACHINES[0], "per_fault": TRAIN_MACHINES[1]},
        "windows": len(z_train),
        "seed": TRAIN_SEED,
        "epochs": EPOCHS,
        "batch": BATCH,
        "optimiser": f"AdamW lr {LEARNING_RATE} weight decay {WEIGHT_DECAY}, cosine schedule, "
        "binary cross-entropy",
    }
    write_model_yaml(out_dir, mean, std, training)
    return {
        "model": NAME,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "training": {**training, "loss_per_epoch": losses},
        "holdout": {
            "seed": HOLDOUT_SEED,
            "machines": {"healthy": HOLDOUT_MACHINES[0], "per_fault": HOLDOUT_MACHINES[1]},
            "note": "other machines (speeds, mountings, fault severities) than training, same simulator",
        },
        "threshold": THRESHOLD,
        "float_onnx_vs_torch_max_abs_diff": onnx_diff,
        "results": {name: evaluate(run, z_test, kind_test) for name, run in runners.items()},
        "int8_vs_float": {
            name: agreement(runners["torch_float"], runners[name], z_test[::4])
            for name in ("onnx_int8", "tflite_int8")
        },
        "tflite_io": tflite_io(out_dir / TFLITE_FILE),
        "latency_note": "median per window, one thread, x86_64, including (de)quantisation in Python",
        "files": {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.name != "report.json"},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Build the bundle and write/print its report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--work-dir", type=Path, help="keep intermediates (float ONNX) here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or Path(tmp)
        work_dir.mkdir(parents=True, exist_ok=True)
        report = build(args.out_dir, work_dir)
    path = args.out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("results", "int8_vs_float", "files")}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
