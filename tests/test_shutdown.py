"""Stopping with a thread stuck in a call nothing can interrupt: exit 0, nothing touched after close.

A network camera that accepts the connection and sends nothing holds the source thread inside
OpenCV/FFmpeg's open (C++) until ``open_timeout_s``. Before the fix, the daemon said "stopped
cleanly" and then died of SIGABRT ("terminate called without an active exception") whenever that
call returned while Python was finalising: reproduced every time here by closing the camera's
connection right after "stopped cleanly" (a slow board or an emulated one hit it by chance).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runtime.capture.files import ImagesSource
from edge_runtime.model import ModelSlot
from edge_runtime.pipeline import Pipeline
from edge_runtime.publish.outbox import Outbox

from .broker import Broker, wait_for
from .daemon import DaemonProcess, make_config, synthetic_config
from .test_pipeline_stages import IMAGES, Model
from .timeouts import scaled


@pytest.fixture
def silent_camera() -> Iterator[socket.socket]:
    """A TCP server that accepts an HTTP camera's connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server
    server.close()


def _start(tmp_path: Path, broker: Broker, camera: socket.socket) -> DaemonProcess:
    url = f"http://127.0.0.1:{camera.getsockname()[1]}/stream.mjpg"
    source = {"type": "http", "url": url, "open_timeout_s": 60, "read_timeout_s": 60}
    pipelines = [{"name": "front", "model": "person", "source": source}]
    config = make_config(tmp_path, broker.port, tmp_path / "x.mp4", pipelines=pipelines)
    return DaemonProcess(config, tmp_path / "daemon.log")


def _accept(camera: socket.socket) -> socket.socket:
    camera.settimeout(scaled(60))
    conn, _ = camera.accept()
    return conn


@pytest.mark.parametrize("returns", ["at-exit", "never"])
def test_a_source_stuck_in_a_native_call_cannot_abort_the_exit(
    tmp_path: Path, broker: Broker, silent_camera: socket.socket, returns: str
) -> None:
    """SIGHUP (the old daemon's stuck source is detached, a new one starts), then SIGTERM: exit 0.

    ``at-exit``: the stuck open returns just after "stopped cleanly" (the exit waits for it);
    ``never``: it has not returned when the exit's short wait ends (the process ends without
    finalisation, saying which thread it left).
    """
    daemon = _start(tmp_path, broker, silent_camera)
    first = _accept(silent_camera)
    try:
        assert wait_for(lambda: "edge-runtime running" in daemon.log(), 60), daemon.log()[-2000:]
        daemon.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload: running" in daemon.log(), 60), daemon.log()[-2000:]
        # The old, detached source's open returns now: it must touch nothing. (OpenCV opens one
        # FFmpeg stream at a time per process: the new source connects only after that.)
        first.close()
        second = _accept(silent_camera)
        daemon.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: "stopped cleanly" in daemon.log(), 60), daemon.log()[-2000:]
        if returns == "at-exit":
            second.close()
        code = daemon.proc.wait(scaled(30))
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    log = daemon.log()
    assert code == 0, log[-3000:]
    assert "terminate called" not in log
    assert log.count("stop: detached, still in a call that did not return: source-front") == 2, log[-3000:]
    if returns == "never":
        assert "exiting with thread(s) still in a call that did not return: source-front" in log
    for late in ("Traceback", "closed database", "ERROR"):
        assert late not in log, log[-3000:]


def test_a_model_call_that_outlives_the_stop_reaches_nothing_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow board: an inference still running when the stop's wait ends. The daemon then
    closes the outbox and the model; what that thread still produces is refused and dropped
    (a warning each), never an SQLite error or a traceback, and the thread ends."""
    gate = threading.Event()
    model = Model("1", run_gate=gate)  # its first call waits for the gate
    outbox = Outbox(tmp_path / "outbox.db")
    pipeline = Pipeline(
        "p",
        ImagesSource("p", IMAGES, fps=0),
        ModelSlot("m", model),
        outbox,
        topic="t",
        device="d",  # type: ignore[arg-type]
    )
    pipeline.start()
    assert model.run_entered.wait(scaled(20))
    lingering = pipeline.stop(timeout=0.2)
    assert "infer-p" in lingering
    outbox.close()  # what Daemon.stop does next
    model.closed = True
    with caplog.at_level(logging.WARNING):
        gate.set()
        assert wait_for(lambda: not pipeline.lingering, 20), pipeline.lingering
    messages = [r.getMessage() for r in caplog.records]
    assert "pipeline p: 1 result(s) finished after the stop; not stored" in messages
    assert any("not inferred: the model closed at the stop" in m for m in messages), messages
    assert all(r.levelno < logging.ERROR for r in caplog.records), messages
    reopened = Outbox(tmp_path / "outbox.db")
    rows = [json.loads(m.payload) for m in reopened.fetch(0, 100)]
    reopened.close()
    assert rows == []  # nothing was committed after the close


def test_an_update_status_after_the_close_is_not_a_failure_of_the_update(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An update step that outlived the stop reports a state: the closed outbox refuses it, and
    that is a warning, not an exception (which the update manager would take for a failed step
    and end the job for: an update lost to a reload on a slow board)."""
    from edge_runtime.app import Daemon
    from edge_runtime.config.loader import load_config

    daemon = Daemon(load_config(synthetic_config(tmp_path, 1883)))
    daemon.outbox = Outbox(tmp_path / "outbox.db")
    daemon.outbox.close()
    with caplog.at_level(logging.WARNING):
        daemon._publish_model_status({"state": "testing", "update": "abc"})
    assert "update status testing not sent: the daemon stopped" in caplog.text
