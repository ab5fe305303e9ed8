"""The integrations on a real daemon: a real Prometheus scrapes it, a real broker gets its
snapshots, the status page answers while predictions flow, /healthz follows a real RTSP camera."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ..broker import Broker, Recorder, free_port, wait_for
from ..capture.rtsp import RtspCamera, require_rtsp_server
from ..daemon import ROOT, DaemonProcess, make_config, make_video
from .peers import Prometheus, get, promtool_check

pytestmark = pytest.mark.slow


def everything(tmp: Path, port: int, **overrides: Any) -> tuple[Path, int, int]:
    """A looping video with snapshots on ``person``, metrics (port and textfile) and the page."""
    video = make_video(tmp / "v.mp4", 40)
    http, metrics = free_port(), free_port()
    pipeline = {
        "name": "front",
        "model": "person",
        "source": {"type": "video", "path": str(video), "fps": 10, "loop": True},
        "snapshots": {"labels": ["person"], "min_interval_s": 1, "max_height": 200},
    }
    config = make_config(
        tmp,
        port,
        video,
        pipelines=[pipeline],
        http={"listen": f"127.0.0.1:{http}"},
        metrics={
            "listen": f"127.0.0.1:{metrics}",
            "textfile": str(tmp / "edge.prom"),
            "textfile_interval_s": 1,
        },
        **overrides,
    )
    return config, http, metrics


def dashboard_queries_are_valid_and_name_real_series(prometheus: Prometheus) -> None:
    """Every query of the Grafana dashboard parses in Prometheus, and each series it names is
    scraped (the host's temperature and throttling exist only where the board reports them)."""
    dashboard = json.loads((ROOT / "dashboards" / "edge-runtime.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) > 15
    optional = {"edge_runtime_host_temperature_celsius", "edge_runtime_host_throttled"}
    for expr in exprs:
        prometheus.query(expr.replace('instance=~"$instance"', 'instance=~".+"'))  # 400 on a bad query
        for name in set(re.findall(r"edge_runtime_[a-z_]+", expr)) - optional:
            assert prometheus.query(name), f"{name} (in {expr!r}) has no series"


def status(http: int) -> dict[str, Any]:
    code, body, _ = get(f"http://127.0.0.1:{http}/api/status")
    return json.loads(body) if code == 200 else {}


def test_prometheus_scrapes_histograms_and_counters_that_move(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    config, http, metrics = everything(tmp_path, broker.port)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{metrics}")
    try:
        inferred = "edge_runtime_frames_inferred_total{pipeline='front'}"
        assert wait_for(lambda: (prometheus.value(inferred) or 0) > 0, 90), daemon.log()[-3000:]
        first = prometheus.value(inferred)
        assert first is not None
        assert wait_for(lambda: (prometheus.value(inferred) or 0) > first, 60)
        count = prometheus.value("edge_runtime_inference_latency_seconds_count{pipeline='front'}")
        assert count is not None and count > 0
        buckets = prometheus.query("edge_runtime_end_to_end_latency_seconds_bucket{pipeline='front'}")
        assert len(buckets) == 17  # 16 bounds and +Inf
        p50 = prometheus.value("histogram_quantile(0.5, edge_runtime_inference_latency_seconds_bucket)")
        assert p50 is not None and 0 < p50 < 2.5
        assert prometheus.value("edge_runtime_mqtt_connected") == 1
        info = prometheus.query("edge_runtime_model_info")
        assert info and info[0]["metric"]["model"] == "ssdlite_mobilenet_v2_person"
        assert len(info[0]["metric"]["sha256"]) == 64 and info[0]["metric"]["backend"] == "onnx"

        dashboard_queries_are_valid_and_name_real_series(prometheus)
        code, exposition, _ = get(f"http://127.0.0.1:{metrics}/metrics")
        assert code == 200
        checked = promtool_check(exposition)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert b"edge_runtime_frames_inferred_total" in (tmp_path / "edge.prom").read_bytes()
        assert get(f"http://127.0.0.1:{http}/metrics")[0] == 200  # the page serves it too
    finally:
        prometheus.close()
        assert daemon.terminate() == 0


def test_snapshots_reach_the_broker_and_the_page_while_predictions_flow(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    config, http, _ = everything(tmp_path, broker.port)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        assert wait_for(lambda: len(recorder.on("/snapshot/front")) >= 2, 90), daemon.log()[-3000:]
        jpeg = recorder.on("/snapshot/front")[0]
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] == 200
        retained = [r for t, _, r in recorder.messages if t.endswith("/snapshot/front")]
        assert not any(retained)
        code, body, headers = get(f"http://127.0.0.1:{http}/snapshot/front.jpg")
        assert code == 200 and headers["Content-Type"] == "image/jpeg"
        page_image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        # the person's box is drawn in its class colour (BGR 0,200,255), absent from the photo
        orange = np.all(np.abs(page_image.astype(int) - (0, 200, 255)) < 40, axis=2).sum()
        assert orange > 100
        s = status(http)
        assert s["pipelines"]["front"]["inferred"] > 0 and s["mqtt"]["connected"] is True
        assert s["pipelines"]["front"]["model"] == "ssdlite_mobilenet_v2_person@1"
        assert s["healthy"] is True and get(f"http://127.0.0.1:{http}/healthz")[0] == 200
        assert get(f"http://127.0.0.1:{http}/snapshot/nope.jpg")[0] == 404
        assert len(recorder.on("/predictions/front")) > 0
    finally:
        assert daemon.terminate() == 0


def test_healthz_turns_503_when_a_camera_stalls_and_200_when_it_returns(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    require_rtsp_server()
    camera = RtspCamera(free_port()).start()
    http = free_port()
    source = {"type": "rtsp", "url": camera.url, "open_timeout_s": 3, "read_timeout_s": 2}
    source |= {"reconnect": {"initial_s": 1, "max_s": 1}}
    config = make_config(
        tmp_path,
        broker.port,
        tmp_path / "unused.mp4",
        pipelines=[{"name": "door", "model": "person", "source": source}],
        http={"listen": f"127.0.0.1:{http}", "stall_s": 4},
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        assert wait_for(lambda: status(http).get("pipelines", {}).get("door", {}).get("inferred", 0) > 5, 90)
        assert get(f"http://127.0.0.1:{http}/healthz")[0] == 200
        # honest latency: "total" runs from the decoded frame to its commit; the wait for the next
        # frame of a 15 fps camera shows as the frame interval (~67 ms), outside "total"
        assert wait_for(lambda: len(recorder.on("/predictions/door")) > 45, 60)
        latencies = [p["latency_ms"] for p in recorder.on("/predictions/door")][
            -30:
        ]  # past the start's burst
        intervals = sorted(lat["interval"] for lat in latencies if "interval" in lat)
        assert 40 < intervals[len(intervals) // 2] < 120, intervals
        assert all(lat["total"] >= lat["queue"] + lat["preprocess"] + lat["inference"] for lat in latencies)
        camera.kill()
        assert wait_for(lambda: get(f"http://127.0.0.1:{http}/healthz")[0] == 503, 60), daemon.log()[-2000:]
        problems = json.loads(get(f"http://127.0.0.1:{http}/healthz")[1])["problems"]
        assert any("door" in p and "no frame" in p for p in problems)
        camera.start()
        assert wait_for(lambda: get(f"http://127.0.0.1:{http}/healthz")[0] == 200, 90), daemon.log()[-2000:]
    finally:
        camera.kill()
        assert daemon.terminate() == 0


def test_a_reload_frees_and_takes_the_ports_again(tmp_path: Path, broker: Broker) -> None:
    """SIGHUP stops the old daemon's servers before the new one binds the same ports."""
    config, http, metrics = everything(tmp_path, broker.port)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        assert wait_for(lambda: get(f"http://127.0.0.1:{http}/healthz")[0] == 200, 90), daemon.log()[-3000:]
        daemon.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload: running" in daemon.log(), 60), daemon.log()[-3000:]
        assert wait_for(lambda: get(f"http://127.0.0.1:{http}/healthz")[0] == 200, 30)
        assert get(f"http://127.0.0.1:{metrics}/metrics")[0] == 200
        assert "cannot listen" not in daemon.log()
    finally:
        assert daemon.terminate() == 0
