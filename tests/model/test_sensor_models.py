"""Sensor-window models: model.yaml rules, the window tasks, and the bundled vibration detector.

The bundled model runs for real (ONNX and TFLite) on streams from the project's simulator: an
injected fault must be flagged, healthy vibration must not.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.config.sources import SensorSource as SensorConfig
from edge_runtime.config.sources import VideoSource
from edge_runtime.config.yamlsource import load_yaml, parse_model
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.inference import BackendOptions
from edge_runtime.model import (
    LoadedModel,
    Runner,
    WindowResult,
    WindowRunner,
    load_model,
    make_runner,
    source_mismatch,
)
from edge_runtime.model.spec import ModelSpec

from ..conftest import CLASSIFIER, DATA, MODELS, image, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "models"))
import vibration as vib  # the project's simulator (scripts/models/vibration.py)

VIBRATION = MODELS / "vibration_anomaly"
WINDOW_MODELS = DATA / "window_models"
WINDOW, HOP = 256, 128


@pytest.fixture(scope="module", params=["onnx", "tflite"])
def detector(request: pytest.FixtureRequest) -> Iterator[WindowRunner]:
    model = load_model(VIBRATION, request.param, BackendOptions(threads=1))
    runner = make_runner(model)
    assert isinstance(runner, WindowRunner)
    yield runner
    model.close()


def load(name: str) -> LoadedModel:
    return load_model(WINDOW_MODELS / name, "onnx", BackendOptions(threads=1))


def flags(runner: WindowRunner, stream: np.ndarray) -> list[bool]:
    """The flag of every window (256 samples, hop 128) of a stream."""
    results = [runner.predict(stream[s : s + WINDOW]) for s in range(0, len(stream) - WINDOW + 1, HOP)]
    assert all(isinstance(r, WindowResult) and r.task == "anomaly" for r in results)
    return [r.flag for r in results]


# -- the bundled detector ---------------------------------------------------------------------


@pytest.mark.parametrize("fault", vib.FAULTS)
def test_an_injected_fault_is_flagged_and_healthy_windows_are_not(detector: WindowRunner, fault: str) -> None:
    # 4 s of a healthy machine with the fault from 1.5 s to 2.5 s
    stream = vib.machine_stream(3, 4000, fault=fault, fault_start=1500, fault_samples=1000, severity=0.5)
    got = flags(detector, stream)
    starts = range(0, 4000 - WINDOW + 1, HOP)
    inside = [f for f, s in zip(got, starts, strict=True) if s >= 1500 and s + WINDOW <= 2500]
    outside = [f for f, s in zip(got, starts, strict=True) if s + WINDOW <= 1500 or s >= 2500]
    assert inside and all(inside), got
    assert outside and not any(outside), got


def test_healthy_machines_are_rarely_flagged(detector: WindowRunner) -> None:
    got = [f for seed in range(10, 16) for f in flags(detector, vib.machine_stream(seed, 3000))]
    assert sum(got) <= 1, f"{sum(got)} of {len(got)} healthy windows flagged"


def test_anomaly_payload_and_latency(detector: WindowRunner) -> None:
    result = detector.predict(vib.machine_stream(5, WINDOW))
    body = result.payload()
    assert set(body) == {"anomaly"} and set(body["anomaly"]) == {"score", "threshold", "flag"}
    assert body["anomaly"]["threshold"] == 0.5 and 0.0 <= body["anomaly"]["score"] <= 1.0
    assert set(result.latency_ms) == {"preprocess", "inference", "postprocess"}
    assert result.latency_ms["inference"] < 50


def test_onnx_and_tflite_agree_on_flags() -> None:
    stream = vib.machine_stream(8, 3000, fault="looseness", fault_start=1000, fault_samples=1000)
    got = []
    for backend in ("onnx", "tflite"):
        model = load_model(VIBRATION, backend, BackendOptions(threads=1))
        runner = make_runner(model)
        assert isinstance(runner, WindowRunner)
        got.append(flags(runner, stream))
        model.close()
    assert got[0] == got[1]


def test_report_records_detection_and_false_positive_rates() -> None:
    report = json.loads((VIBRATION / "report.json").read_text())
    for backend in ("onnx_int8", "tflite_int8"):
        result = report["results"][backend]
        assert result["detection_rate"] >= 0.95 and result["false_positive_rate"] <= 0.01
    assert all(size < 64 * 1024 for size in report["files"].values())


def test_a_config_threshold_overrides_model_yaml() -> None:
    model = load_model(VIBRATION, "onnx", BackendOptions(threads=1))
    try:
        runner = make_runner(model, score_threshold=0.0)
        result = runner.predict(vib.machine_stream(5, WINDOW))
        assert isinstance(result, WindowResult) and result.threshold == 0.0 and result.flag
    finally:
        model.close()


def test_window_of_the_wrong_shape_is_refused(detector: WindowRunner) -> None:
    with pytest.raises(ModelError, match=r"window of shape \[128, 3\], the model takes \[256, 3\]"):
        detector.predict(np.zeros((128, 3), np.float32))


def test_images_are_refused_by_a_window_model_and_windows_by_an_image_model() -> None:
    model = load_model(VIBRATION, "onnx", BackendOptions(threads=1))
    try:
        with pytest.raises(ModelError, match="sensor-window model"):
            Runner(model).predict(np.zeros((32, 32, 3), np.uint8))
    finally:
        model.close()
    result = run_cli("infer", VIBRATION, image("coffee"))
    assert result.code == 2 and "sensor-window model" in result.err
    classifier = load_model(CLASSIFIER, "onnx", BackendOptions(threads=1))
    try:
        with pytest.raises(ModelError, match="not a sensor-window model"):
            WindowRunner(classifier)
    finally:
        classifier.close()


# -- the other window tasks (tiny models with answers computable by hand) ----------------------


def test_regression_values_per_channel() -> None:
    model = load("regression")
    window = np.stack([np.arange(8.0), np.full(8, -2.0)], axis=1)
    result = make_runner(model).predict(window)
    assert result.payload() == {"values": [3.5, -2.0], "labels": ["mean_a", "mean_b"]}
    model.close()


def test_classification_of_windows() -> None:
    model = load("classification")
    window = np.stack([np.full(8, 1.0), np.full(8, 3.0)], axis=1)
    body = make_runner(model).predict(window).payload()
    assert [c["label"] for c in body["classes"]] == ["b_high", "a_high"]
    assert body["classes"][0]["score"] > 0.9
    model.close()


def test_reconstruction_error_is_the_anomaly_score() -> None:
    model = load("autoencoder")
    runner = make_runner(model)
    quiet = runner.predict(np.full((8, 2), 1.0))
    loud = runner.predict(np.full((8, 2), 3.0))
    assert isinstance(quiet, WindowResult) and isinstance(loud, WindowResult)
    assert quiet.score == pytest.approx(0.25) and not quiet.flag
    assert loud.score == pytest.approx(2.25) and loud.flag
    model.close()


# -- model.yaml and pipeline fit -----------------------------------------------------------------


BASE = """\
name: w
task: anomaly
family: anomaly_score
files: {onnx: m.onnx}
input: {kind: window, channels: [a, b], window: 8, mean: [0, 0], std: [1, 1]}
anomaly: {threshold: 0.5}
"""


def spec(tmp_path: Path, text: str) -> ModelSpec:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return parse_model(load_yaml(path), ModelSpec)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("mean: [0, 0]", "mean: [0]"), "mean has 1 values for 2 channels"),
        (("std: [1, 1]", "std: [1, 0]"), "std values must be non-zero"),
        (("anomaly: {threshold: 0.5}\n", ""), "goes with task anomaly"),
        (("family: anomaly_score", "family: yolov8"), "does not fit task"),
        (
            ("input: {kind: window, channels: [a, b], window: 8, mean: [0, 0], std: [1, 1]}\n", ""),
            "needs input",
        ),
        (("task: anomaly", "task: detection"), "does not fit task"),
    ],
)
def test_model_yaml_rules_for_window_models(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    assert spec(tmp_path, BASE).input.kind == "window"
    with pytest.raises(ConfigError, match=message):
        spec(tmp_path, BASE.replace(*change))


def test_image_model_yaml_is_unchanged(tmp_path: Path) -> None:
    assert spec(tmp_path, (CLASSIFIER / "model.yaml").read_text()).input.kind == "image"


def test_window_input_must_match_the_model_tensor(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "model.onnx").write_bytes((WINDOW_MODELS / "regression" / "model.onnx").read_bytes())
    text = (WINDOW_MODELS / "regression" / "model.yaml").read_text().replace("window: 8", "window: 16")
    (folder / "model.yaml").write_text(text.replace("labels: labels.txt\n", ""))
    with pytest.raises(ModelError, match=r"input says NWC \[1, 16, 2\], the model takes window\[1, 8, 2\]"):
        load_model(folder, "onnx")


def sensor_source(**overrides: object) -> SensorConfig:
    base = {"type": "sensor", "driver": "stream", "path": "/x", "channels": ["a", "b"], "rate_hz": 100}
    return SensorConfig.model_validate(base | {"window": 8} | overrides)


def test_a_source_must_fit_its_model() -> None:
    model = load("regression")
    try:
        assert source_mismatch(sensor_source(), model) is None
        assert "8 x 2" in (source_mismatch(sensor_source(window=16), model) or "")
        assert "8 x 2" in (source_mismatch(sensor_source(channels=["a", "b", "c"]), model) or "")
        video = VideoSource(type="video", path=Path("/v.mp4"))
        assert "use a source of type sensor" in (source_mismatch(video, model) or "")
    finally:
        model.close()
    classifier = load_model(CLASSIFIER, "onnx")
    try:
        assert "takes images" in (source_mismatch(sensor_source(), classifier) or "")
    finally:
        classifier.close()


def test_bench_and_models_commands_know_window_models() -> None:
    result = run_cli("bench", VIBRATION, "--backend", "onnx", "--seconds", "0.3", "--threads", "1", "--json")
    assert result.code == 0, result.err
    assert result.json_lines()[0]["latency_ms"]["p50"] > 0
    listed = run_cli("models", "--json")
    names = {m["name"]: m for m in json.loads(listed.out)["models"]}
    assert names["vibration_anomaly"]["task"] == "anomaly"
    assert names["vibration_anomaly"]["runnable_with"] == ["onnx", "tflite"]
