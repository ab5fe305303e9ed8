"""Commands over MQTT end to end: a real mosquitto, a real daemon, the real ``fleet cmd`` CLI.

One daemon with two endless synthetic pipelines (``front``, ``back``) serves the whole module.
Requests go out as MQTT v5 requests (response topic + correlation data); every test checks the
answer and what a subscriber sees on the device's topics.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.commands.broker import parse_host_port
from edge_runtime.fleet import cmdsend
from edge_runtime.mqttclient import Broker as Endpoint
from edge_runtime.update.manifest import load_private_key
from tests.broker import Broker, Recorder, wait_for
from tests.daemon import DaemonProcess, cli, make_config

pytestmark = pytest.mark.slow

DEVICE = "cam-test"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Keys, a broker, a subscriber and a running daemon, shared by the module's tests."""
    tmp = tmp_path_factory.mktemp("control")
    assert cli("keys", "generate", "--out", tmp / "keys").returncode == 0
    assert cli("keys", "generate", "--out", tmp / "foreign").returncode == 0
    broker = Broker(tmp).start()
    source = {"type": "synthetic", "width": 160, "height": 120, "fps": 5}
    config = make_config(
        tmp,
        broker.port,
        tmp / "unused.mp4",
        pipelines=[
            {"name": "front", "model": "person", "source": source},
            {"name": "back", "model": "person", "source": source},
        ],
        updates={"store": str(tmp / "state" / "models"), "public_keys": [str(tmp / "keys" / "signing.pub")]},
        control={"state_dir": str(tmp / "state" / "control")},
    )
    recorder = Recorder(broker.port)
    daemon = DaemonProcess(config, tmp / "daemon.log")
    try:
        assert wait_for(lambda: len(recorder.on("/predictions/back")) >= 3, 60), daemon.log()
        yield {"tmp": tmp, "broker": broker, "recorder": recorder, "daemon": daemon}
    finally:
        daemon.terminate()
        recorder.close()
        broker.kill()


def ask(site: dict[str, Any], name: str, args: dict[str, str] | None = None, key: str | None = None) -> Any:
    """One request in-process (as ``fleet cmd`` sends it); the device's answer."""
    signing = load_private_key(site["tmp"] / key / "signing.key") if key else None
    payload = cmdsend.request_payload(DEVICE, name, args or {}, signing)
    return send_raw(site, name, payload)


def send_raw(site: dict[str, Any], name: str, payload: bytes) -> Any:
    """``payload`` as a request on ``P/D/cmd/NAME``; the answer (None: none within 20 s)."""
    endpoint = Endpoint("127.0.0.1", site["broker"].port)
    return cmdsend.send(endpoint, prefix="edge", device=DEVICE, name=name, payload=payload, wait_s=20)


def fleet_cmd(site: dict[str, Any], *args: str | Path) -> Any:
    """The real CLI in a child process."""
    return cli("fleet", "cmd", DEVICE, *args, "--broker", f"127.0.0.1:{site['broker'].port}", "--wait", "20")


def test_ping_answers_through_the_cli(site: dict[str, Any]) -> None:
    done = fleet_cmd(site, "ping")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] is True and answer["result"]["pong"] is True
    assert answer["result"]["device"] == DEVICE


def test_unknown_commands_and_bad_arguments_get_an_error_answer(site: dict[str, Any]) -> None:
    done = fleet_cmd(site, "selfdestruct")
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and "unknown command 'selfdestruct'" in answer["error"]
    bad = ask(site, "snapshot", {"pipeline": "nope"})
    assert bad["ok"] is False and "no pipeline 'nope' runs" in bad["error"] and "front" in bad["error"]
    extra = ask(site, "ping", {"color": "red"})
    assert extra == {"ok": False, "error": "unexpected argument(s): color"}
    assert fleet_cmd(site, "ping", "novalue").returncode == 2  # not key=value: refused by the CLI


def test_unsigned_or_foreign_pause_is_refused_and_changes_nothing(site: dict[str, Any]) -> None:
    rec = site["recorder"]
    done = fleet_cmd(site, "pause", "pipeline=front")
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and answer["refused"] is True and "must be signed" in answer["error"]
    foreign = ask(site, "pause", {"pipeline": "front"}, key="foreign")
    assert foreign["ok"] is False and "does not verify" in foreign["error"]
    before = len(rec.on("/predictions/front"))
    assert wait_for(lambda: len(rec.on("/predictions/front")) >= before + 3, 30)


def test_signed_pause_stops_one_pipeline_and_resume_restarts_it(site: dict[str, Any]) -> None:
    rec = site["recorder"]
    key = site["tmp"] / "keys" / "signing.key"
    done = fleet_cmd(site, "pause", "pipeline=front", "--key", key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["result"] == {"pipeline": "front", "paused": True}
    front, back = (lambda: len(rec.on("/predictions/front"))), (lambda: len(rec.on("/predictions/back")))
    settle = back()
    assert wait_for(lambda: back() >= settle + 3, 30)  # frames in flight at the pause are out
    paused_at, mark = front(), back()
    assert wait_for(lambda: back() >= mark + 8, 30)  # the other pipeline goes on ...
    assert front() == paused_at  # ... while this one publishes nothing
    health = ask(site, "health")
    assert health["ok"] is True and health["result"]["control"]["paused"] == ["front"]
    resumed = fleet_cmd(site, "resume", "pipeline=front", "--key", key)
    assert resumed.returncode == 0, resumed.stdout
    assert wait_for(lambda: front() >= paused_at + 3, 30)


def test_a_signed_command_is_accepted_once(site: dict[str, Any]) -> None:
    signing = load_private_key(site["tmp"] / "keys" / "signing.key")
    payload = cmdsend.request_payload(DEVICE, "resume", {"pipeline": "back"}, signing)
    assert send_raw(site, "resume", payload)["ok"] is True
    again = send_raw(site, "resume", payload)
    assert again["ok"] is False and "replayed" in again["error"]
    elsewhere = send_raw(site, "pause", payload)  # signed for resume, sent as pause
    assert elsewhere["ok"] is False and "signed for command 'resume'" in elsewhere["error"]


def test_snapshot_is_a_decodable_jpeg_of_the_right_size(site: dict[str, Any]) -> None:
    answer = ask(site, "snapshot", {"pipeline": "front"})
    assert answer["ok"] is True, answer
    result = answer["result"]
    image = cv2.imdecode(np.frombuffer(base64.b64decode(result["jpeg"]), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (120, 160, 3)
    assert (result["width"], result["height"]) == (160, 120)
    small = ask(site, "snapshot", {"pipeline": "back", "max_height": "60"})["result"]
    image = cv2.imdecode(np.frombuffer(base64.b64decode(small["jpeg"]), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (60, 80, 3)
    assert ask(site, "snapshot", {"pipeline": "back", "max_height": "100000"})["ok"] is False

    # from the first request on the pipeline's results are kept: later snapshots are annotated
    # by the renderer of integrations/, whose time stamp sits on a black band over the bottom
    # rows; the synthetic pattern is red there (its red channel rises with the row)
    def dark_band(img: np.ndarray) -> float:
        return float((img[54:58, 2:40, 2] < 60).mean())

    assert dark_band(image) < 0.1

    def annotated() -> bool:
        again = ask(site, "snapshot", {"pipeline": "back", "max_height": "60"}).get("result")
        if not again:  # a request over the rate limit
            return False
        later = cv2.imdecode(np.frombuffer(base64.b64decode(again["jpeg"]), np.uint8), cv2.IMREAD_COLOR)
        assert later.shape == (60, 80, 3)
        return dark_band(later) > 0.5

    assert wait_for(annotated, 20, interval=1.0)  # within the request rate limit


def test_health_and_rebirth_publish_now(site: dict[str, Any]) -> None:
    rec = site["recorder"]
    births = len([p for p in rec.on(f"{DEVICE}/status") if p.get("state") == "online"])
    answer = ask(site, "rebirth")
    assert answer["ok"] is True and f"edge/{DEVICE}/status" in answer["result"]["republished"]
    assert wait_for(
        lambda: len([p for p in rec.on(f"{DEVICE}/status") if p.get("state") == "online"]) > births, 10
    )
    health = ask(site, "health")
    assert health["ok"] is True and health["result"]["device"] == DEVICE
    assert set(health["result"]["pipelines"]) >= {"front", "back"}


def test_a_flood_of_requests_costs_no_results(site: dict[str, Any]) -> None:
    """2,000 requests at once: most are dropped (counted), predictions go on, ping still answers."""
    rec = site["recorder"]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood", protocol=mqtt.MQTTv5)
    host, port = parse_host_port(f"127.0.0.1:{site['broker'].port}")
    client.connect(host, port)
    client.loop_start()
    before = len(rec.on("/predictions/front"))
    for i in range(2000):
        client.publish(f"edge/{DEVICE}/cmd/ping", json.dumps({"args": {"n": str(i)}}), qos=0)
    client.loop_stop()
    client.disconnect()
    assert wait_for(lambda: len(rec.on("/predictions/front")) >= before + 10, 60)
    assert ask(site, "ping")["ok"] is True
    counted = ask(site, "health")["result"]["control"]
    assert counted["received"] > counted["dropped"] > 0, counted
    assert "control: a command dropped" in site["daemon"].log()


def test_a_signed_reload_rereads_the_config_file_as_sighup_does(site: dict[str, Any]) -> None:
    rec = site["recorder"]
    sessions = {s.get("session") for s in rec.on(f"{DEVICE}/status") if s.get("state") == "online"}
    answer = ask(site, "reload", key="keys")
    assert answer == {"ok": True, "result": {"reloading": True}}
    assert wait_for(
        lambda: any(
            s.get("state") == "online" and s.get("session") not in sessions
            for s in rec.on(f"{DEVICE}/status")
        ),
        60,
    ), site["daemon"].log()[-3000:]
    assert wait_for(lambda: "reload: running" in site["daemon"].log(), 30)  # logged after the birth
    assert ask(site, "ping")["ok"] is True  # the new daemon answers too
