"""What anyone on the broker can send the daemon costs it bounded memory and a bounded log.

Real daemons behind a real mosquitto: an oversized message on a subscribed topic is dropped by the
broker (the daemon's CONNECT says the largest packet it takes, ``mqtt.max_packet_bytes``), a flood
of unhandled commands and a topic the broker refuses to take each cost a few log lines, not one
or five per message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.capture.sensor.mqtt_topic import MqttTopicDriver
from edge_runtime.capture.sensor.samples import LineParser
from edge_runtime.config.sections import MqttConfig
from tests.broker import Broker, Recorder, wait_for
from tests.daemon import DaemonProcess, make_config, make_video, synthetic_config
from tests.timeouts import EMULATED

CMD = "edge/cam-test/cmd"
CONNECTED = {"connected": True, "reconnects": 0, "last_error": None, "failed_connects": 0}
MB = 1024 * 1024


def _peak_rss(daemon: DaemonProcess) -> int:
    """The daemon's peak resident memory so far (VmHWM), bytes."""
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def debug_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker that logs every packet: its ``Received PUBACK from cam-test`` lines show which
    messages the daemon has taken (paho acknowledges a QoS 1 message after handing it over)."""
    b = Broker(tmp_path, extra="log_type all").start()
    yield b
    b.kill()


@pytest.fixture
def publisher(debug_broker: Broker) -> Iterator[mqtt.Client]:
    """A client that only publishes (it subscribes to nothing, so it gets nothing back)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hostile", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", debug_broker.port)
    client.loop_start()
    yield client
    client.loop_stop()
    client.disconnect()


def _acks_from_daemon(broker: Broker) -> int:
    return broker.log.read_text(errors="replace").count("Received PUBACK from cam-test")


def _unhandled_lines(daemon: DaemonProcess) -> int:
    """Lines about commands (control/: answered without a response topic, or dropped in a flood)."""
    return daemon.log().count("control: ")


def test_oversized_commands_never_reach_the_daemon_and_a_flood_costs_a_few_log_lines(
    tmp_path: Path, debug_broker: Broker, publisher: mqtt.Client
) -> None:
    """Three 50 MB publishes on the device's cmd topic are dropped by the broker (the daemon's
    peak memory does not move by anything like their size); 300 small ones are all taken by the
    daemon and logged at most 10 times (two kinds of line, each at the throttle's burst of 5)."""
    broker = debug_broker
    health = Recorder(broker.port, "edge/cam-test/health")
    daemon = DaemonProcess(synthetic_config(tmp_path, broker.port), tmp_path / "daemon.log")
    try:
        assert wait_for(lambda: bool(health.on("/health")), 60), daemon.log()[-3000:]
        # the cmd subscription is live once a small command reaches the daemon
        assert wait_for(
            lambda: bool(publisher.publish(f"{CMD}/probe", b"{}", qos=1)) and _unhandled_lines(daemon) > 0,
            20,
        ), daemon.log()[-3000:]
        before, acks = _peak_rss(daemon), _acks_from_daemon(broker)
        for _ in range(3):
            publisher.publish(f"{CMD}/big", b"x" * (50 * MB), qos=1).wait_for_publish(60)
        for i in range(300):
            publisher.publish(f"{CMD}/flood-{i}", b"{}", qos=1)
        # in order behind the big ones: once the daemon took these, it had its chance at those
        assert wait_for(lambda: _acks_from_daemon(broker) >= acks + 300, 30), "the daemon did not take them"
        grown = _peak_rss(daemon) - before
        # Under qemu-user the emulator's translation cache (it grows as new code runs) counts in the
        # process's RSS: there the bound is below one 50 MB message rather than the native 25 MB.
        limit = 45 * MB if EMULATED else 25 * MB
        assert grown < limit, f"peak RSS grew by {grown / MB:.1f} MB"
        dropped = "Dropping too large outgoing PUBLISH for cam-test"
        assert broker.log.read_text(errors="replace").count(dropped) == 3
        assert _unhandled_lines(daemon) <= 10, daemon.log()[-3000:]
        assert wait_for(lambda: any(h["mqtt"] == CONNECTED for h in health.on("/health")), 10), health.on(
            "/health"
        )
        assert daemon.terminate() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        health.close()


DENY_PREDICTIONS = """\
topic read #
topic write edge/cam-test/status
topic write edge/cam-test/health
topic write edge/cam-test/model/status
"""


def test_a_topic_the_broker_refuses_costs_a_few_log_lines_not_five_per_message(tmp_path: Path) -> None:
    """An ACL that denies the predictions topic refuses every prediction 5 times (then it is
    given up and counted in health); the publisher says so in at most 3 lines of each kind."""
    acl = tmp_path / "deny.acl"
    acl.write_text(DENY_PREDICTIONS)
    broker = Broker(tmp_path, extra=f"acl_file {acl}").start()
    health = Recorder(broker.port, "edge/cam-test/health")
    frames = 30
    config = make_config(tmp_path, broker.port, make_video(tmp_path / "v.mp4", frames))
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        assert wait_for(lambda: any(h["outbox"]["rejected"] >= frames for h in health.on("/health")), 90), (
            daemon.log()[-3000:]
        )
        log = daemon.log()
        retries, given_up = log.count("will retry"), log.count("giving it up")
        assert 1 <= retries <= 3 and 1 <= given_up <= 3, log[-3000:]
        assert daemon.terminate() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        health.close()
        broker.kill()


def test_the_sensor_driver_takes_no_packet_over_the_same_limit(
    debug_broker: Broker, publisher: mqtt.Client
) -> None:
    """A sensor pipeline's own client announces mqtt.max_packet_bytes too: a message over it is
    dropped by the broker, the samples around it arrive."""
    cfg = MqttConfig(host="127.0.0.1", port=debug_broker.port, max_packet_bytes=128 * 1024)
    stop = threading.Event()
    driver = MqttTopicDriver("plant/vib", LineParser("csv", ["a"]), cfg, "box-sensor-vib", stop)
    driver.open()
    try:
        publisher.publish("plant/vib", b"1", qos=1)
        publisher.publish("plant/vib", b"2\n" * 100_000, qos=1)  # 200 kB of well-formed samples
        publisher.publish("plant/vib", b"3", qos=1)
        got: list[float] = []

        def two_arrived() -> bool:
            got.extend(r.values[0] for r in driver.read(0.1) if r is not None)
            return len(got) >= 2

        assert wait_for(two_arrived, 10)
    finally:
        driver.close()
    assert got == [1.0, 3.0]
    assert "Dropping too large outgoing PUBLISH for box-sensor-vib" in debug_broker.log.read_text()
