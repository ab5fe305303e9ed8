"""The daemon end to end with a sensor: samples written line by line into a FIFO come out on MQTT.

A real mosquitto and the daemon as a child process, the bundled vibration detector, the stream
from the project's simulator with a fault injected: every window is predicted exactly once, in
order, and the fault is flagged.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.timeouts import scaled

from .broker import Broker, Recorder, wait_for
from .daemon import ROOT, DaemonProcess, make_config

sys.path.insert(0, str(ROOT / "scripts" / "models"))
import vibration as vib  # the project's simulator (scripts/models/vibration.py)

pytestmark = pytest.mark.slow
PRED = "/predictions/pump1"
WINDOW, HOP = 256, 128
FAULT_START, FAULT_SAMPLES = 2000, 1024


def sensor_config(tmp_path: Path, port: int, fifo: Path) -> Path:
    source = {
        "type": "sensor",
        "driver": "stream",
        "path": str(fifo),
        "format": "csv",
        "channels": list(vib.CHANNELS),
        "rate_hz": 1000,
        "window": WINDOW,
        "hop": HOP,
    }
    return make_config(
        tmp_path,
        port,
        tmp_path / "unused.mp4",
        models={"vibration": {"path": str(ROOT / "models" / "vibration_anomaly"), "threads": 1}},
        pipelines=[{"name": "pump1", "model": "vibration", "source": source}],
    )


def write_lines(fifo: Path, lines: list[str]) -> None:
    """One writer: opens the FIFO (waiting for the reader) and writes one line per write."""
    with fifo.open("w", buffering=1) as fh:
        for line in lines:
            fh.write(line + "\n")


def test_fifo_samples_give_every_window_once_and_the_fault_is_flagged(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    n = 4024  # -> floor((4024 - 256) / 128) + 1 = 30 windows
    expected = (n - WINDOW) // HOP + 1
    stream = vib.machine_stream(
        3, n, fault="bearing", fault_start=FAULT_START, fault_samples=FAULT_SAMPLES, severity=0.5
    )
    lines = vib.as_csv_lines(stream)
    fifo = tmp_path / "vibration.fifo"
    os.mkfifo(fifo)
    daemon = DaemonProcess(sensor_config(tmp_path, broker.port, fifo), tmp_path / "daemon.log")
    # two writers one after the other (the stream goes on), a header and two malformed lines
    first = ["ax,ay,az", *lines[:1500], "1.0,oops,2.0", *lines[1500:3000], "1,2"]
    writer = threading.Thread(target=lambda: (write_lines(fifo, first), write_lines(fifo, lines[3000:])))
    writer.start()
    writer.join(scaled(60))
    assert wait_for(lambda: len(recorder.on(PRED)) >= expected, 60), daemon.log()[-3000:]

    def sensor_health() -> dict[str, Any]:
        health = recorder.on("/health")
        return health[-1]["pipelines"]["pump1"] if health else {}

    assert wait_for(lambda: sensor_health().get("source_state") == "reconnecting", 15), sensor_health()
    assert daemon.terminate() == 0, daemon.log()[-3000:]
    preds = recorder.on(PRED)
    assert len(preds) == expected == len({p["id"] for p in preds})
    assert [p["seq"] for p in preds] == list(range(1, expected + 1))
    windows = [p["window"] for p in preds]
    assert [w["index"] for w in windows] == list(range(expected))
    assert [w["first_sample"] for w in windows] == [k * HOP for k in range(expected)]
    assert all(w["samples"] == WINDOW and w["start_ts"] <= w["end_ts"] for w in windows)
    first = preds[0]
    assert (
        "frame" not in first and first["task"] == "anomaly" and first["model"]["name"] == "vibration_anomaly"
    )
    assert set(first["latency_ms"]) == {"capture", "queue", "preprocess", "inference", "postprocess", "total"}
    fault_end = FAULT_START + FAULT_SAMPLES
    starts = {p["window"]["first_sample"]: p["anomaly"]["flag"] for p in preds}
    inside = [flag for s, flag in starts.items() if s >= FAULT_START and s + WINDOW <= fault_end]
    healthy = [flag for s, flag in starts.items() if s + WINDOW <= FAULT_START or s >= fault_end]
    assert len(inside) == 6 and all(inside), starts
    assert len(healthy) == 20 and not any(healthy), starts
    assert all(p["anomaly"]["threshold"] == 0.5 for p in preds)
    final = recorder.on("/health")[-1]["pipelines"]["pump1"]
    assert final["frames"] == final["inferred"] == expected
    assert final["samples"] == n and final["malformed"] == 2 and final["errors"] == 0
