"""Golden test vectors: inputs and the outputs a model gave when its bundle was made.

A device runs the same inputs through the candidate model in a fresh backend and compares the
dequantised outputs: ``|out - ref| <= atol + rtol * max|ref|`` for every output tensor, where
``atol`` is at least ``atol_steps`` quantisation steps for a quantised output (runtimes round
int8 arithmetic differently on different CPUs). It also times the runs for the latency budget.

``trial`` is the acceptance test of an update candidate (``ModelSlot.trial`` calls it): load,
golden vectors, then the latency budget, absolute and relative to the serving model.
"""

from __future__ import annotations

import io
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.errors import EdgeRuntimeError, UpdateError, first_line
from edge_runtime.inference import BackendOptions
from edge_runtime.model.files import resolve
from edge_runtime.model.loader import LoadedModel, load_model
from edge_runtime.model.runner import Runner
from edge_runtime.preprocess.tensor import dequantize
from edge_runtime.types import TensorSpec

logger = logging.getLogger(__name__)

GOLDEN_JSON = "golden/golden.json"
DEFAULT_TOLERANCE = {"rtol": 0.05, "atol": 1e-3, "atol_steps": 3}


def first_inputs(folder: Path, kind: str) -> list[npt.NDArray[Any]]:
    """The inputs of golden vector 0 for ``kind`` (for timing a candidate against the serving model)."""
    meta = json.loads((folder / GOLDEN_JSON).read_text())
    data = np.load(folder / "golden" / f"{kind}.npz", allow_pickle=False)
    return [data[f"v0_in{j}"] for j in range(int(meta["kinds"][kind]["inputs"]))]


@dataclass(frozen=True, slots=True)
class GoldenReport:
    """How a candidate did on its golden vectors."""

    vectors: int
    worst_ratio: float  # largest |diff| / allowed over all outputs (<= 1 passes)
    worst_output: str
    latency_p50_ms: float
    latency_min_ms: float  # robust to other load on the machine: the basis of relative budgets


def _random_inputs(specs: list[TensorSpec], seed: int) -> list[npt.NDArray[Any]]:
    rng = np.random.default_rng(seed)
    arrays: list[npt.NDArray[Any]] = []
    for spec in specs:
        shape = tuple(d if d > 0 else 1 for d in spec.shape)
        if np.issubdtype(spec.dtype, np.integer):
            info = np.iinfo(spec.dtype.type)  # type: ignore[type-var]
            arrays.append(rng.integers(info.min, int(info.max) + 1, size=shape, dtype=spec.dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(spec.dtype))
    return arrays


def golden_inputs(model: LoadedModel, images: list[npt.NDArray[np.uint8]]) -> list[list[npt.NDArray[Any]]]:
    """Input tensors: the images preprocessed as the daemon would, or 2 seeded random inputs."""
    if images:
        runner = Runner(model)
        return [runner.prepare(image)[0] for image in images]
    return [_random_inputs(list(model.backend.input_specs), seed) for seed in (1, 2)]


def make_golden(folder: Path, images: list[npt.NDArray[np.uint8]], kinds: list[str]) -> dict[str, bytes]:
    """``golden/<kind>.npz`` per backend kind and ``golden/golden.json``, as archive members."""
    ref = resolve(folder)
    members: dict[str, bytes] = {}
    meta: dict[str, Any] = {"tolerance": DEFAULT_TOLERANCE, "kinds": {}}
    for kind in kinds:
        if kind not in ref.files:
            continue
        model = load_model(folder, kind, BackendOptions(accelerator="cpu", threads=1))
        try:
            vectors = golden_inputs(model, images)
            arrays: dict[str, npt.NDArray[Any]] = {}
            times: list[float] = []
            for i, inputs in enumerate(vectors):
                t0 = time.perf_counter()
                outputs = model.backend.infer(inputs)
                times.append((time.perf_counter() - t0) * 1e3)
                arrays.update({f"v{i}_in{j}": a for j, a in enumerate(inputs)})
                arrays.update({f"v{i}_out{j}": a for j, a in enumerate(outputs)})
        finally:
            model.close()
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        members[f"golden/{kind}.npz"] = buf.getvalue()
        meta["kinds"][kind] = {
            "vectors": len(vectors),
            "inputs": len(vectors[0]),
            "outputs": len(model.backend.output_specs),
            "latency_ms": round(statistics.median(times), 3),
        }
    members[GOLDEN_JSON] = json.dumps(meta, indent=2, sort_keys=True).encode()
    return members


def _allowed(spec: TensorSpec, ref: npt.NDArray[Any], tol: dict[str, float]) -> float:
    atol = float(tol.get("atol", 1e-3))
    if spec.quantization is not None:
        atol = max(atol, float(tol.get("atol_steps", 3)) * spec.quantization.scale)
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    return atol + float(tol.get("rtol", 0.05)) * peak


def check_golden(model: LoadedModel, folder: Path, *, repeat: int = 3) -> GoldenReport:
    """Run the bundle's golden vectors for this model's backend kind; UpdateError if they fail."""
    kind = model.backend.kind
    try:
        meta = json.loads((folder / GOLDEN_JSON).read_text())
        info = meta["kinds"][kind]
        data = np.load(folder / "golden" / f"{kind}.npz", allow_pickle=False)
    except (OSError, KeyError, ValueError) as exc:
        raise UpdateError(f"bundle has no usable golden vectors for {kind}: {exc}") from exc
    tol = {**DEFAULT_TOLERANCE, **meta.get("tolerance", {})}
    specs = list(model.backend.output_specs)
    worst, worst_name, times = 0.0, "", []
    for v in range(int(info["vectors"])):
        inputs = [data[f"v{v}_in{j}"] for j in range(int(info["inputs"]))]
        try:
            for _ in range(repeat):
                t0 = time.perf_counter()
                outputs = model.backend.infer(inputs)
                times.append((time.perf_counter() - t0) * 1e3)
        except Exception as exc:  # a runtime error on a golden input is a failed test, not a crash
            raise UpdateError(f"golden vector {v}: inference failed: {exc}") from exc
        if len(outputs) != int(info["outputs"]):
            raise UpdateError(f"golden vector {v}: {len(outputs)} outputs, expected {info['outputs']}")
        for j, (out, spec) in enumerate(zip(outputs, specs, strict=True)):
            ref = data[f"v{v}_out{j}"]
            if out.shape != ref.shape:
                raise UpdateError(f"golden vector {v} output {j}: shape {out.shape}, expected {ref.shape}")
            real, real_ref = dequantize(out, spec.quantization), dequantize(ref, spec.quantization)
            diff = float(np.max(np.abs(real.astype(np.float64) - real_ref))) if ref.size else 0.0
            ratio = diff / _allowed(spec, real_ref, tol)
            if ratio > worst:
                worst, worst_name = ratio, f"vector {v} output {j} ({spec.name}): max diff {diff:.4g}"
    if worst > 1.0:
        raise UpdateError(f"golden vectors differ beyond tolerance: {worst_name} ({worst:.1f}x the allowed)")
    p50 = statistics.median(times) if times else 0.0
    return GoldenReport(int(info["vectors"]), worst, worst_name, p50, min(times, default=0.0))


def trial(
    load: Callable[[], Runner],
    serving: Runner,
    folder: Path,
    *,
    label: str,
    max_latency_ms: float | None,
    latency_factor: float,
) -> Runner:
    """The candidate ``load`` gives from ``folder``, once it passed its golden vectors and the
    latency budget; UpdateError with the reason otherwise (the candidate closed)."""
    try:
        candidate = load()
    except EdgeRuntimeError as exc:
        raise UpdateError(f"model does not load: {first_line(exc)}") from exc
    try:
        report = check_golden(candidate.model, folder)
        check_latency(
            candidate, serving, folder, report, max_latency_ms=max_latency_ms, latency_factor=latency_factor
        )
    except BaseException:
        candidate.close()
        raise
    logger.info(
        "update: %s passed %d golden vector(s) (worst %.2f of tolerance), p50 %.1f ms",
        label,
        report.vectors,
        report.worst_ratio,
        report.latency_p50_ms,
    )
    return candidate


def check_latency(
    candidate: Runner,
    serving: Runner,
    folder: Path,
    report: GoldenReport,
    *,
    max_latency_ms: float | None,
    latency_factor: float,
) -> None:
    """The absolute budget on the golden runs' median; the relative one against the serving model
    timed on the same input, interleaved run by run, so other load on the machine (the
    pipelines, other daemons) weighs on both alike. The fastest of each is compared."""
    if max_latency_ms is not None and report.latency_p50_ms > max_latency_ms:
        raise UpdateError(
            f"latency {report.latency_p50_ms:.1f} ms is over the budget of {max_latency_ms:.1f} ms"
        )
    inputs = first_inputs(folder, candidate.model.backend.kind)
    specs = list(serving.model.backend.input_specs)
    if len(specs) != len(inputs) or any(
        tuple(s.shape) != a.shape or s.dtype != a.dtype for s, a in zip(specs, inputs, strict=False)
    ):
        logger.info("update: the serving model takes other inputs; relative latency not compared")
        return
    new: list[float] = []
    old: list[float] = []
    for i in range(6):
        for runs, model in ((new, candidate), (old, serving)):
            t0 = time.perf_counter()
            model.run(inputs)
            if i:  # the first call of each warms up
                runs.append((time.perf_counter() - t0) * 1e3)
    if min(new) > latency_factor * min(old):
        raise UpdateError(
            f"latency {min(new):.1f} ms is over {latency_factor:g}x the serving model's "
            f"{min(old):.1f} ms on the same input"
        )
