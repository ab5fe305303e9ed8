"""Live sources: a camera that drops and returns, one that answers nothing, one that is not there.

The camera is real: GStreamer's RTSP server (``rtsp_server.py``, run by the system python) killed
and restarted, or paused with SIGSTOP so that it keeps its connections and sends nothing. The
daemon runs as a child process against a real mosquitto. A server that accepts connections and
never answers is a plain listening socket.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pytest

from edge_runtime.capture import make_source
from edge_runtime.capture.live import LiveSource, camera_opener, camera_problem
from edge_runtime.config.sources import SensorSource, StreamSource

from ..broker import Broker, Recorder, free_port, wait_for
from ..daemon import DaemonProcess, make_config
from .rtsp import RtspCamera, require_rtsp_server

HUMAN_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")


def stream(url: str, **keys: object) -> LiveSource:
    source = make_source("cam", StreamSource.model_validate({"type": "rtsp", "url": url, **keys}))
    assert isinstance(source, LiveSource)
    return source


# -- the backoff ----------------------------------------------------------------------------------


def test_live_sources_back_off_to_a_low_cap_with_jitter() -> None:
    """Retries double from 0.5 s to a cap of 2 s (+-20% jitter), so a camera that is back is
    tried again within seconds however long it was away; sensors keep their longer default."""
    source = stream("rtsp://127.0.0.1:1/x")
    assert (source.reconnect_initial_s, source.reconnect_max_s) == (0.5, 2.0)
    delays = list(islice(source.retry_delays(), 40))
    assert 0.4 <= delays[0] <= 0.6
    assert all(d <= 2.0 * 1.2 for d in delays)
    late = delays[5:]
    assert all(d >= 2.0 * 0.8 for d in late) and len(set(late)) > 1  # at the cap, jittered

    custom = stream("rtsp://127.0.0.1:1/x", reconnect={"initial_s": 5, "max_s": 2})
    assert all(d >= 5 * 0.8 for d in islice(custom.retry_delays(), 10))
    sensor = SensorSource.model_validate(
        {
            "type": "sensor",
            "driver": "stream",
            "path": "/dev/null",
            "channels": ["x"],
            "rate_hz": 1,
            "window": 1,
        }
    )
    assert sensor.reconnect.max_s == 30


# -- a server that accepts and answers nothing ----------------------------------------------------


class SilentServer:
    """Accepts TCP connections and never sends a byte (a wedged camera or a black-holed proxy)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_server_that_accepts_and_sends_nothing_is_a_timeout_not_a_hang(silent: SilentServer) -> None:
    """Each attempt ends at the open timeout and the source tries again; it never blocks."""
    source = stream(
        f"rtsp://127.0.0.1:{silent.port}/cam",
        open_timeout_s=1,
        read_timeout_s=1,
        reconnect={"initial_s": 0.1, "max_s": 0.2},
    )
    source.start()
    try:
        assert wait_for(lambda: source.reconnects >= 3 and len(silent.accepted) >= 3, 60), source.error
        assert source.state == "reconnecting" and source.frames == 0
        waited = re.search(r"cannot open \(failed after (\d+\.\d)s\)", source.error or "")
        assert waited and float(waited.group(1)) >= 0.9, source.error  # it waited for an answer
        assert source.stats() == {"reconnects": source.reconnects}
    finally:
        source.stop()
    assert not source.running


# -- a camera that is not there -------------------------------------------------------------------


def test_a_missing_camera_says_why_it_cannot_open(tmp_path: Path) -> None:
    """OpenCV only says it failed; the source names the reason from the device node itself."""
    missing = str(tmp_path / "video7")
    assert camera_problem(missing) == f"{missing} does not exist: no camera there (yet)"
    assert camera_problem("/dev/null") is None  # opens: not a node problem
    source = LiveSource(
        "cam", camera_opener(missing, None, None, None, None), "camera 7", reconnect_initial_s=0.05
    )
    source.start()
    try:
        assert wait_for(lambda: source.state == "reconnecting", 30)
        assert source.error is not None and "camera 7: cannot open: " in source.error
        assert "does not exist" in source.error
    finally:
        source.stop()


# -- a real RTSP camera that drops and returns ----------------------------------------------------


@pytest.mark.slow
def test_a_camera_that_drops_and_returns_streams_again_within_seconds(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """Killed for 6 s and restarted: predictions resume within seconds of the restart. Paused
    (connected, silent): the read timeout ends the stream. No library writes to stderr."""
    require_rtsp_server()
    camera = RtspCamera(free_port()).start()
    source = {"type": "rtsp", "url": camera.url, "open_timeout_s": 3, "read_timeout_s": 2}
    config = make_config(
        tmp_path,
        broker.port,
        tmp_path / "unused.mp4",
        pipelines=[{"name": "front", "model": "person", "source": source}],
    )
    outside_systemd: dict[str, str | None] = {"JOURNAL_STREAM": None, "INVOCATION_ID": None}
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env=outside_systemd)
    try:
        predictions = lambda: len(recorder.on("/predictions/front"))  # noqa: E731
        assert wait_for(lambda: predictions() >= 5, 90), daemon.log()[-3000:]

        camera.kill()
        assert wait_for(lambda: "source front: reconnecting" in daemon.log(), 30), daemon.log()[-3000:]
        time.sleep(6)  # several failed attempts, the later ones at the capped delay
        before = predictions()
        camera.start()
        back = time.monotonic()
        assert wait_for(lambda: predictions() >= before + 3, 60), daemon.log()[-3000:]
        resumed_after = time.monotonic() - back
        # the retry delay is at most 2.4 s, opening this server takes about 2 s: "a few seconds",
        # with a wide margin for a loaded machine
        assert resumed_after < 15, f"streaming again only {resumed_after:.1f}s after the camera was back"

        seen = len(daemon.log())
        camera.pause()  # the connection stays up, no packet comes
        lost = re.compile(r"source front: reconnecting \(.*no frame \(read failed after (\d+\.\d)s")
        assert wait_for(lambda: bool(lost.search(daemon.log()[seen:])), 30), daemon.log()[-3000:]
        match = lost.search(daemon.log()[seen:])
        assert match and float(match.group(1)) >= 1.5  # the read timeout (2 s) ended it
        camera.resume()
        before = predictions()
        assert wait_for(lambda: predictions() >= before + 3, 60), daemon.log()[-3000:]

        def health() -> dict[str, object]:
            return dict(recorder.on("/health")[-1]["pipelines"]["front"])

        assert wait_for(lambda: health()["source_state"] == "streaming", 30), health()
        assert int(str(health()["reconnects"])) >= 2  # once per loss at least, in health
        assert daemon.terminate() == 0
    finally:
        camera.kill()
        if daemon.proc.poll() is None:
            daemon.kill()
    lines = daemon.log().splitlines()
    assert [ln for ln in lines if not HUMAN_LINE.match(ln)] == []  # no OpenCV/FFmpeg lines at all
    assert any(" WARNING edge_runtime.capture.base: source front: reconnecting (" in ln for ln in lines)
