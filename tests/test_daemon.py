"""The daemon end to end: a real mosquitto per test (killed by PID), the daemon as a real process.

Faults are injected while it runs; afterwards every frame and every ``seq`` is accounted for.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from .broker import Broker, Recorder, free_port, wait_for
from .certs import make_ca, make_server_cert
from .daemon import DaemonProcess, make_config, make_video, paced_config

pytestmark = pytest.mark.slow
PRED = "/predictions/front"
PREDICTION_KEYS = {
    "id",
    "seq",
    "ts",
    "device",
    "pipeline",
    "frame",
    "model",
    "task",
    "detections",
    "latency_ms",
}


def unique(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """De-duplicated by id, in arrival order of first occurrence."""
    seen: dict[str, dict[str, Any]] = {}
    for p in payloads:
        seen.setdefault(p["id"], p)
    return list(seen.values())


def pending_rows(db: Path, topic_suffix: str) -> list[dict[str, Any]]:
    """Payloads still in the outbox (read directly, as after a crash); none while the daemon has
    not created it yet. Read-only: opening it for writing would create an empty file under the
    daemon, which then refuses it as damaged."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            rows = con.execute("SELECT topic, payload FROM messages ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # not there yet, or its schema not yet written
        return []
    return [json.loads(p) for t, p in rows if t.endswith(topic_suffix)]


def test_video_of_n_frames_gives_exactly_n_predictions(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    n = 40
    config = make_config(tmp_path, broker.port, make_video(tmp_path / "v.mp4", n))
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    assert wait_for(lambda: len(recorder.on(PRED)) >= n, 90), daemon.log()[-3000:]
    assert wait_for(lambda: len(recorder.on("/health")) >= 2, 10)
    assert daemon.terminate() == 0
    preds = recorder.on(PRED)
    assert len(unique(preds)) == n == len(preds)
    assert [p["seq"] for p in preds] == list(range(1, n + 1))
    assert [p["frame"]["index"] for p in preds] == list(range(n))
    first = preds[0]
    assert set(first) == PREDICTION_KEYS
    assert first["device"] == "cam-test" and first["pipeline"] == "front" and first["task"] == "detection"
    assert set(first["frame"]) == {"index", "ts", "width", "height"} and first["frame"]["width"] == 320
    assert set(first["model"]) == {"name", "version", "sha256"}
    assert set(first["latency_ms"]) == {"capture", "queue", "preprocess", "inference", "postprocess", "total"}
    assert "interval" in preds[1]["latency_ms"]  # from the second frame on
    assert sum(1 for p in preds if any(d["label"] == "person" for d in p["detections"])) >= n * 0.8
    health = recorder.on("/health")[-1]
    front = health["pipelines"]["front"]
    assert front["frames"] == n and front["inferred"] == n and front["source_state"] == "ended"
    assert set(front["latency_ms"]["inference"]) == {"p50", "p95", "p99"}
    assert health["outbox"]["dropped"] == 0 and health["mqtt"]["connected"] is True
    assert health["system"]["rss_bytes"] > 0 and health["models"]["person"]["backend"] in ("onnx", "tflite")
    status = recorder.on("/status")
    assert status[0]["state"] == "online" and status[-1] == status[-1] | {
        "state": "offline",
        "reason": "shutdown",
    }


def test_broker_killed_mid_run_and_restarted_loses_nothing(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    n = 120
    config = paced_config(tmp_path, broker.port, n, fps=20)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    assert wait_for(lambda: len(recorder.on(PRED)) >= 15, 60), daemon.log()[-3000:]
    broker.kill()
    # an outage the daemon noticed, with results queued meanwhile
    db = tmp_path / "state" / "outbox.db"
    assert wait_for(lambda: "disconnected" in daemon.log() and len(pending_rows(db, PRED)) >= 10, 30)
    broker.start()
    assert wait_for(lambda: len(unique(recorder.on(PRED))) >= n, 90), daemon.log()[-3000:]
    assert daemon.terminate() == 0
    preds = unique(recorder.on(PRED))
    assert len(preds) == n
    assert [p["seq"] for p in preds] == list(range(1, n + 1))  # in seq order, none missing
    assert "disconnected" in daemon.log()


def test_daemon_killed_while_offline_keeps_what_it_committed(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    n = 60
    config = paced_config(tmp_path, broker.port, n, fps=20)
    daemon = DaemonProcess(config, tmp_path / "daemon-1.log")
    assert wait_for(lambda: len(recorder.on(PRED)) >= 10, 60), daemon.log()[-3000:]
    broker.kill()
    db = tmp_path / "state" / "outbox.db"
    # results go on into the outbox while the broker is away (more than were in flight)
    assert wait_for(lambda: "disconnected" in daemon.log() and len(pending_rows(db, PRED)) >= 10, 30)
    daemon.kill()
    received_before = unique(recorder.on(PRED))
    kept = pending_rows(tmp_path / "state" / "outbox.db", PRED)
    assert kept, "the outage left nothing in the outbox"
    committed = {p["id"]: p for p in received_before + kept}
    last_seq = max(p["seq"] for p in committed.values())
    assert sorted(p["seq"] for p in committed.values()) == list(range(1, last_seq + 1))

    broker.start()
    daemon = DaemonProcess(config, tmp_path / "daemon-2.log")
    total = len(committed) + n  # the restarted daemon reads the video again from the start
    assert wait_for(lambda: len(unique(recorder.on(PRED))) >= total, 90), daemon.log()[-3000:]
    time.sleep(0.5)
    assert daemon.terminate() == 0
    after = unique(recorder.on(PRED))
    assert len(after) == total  # nothing invented
    assert set(committed) <= {p["id"] for p in after}  # nothing committed was lost
    seqs = [p["seq"] for p in after]
    assert sorted(seqs) == list(range(1, total + 1))  # seq continued without reuse
    new_run = [p for p in after if p["id"] not in committed]
    assert min(p["seq"] for p in new_run) == last_seq + 1


def outbox_meta(db: Path, key: str) -> int:
    """A counter in the outbox's meta table (0 before the file or the key exists)."""
    try:  # read-only: never create the file under the daemon
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError:  # not there yet, or its schema not yet written
        return 0
    return int(row[0]) if row else 0


@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_outage_longer_than_the_outbox_cap_drops_per_policy(
    tmp_path: Path, broker: Broker, recorder: Recorder, policy: str
) -> None:
    n, cap = 30, 10
    broker.kill()  # the recorder's session survives (broker persistence)
    config = make_config(
        tmp_path,
        broker.port,
        make_video(tmp_path / "v.mp4", n),
        health={"interval_s": 3600},
        outbox={"max_messages": cap, "drop_policy": policy},
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    # every frame inferred (the source's end comes sooner on a slow CPU): each one was stored or
    # made a drop, and the last n + 1 - cap of them were drops
    db = tmp_path / "state" / "outbox.db"
    assert wait_for(lambda: outbox_meta(db, "dropped") == n + 1 - cap, 60), daemon.log()[-3000:]
    broker.start()
    kept = cap if policy == "oldest" else cap - 1
    assert wait_for(lambda: len(unique(recorder.on(PRED))) >= kept, 30), daemon.log()[-3000:]
    # and acknowledged: the stop's final health message must find room in the capped store
    assert wait_for(lambda: pending_rows(db, "") == [], 30), daemon.log()[-3000:]
    assert daemon.terminate() == 0
    # the final health message, sent while stopping, reaches the recorder a moment later
    dropped = n + 1 - cap
    assert wait_for(
        lambda: any(h["outbox"]["dropped"] == dropped for h in unique(recorder.on("/health"))), 10
    ), daemon.log()[-3000:]
    preds = unique(recorder.on(PRED))
    health = unique(recorder.on("/health"))
    seqs = [p["seq"] for p in preds]
    # at the start one health message and then n predictions met a store of `cap` messages
    if policy == "oldest":
        assert seqs == list(range(n - cap + 1, n + 1))
    else:
        assert seqs == list(range(1, cap))  # the health message took the first place
    final = health[-1]
    gaps = (n - len(preds)) + (final["seq"] - len(health))
    assert final["outbox"]["dropped"] == gaps == dropped


def test_status_is_retained_online_and_the_will_says_offline_after_sigkill(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    video = make_video(tmp_path / "v.mp4", 10)
    config = make_config(tmp_path, broker.port, video)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    assert wait_for(lambda: bool(recorder.on("/status")), 60), daemon.log()[-3000:]
    late = Recorder(broker.port, "edge/cam-test/status")
    assert wait_for(lambda: bool(late.messages), 5)
    _, payload, retained = late.messages[0]
    assert retained and payload["state"] == "online" and payload["pipelines"] == ["front"]
    late.close()
    daemon.kill()
    assert wait_for(lambda: recorder.on("/status")[-1]["state"] == "offline", 20)
    assert recorder.on("/status")[-1].get("reason") != "shutdown"


def _tls_broker(tmp_path: Path) -> tuple[Broker, int, Path]:
    ca, ca_key, ca_cert = make_ca(tmp_path, "test-ca")
    cert, key = make_server_cert(tmp_path, ca_key, ca_cert)
    tls_port = free_port()
    extra = f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    return Broker(tmp_path, extra=extra).start(), tls_port, ca


def test_tls_broker_with_our_ca_is_used(tmp_path: Path) -> None:
    broker, tls_port, ca = _tls_broker(tmp_path)
    recorder = Recorder(broker.port)  # plain listener of the same broker
    try:
        video = make_video(tmp_path / "v.mp4", 10)
        config = make_config(
            tmp_path, tls_port, video, mqtt={"host": "localhost", "tls": {"ca_file": str(ca)}}
        )
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        assert wait_for(lambda: len(recorder.on(PRED)) >= 10, 60), daemon.log()[-3000:]
        assert daemon.terminate() == 0
    finally:
        recorder.close()
        broker.kill()


def test_tls_broker_signed_by_another_ca_is_refused(tmp_path: Path) -> None:
    broker, tls_port, _ = _tls_broker(tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_ca, _, _ = make_ca(other_dir, "other-ca")
    recorder = Recorder(broker.port)
    try:
        video = make_video(tmp_path / "v.mp4", 10)
        config = make_config(
            tmp_path, tls_port, video, mqtt={"host": "localhost", "tls": {"ca_file": str(other_ca)}}
        )
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        db = tmp_path / "state" / "outbox.db"
        assert wait_for(lambda: len(pending_rows(db, PRED)) == 10, 60), daemon.log()[-3000:]  # all inferred
        time.sleep(3)  # a window for a wrong delivery to show (nothing to wait for when it is right)
        assert recorder.on(PRED) == [] and recorder.on("/status") == []
        assert daemon.terminate() == 0
        assert "certificate verify failed" in daemon.log().lower()
        assert len(pending_rows(tmp_path / "state" / "outbox.db", PRED)) == 10  # kept for later
    finally:
        recorder.close()
        broker.kill()


def test_unreachable_camera_does_not_stop_the_other_pipeline(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    n = 20
    video = make_video(tmp_path / "v.mp4", n)
    dead = f"rtsp://127.0.0.1:{free_port()}/stream"
    config = make_config(
        tmp_path,
        broker.port,
        video,
        pipelines=[
            {
                "name": "gate",
                "model": "person",
                "source": {
                    "type": "rtsp",
                    "url": dead,
                    "open_timeout_s": 1,
                    "read_timeout_s": 1,
                    "reconnect": {"initial_s": 0.2, "max_s": 1},
                },
            },
            {"name": "front", "model": "person", "source": {"type": "video", "path": str(video)}},
        ],
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    assert wait_for(lambda: len(recorder.on(PRED)) >= n, 60), daemon.log()[-3000:]
    assert wait_for(
        lambda: any(h["pipelines"]["gate"]["source_state"] == "reconnecting" for h in recorder.on("/health")),
        15,
    )
    assert daemon.terminate() == 0
    assert recorder.on("/predictions/gate") == []
    assert "source gate: reconnecting" in daemon.log()
