"""Home Assistant discovery: payloads against the documented schema (Home Assistant itself needs a
newer Python than this project supports), then a real daemon and a real broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import publish

from edge_runtime.integrations import homeassistant as ha
from edge_runtime.model.runner import InferenceResult
from edge_runtime.model.window import WindowResult
from edge_runtime.types import BBox, Classification, Detection

from ..broker import Broker, Recorder, wait_for
from ..daemon import DaemonProcess, make_config, make_video

# The abbreviations of Home Assistant's MQTT discovery documentation (the ones a payload may use
# here), with the keys each level requires for device-based discovery.
TOP = {"dev", "o", "cmps", "avty", "avty_mode", "qos", "stat_t"}
DEVICE = {"ids", "name", "mf", "mdl", "sw", "hw", "sa", "cu", "cns", "via_device"}
ORIGIN = {"name", "sw", "url"}
AVAILABILITY = {"t", "val_tpl", "pl_avail", "pl_not_avail"}
COMPONENT = {
    "p", "uniq_id", "name", "stat_t", "val_tpl", "dev_cla", "stat_cla", "unit_of_meas",
    "ent_cat", "ic", "pl_on", "pl_off", "exp_aft", "frc_upd", "obj_id", "en",
}  # fmt: skip
PLATFORMS = {"sensor", "binary_sensor"}
SENSOR_CLASSES = {None, "duration"}
BINARY_CLASSES = {"occupancy", "problem"}


def check_schema(body: dict[str, Any], status_topic: str) -> None:
    """Every key is a documented abbreviation, required keys are there, unique ids are unique."""
    assert set(body) <= TOP and {"dev", "o", "cmps"} <= set(body)
    assert set(body["dev"]) <= DEVICE and body["dev"]["ids"] and body["dev"]["name"]
    assert set(body["o"]) <= ORIGIN and body["o"]["name"]
    for entry in body["avty"]:
        assert set(entry) <= AVAILABILITY and entry["t"] == status_topic
    ids = [c["uniq_id"] for c in body["cmps"].values()]
    assert len(ids) == len(set(ids)) and list(body["cmps"]) == ids
    for component in body["cmps"].values():
        assert set(component) <= COMPONENT, set(component) - COMPONENT
        assert component["p"] in PLATFORMS and component["stat_t"] and component["val_tpl"].startswith("{{ ")
        if component["p"] == "binary_sensor":
            assert component["dev_cla"] in BINARY_CLASSES and {component["pl_on"], component["pl_off"]} == {
                "ON",
                "OFF",
            }
        else:
            assert component.get("dev_cla") in SENSOR_CLASSES


def test_discovery_has_the_entities_of_each_kind_of_pipeline() -> None:
    pipelines = [
        ha.PipelineInfo("front door", "detection", ("person", "car")),
        ha.PipelineInfo("kitchen", "classification"),
        ha.PipelineInfo("pump", "anomaly"),
    ]
    body = ha.discovery(
        node_id="cam-01", device="cam-01", version="0.1.0", base="edge/cam-01",
        status_topic="edge/cam-01/status", pipelines=pipelines, models=["person", "vib"],
        origin_url="https://example.org/edge-runtime",
    )  # fmt: skip
    check_schema(body, "edge/cam-01/status")
    assert body["o"]["url"] == "https://example.org/edge-runtime"
    cmps = body["cmps"]
    assert cmps["cam_01_front_door_person_occupancy"]["dev_cla"] == "occupancy"
    assert cmps["cam_01_front_door_car_count"]["stat_t"] == "edge/cam-01/ha/front door"
    assert cmps["cam_01_kitchen_top"]["val_tpl"] == "{{ value_json.top }}"
    assert {
        "cam_01_pump_score",
        "cam_01_pump_flag",
        "cam_01_outbox_backlog",
        "cam_01_model_vib_version",
    } <= set(cmps)
    assert ha.discovery_topic("homeassistant", "cam-01") == "homeassistant/device/cam_01/config"
    assert ha.removal({"cam_01_kitchen_top": "sensor"}) == {"cmps": {"cam_01_kitchen_top": {"p": "sensor"}}}


def test_states_follow_the_result() -> None:
    det = InferenceResult("detection", detections=(Detection(0, "person", 0.9, BBox(0, 0, 1, 1)),) * 2)
    assert ha.pipeline_state(det, ["person", "car"], 4.9, 12.5)["counts"] == {"person": 2, "car": 0}
    cls = InferenceResult("classification", classes=(Classification(3, "espresso", 0.9),))
    assert ha.pipeline_state(cls, [], None, None)["top"] == "espresso"
    anomaly = WindowResult("anomaly", score=0.8, threshold=0.5)
    assert ha.pipeline_state(anomaly, [], 1.0, 1.0).items() >= {"score": 0.8, "flag": True}.items()
    assert ha.pipeline_state(None, ["person"], None, None)["counts"] == {"person": 0}


def _config(tmp: Path, port: int, name: str, enabled: bool) -> Path:
    video = make_video(tmp / "v.mp4", 30)
    source = {"type": "video", "path": str(video), "fps": 5, "loop": True}
    return make_config(
        tmp,
        port,
        video,
        pipelines=[{"name": name, "model": "person", "source": source}],
        home_assistant={"enabled": enabled, "state_interval_s": 0.5},
    )


TOPIC = "homeassistant/device/cam_test/config"


def configs(recorder: Recorder) -> list[Any]:
    return recorder.on(TOPIC)


@pytest.mark.slow
def test_daemon_publishes_discovery_answers_only_online_and_removes_what_it_published(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    daemon = DaemonProcess(_config(tmp_path, broker.port, "front", True), tmp_path / "d1.log")
    try:
        assert wait_for(lambda: len(configs(recorder)) >= 1, 90), daemon.log()[-3000:]
        body = configs(recorder)[0]
        check_schema(body, "edge/cam-test/status")
        assert body["cmps"]["cam_test_front_person_occupancy"]["stat_t"] == "edge/cam-test/ha/front"
        late = Recorder(broker.port, TOPIC)  # a subscriber that comes later gets it: retained
        try:
            assert wait_for(lambda: [(p, r) for _, p, r in late.messages] == [(body, True)], 30)
        finally:
            late.close()
        state = "edge/cam-test/ha/front"
        assert wait_for(lambda: any(s["counts"]["person"] > 0 for s in recorder.on(state)), 60)

        before = len(configs(recorder))
        for junk in (b"ONLINE", b"online ", b"offline", b"x" * 10_000):
            publish.single("homeassistant/status", junk, hostname="127.0.0.1", port=broker.port)
        publish.single("homeassistant/status", b"online", hostname="127.0.0.1", port=broker.port)
        assert wait_for(lambda: len(configs(recorder)) == before + 1, 30)
        states = len(recorder.on(state))
        assert wait_for(lambda: len(recorder.on(state)) > states + 2, 30)  # the thread went on
        assert len(configs(recorder)) == before + 1  # junk is not a birth message
    finally:
        assert daemon.terminate() == 0

    # the pipeline renamed: the old one's entities are removed (reduced to their platform)
    daemon = DaemonProcess(_config(tmp_path, broker.port, "back", True), tmp_path / "d2.log")
    try:
        assert wait_for(lambda: any("cam_test_back_fps" in c.get("cmps", {}) for c in configs(recorder)), 90)
        latest = configs(recorder)[-1]["cmps"]
        assert latest["cam_test_front_person_occupancy"] == {"p": "binary_sensor"}
        assert latest["cam_test_front_fps"] == {"p": "sensor"}
    finally:
        assert daemon.terminate() == 0

    # disabled: the device is removed (an empty retained config)
    daemon = DaemonProcess(_config(tmp_path, broker.port, "back", False), tmp_path / "d3.log")
    try:
        assert wait_for(lambda: configs(recorder)[-1] == b"", 90), daemon.log()[-3000:]
    finally:
        assert daemon.terminate() == 0
    assert not (tmp_path / "state" / "home-assistant.json").exists()


class _RefusingDaemon:
    """A daemon whose outbox refuses the first ``refusals`` messages (a full disk), then stores."""

    def __init__(self, refusals: int) -> None:
        from edge_runtime.config.sections import Config

        self.cfg = Config.model_validate(
            {
                "device": {"id": "cam-01"},
                "models": {"m": {"path": "/x.onnx"}},
                "pipelines": [{"name": "front", "model": "m", "source": {"type": "synthetic"}}],
                "home_assistant": {"enabled": True},
            }
        )
        self.topics = type("T", (), {"base": "edge/cam-01", "status": "edge/cam-01/status"})()
        self.pipelines: list[Any] = []
        self.failed_pipelines: dict[str, str] = {}
        self.outbox = type("O", (), {"pending": 3})()
        self.refusals, self.stored = refusals, {}  # type: ignore[var-annotated]

    def status(self) -> dict[str, Any]:
        return {"models": {"m": {"name": "m", "version": "2"}}}

    def put_retained(self, topic: str, payload: bytes) -> None:
        from edge_runtime.errors import OutboxUnavailableError

        if self.refusals > 0:
            self.refusals -= 1
            raise OutboxUnavailableError("disk full")
        self.stored[topic] = payload


def test_discovery_refused_by_a_full_outbox_is_published_on_a_later_turn(tmp_path: Path) -> None:
    from edge_runtime.errors import OutboxUnavailableError
    from edge_runtime.integrations.hastate import HomeAssistant

    daemon = _RefusingDaemon(refusals=1)
    hass = HomeAssistant(daemon.cfg.home_assistant, daemon, {}, "0.1.0", record=tmp_path / "ha.json")  # type: ignore[arg-type]
    hass._due = True  # as start() leaves it
    with pytest.raises(OutboxUnavailableError):
        hass.tick()
    hass.tick()
    body = json.loads(daemon.stored["homeassistant/device/cam_01/config"])
    assert body["dev"]["ids"] == ["edge_runtime_cam_01"]
    assert json.loads(daemon.stored["edge/cam-01/ha/device"]) == {"models": {"m": "2"}, "outbox_backlog": 3}
    assert json.loads((tmp_path / "ha.json").read_text())["topic"] == "homeassistant/device/cam_01/config"
