"""Sensor sources: exact windowing, line formats, and every driver with real parts.

IIO through a fake sysfs tree, streams through real files and FIFOs, serial through a pty pair,
MQTT through a real mosquitto. Unplugging (a removed FIFO or device folder, a closed pty) must
end in a reconnect, and no sample may be lost or counted twice across windows.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_runtime.capture import make_source
from edge_runtime.capture.sensor import SensorSource
from edge_runtime.capture.sensor.samples import LineParser, MalformedLineError, Sample
from edge_runtime.capture.sensor.source import affine
from edge_runtime.capture.sensor.windowing import Windower, expected_windows
from edge_runtime.config.loader import load_config
from edge_runtime.config.sections import MqttConfig
from edge_runtime.config.sources import SensorSource as SensorConfig
from edge_runtime.types import Window
from tests.timeouts import scaled

from ..broker import Broker, wait_for
from ..conftest import ROOT, run_cli

FAST = {"initial_s": 0.1, "max_s": 0.2}


def sensor(**overrides: Any) -> SensorConfig:
    """A sensor source config: two channels, windows of 4 every 3 samples, fast reconnects."""
    base: dict[str, Any] = {
        "type": "sensor",
        "driver": "stream",
        "channels": ["a", "b"],
        "rate_hz": 200,
        "window": 4,
        "hop": 3,
        "pace": False,
        "reconnect": FAST,
    }
    return SensorConfig.model_validate(base | overrides)


def start(cfg: SensorConfig, **kwargs: Any) -> SensorSource:
    source = make_source("s", cfg, **kwargs)
    assert isinstance(source, SensorSource)
    source.start()
    return source


def collect(source: SensorSource, count: int, timeout: float = 10.0) -> list[Window]:
    """Windows from the source's hand-off until ``count`` arrived (or the timeout, scaled)."""
    out: list[Window] = []
    deadline = time.monotonic() + scaled(timeout)
    while len(out) < count and time.monotonic() < deadline:
        item = source.handoff.get(0.05)
        if item is None:
            break
        if item is not False:
            assert isinstance(item, Window)
            out.append(item)
    return out


def first_column(windows: list[Window]) -> list[list[float]]:
    return [w.data[:, 0].tolist() for w in windows]


def lines(values: range, fmt: str = "{i},{neg}") -> str:
    return "".join(fmt.format(i=i, neg=-i) + "\n" for i in values)


# -- windowing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "window", "hop"),
    [(20, 4, 3), (20, 4, 4), (20, 4, 6), (4, 4, 1), (3, 4, 2), (1, 1, 1), (100, 10, 1), (257, 128, 64)],
)
def test_n_samples_give_exactly_floor_n_minus_window_over_hop_plus_one_windows(
    n: int, window: int, hop: int
) -> None:
    w = Windower(window, hop, 1)
    cut = [c for i in range(n) if (c := w.push((float(i),), float(i))) is not None]
    assert len(cut) == expected_windows(n, window, hop) == (0 if n < window else (n - window) // hop + 1)
    for k, c in enumerate(cut):
        assert c.index == k and c.first_sample == k * hop and c.samples == window
        assert c.data[:, 0].tolist() == [float(i) for i in range(k * hop, k * hop + window)]
        assert (c.start_ts, c.end_ts) == (k * hop, k * hop + window - 1)


def test_windows_cover_every_sample_once_per_overlap_for_random_streams() -> None:
    """Property check over many (N, window, hop): window k is exactly samples k*hop..k*hop+window-1."""
    rng = random.Random(7)
    for _ in range(300):
        window, hop, channels = rng.randint(1, 40), rng.randint(1, 60), rng.randint(1, 3)
        n = rng.randint(0, 400)
        stream = np.arange(n * channels, dtype=np.float64).reshape(n, channels)
        w = Windower(window, hop, channels)
        cut = [c for i in range(n) if (c := w.push(stream[i], i / 100)) is not None]
        assert len(cut) == expected_windows(n, window, hop)
        seen: dict[int, int] = {}
        for k, c in enumerate(cut):
            np.testing.assert_array_equal(c.data, stream[k * hop : k * hop + window].astype(np.float32))
            for s in range(c.first_sample, c.first_sample + window):
                seen[s] = seen.get(s, 0) + 1
        if cut and hop <= window:  # no gaps: every sample up to the last window's end is used
            assert set(seen) == set(range(cut[-1].first_sample + window))
        assert all(
            v == len([k for k in range(len(cut)) if k * hop <= s < k * hop + window]) for s, v in seen.items()
        )


def test_window_applies_the_per_channel_normalisation() -> None:
    cfg = sensor(
        path="/x",
        window=2,
        hop=2,
        normalize={"a": {"scale": 0.5, "offset": 1.0, "mean": 2.0, "std": 4.0}, "b": {"mean": -1.0}},
    )
    w = Windower(2, 2, 2, *affine(cfg))
    w.push((10.0, 3.0), 0.0)
    window = w.push((20.0, 5.0), 0.1)
    assert window is not None
    np.testing.assert_allclose(window.data, [[(10 * 0.5 + 1 - 2) / 4, 4.0], [(20 * 0.5 + 1 - 2) / 4, 6.0]])


# -- line formats ----------------------------------------------------------------------------


def test_csv_lines_with_optional_timestamp_header_and_blank_lines() -> None:
    p = LineParser("csv", ["a", "b"])
    assert p.parse(b"1.5, -2\n") == Sample((1.5, -2.0))
    assert p.parse(b"1700000000.25,1,2\r\n") == Sample((1.0, 2.0), 1700000000.25)
    assert p.parse(b"a,b\n") is None and p.parse(b"ts,a,b\n") is None and p.parse(b"  \n") is None
    for bad in (b"1\n", b"1,2,3,4\n", b"1,x\n", b"nan,1\n", b"inf,1\n", b"\xff\xfe,1\n", b"1;2\n"):
        with pytest.raises(MalformedLineError):
            p.parse(bad)


def test_json_objects_and_arrays() -> None:
    p = LineParser("json", ["a", "b"])
    assert p.parse(b'{"a": 1, "b": 2.5, "ts": 12.5, "extra": "x"}') == Sample((1.0, 2.5), 12.5)
    assert p.parse(b"[1, 2]") == Sample((1.0, 2.0))
    assert p.parse(b"[9, 1, 2]") == Sample((1.0, 2.0), 9.0)
    for bad in (b'{"a": 1}', b'{"a": true, "b": 1}', b'{"a": null, "b": 1}', b"[1]", b"{", b"3", b'"a"'):
        with pytest.raises(MalformedLineError):
            p.parse(bad)


def test_config_rules_for_sensor_sources() -> None:
    with pytest.raises(ValueError, match="takes topic"):
        sensor(driver="mqtt", path="/x")
    with pytest.raises(ValueError, match="takes path"):
        sensor(driver="serial", topic="t")
    with pytest.raises(ValueError, match="unknown channel"):
        sensor(path="/x", normalize={"c": {"scale": 2}})
    with pytest.raises(ValueError, match="std must be non-zero"):
        sensor(path="/x", normalize={"a": {"std": 0}})
    with pytest.raises(ValueError, match="stdin"):
        sensor(driver="serial", path="-")
    assert sensor(path="/x", hop=None).step == 4


# -- stream driver: regular files --------------------------------------------------------------


def test_regular_file_gives_every_window_then_ends_and_counts_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("a,b\n" + lines(range(10)) + "garbage\n1,2,3,4\n\n" + lines(range(10, 20)))
    source = start(sensor(path=str(path)))
    got = collect(source, 100, timeout=5)
    source.stop()
    assert first_column(got) == [[float(i) for i in range(k * 3, k * 3 + 4)] for k in range(6)]
    assert source.state == "ended" and source.stats() == {"samples": 20, "malformed": 2, "reconnects": 0}


def test_regular_file_last_line_without_newline_counts(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(lines(range(6)) + "6,-6")
    source = start(sensor(path=str(path), hop=1))
    got = collect(source, 100, timeout=5)
    assert [w.first_sample for w in got] == [0, 1, 2, 3] and source.stats()["samples"] == 7


def test_regular_file_is_paced_at_rate_hz(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(lines(range(41)))
    t0 = time.monotonic()
    source = start(sensor(path=str(path), pace=True, rate_hz=100, window=10, hop=10))
    got = collect(source, 4, timeout=5)
    elapsed = time.monotonic() - t0
    source.stop()
    assert len(got) == 4 and 0.3 <= elapsed < scaled(2.0)  # paced: at least 0.3 s
    assert 0.07 <= got[0].end_ts - got[0].start_ts <= 0.12  # 9 sample periods of 10 ms


def test_followed_file_picks_up_appended_lines_and_a_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(lines(range(4)))
    source = start(sensor(path=str(path), follow=True, window=2, hop=2))
    assert len(collect(source, 2, timeout=5)) == 2
    with path.open("a") as fh:
        fh.write(lines(range(4, 8)))
    assert [w.first_sample for w in collect(source, 2, timeout=5)] == [4, 6]
    path.unlink()
    path.write_text(lines(range(8, 10)))  # rotated: a new file under the same name
    got = collect(source, 1, timeout=5)
    source.stop()
    assert first_column(got) == [[8.0, 9.0]] and source.reconnects == 1


def test_stream_driver_refuses_a_directory(tmp_path: Path) -> None:
    source = start(sensor(path=str(tmp_path)))
    assert wait_for(lambda: source.state == "failed", 5)
    assert "not a file, FIFO or character device" in (source.error or "")


# -- stream driver: FIFOs --------------------------------------------------------------------


def test_fifo_with_a_writer_per_line_loses_nothing_then_reports_no_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "s.fifo"
    os.mkfifo(fifo)
    source = start(sensor(path=str(fifo)))

    def write() -> None:
        for i in range(30):
            with fifo.open("w") as fh:  # a new writer for every line, as `echo ... > fifo` does
                fh.write(f"{i},{-i}\n")

    threading.Thread(target=write, daemon=True).start()
    got = collect(source, expected_windows(30, 4, 3), timeout=10)
    assert first_column(got) == [[float(i) for i in range(k * 3, k * 3 + 4)] for k in range(9)]
    assert wait_for(lambda: source.state == "reconnecting", 5)
    assert "no writer" in (source.error or "")
    source.stop()


def test_fifo_removed_and_recreated_reconnects_and_keeps_windowing(tmp_path: Path) -> None:
    fifo = tmp_path / "s.fifo"
    os.mkfifo(fifo)
    source = start(sensor(path=str(fifo), window=2, hop=2))
    with fifo.open("w") as fh:
        fh.write(lines(range(4)))
    assert len(collect(source, 2)) == 2
    fifo.unlink()
    assert wait_for(lambda: source.state == "reconnecting" and "removed" in (source.error or ""), 5)
    time.sleep(0.3)
    os.mkfifo(fifo)
    with fifo.open("w") as fh:  # blocks until the source has reopened the new FIFO
        fh.write(lines(range(4, 8)))
    got = collect(source, 2)
    source.stop()
    assert [w.first_sample for w in got] == [4, 6] and first_column(got) == [[4.0, 5.0], [6.0, 7.0]]
    assert source.reconnects == 1


def test_missing_path_waits_with_backoff_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.csv"
    source = start(sensor(path=str(path), window=2, hop=2))
    assert wait_for(lambda: source.state == "reconnecting", 5)
    path.write_text(lines(range(2)))
    got = collect(source, 1)
    source.stop()
    assert first_column(got) == [[0.0, 1.0]]


# -- IIO -------------------------------------------------------------------------------------


def fake_iio(folder: Path, raw: dict[str, int]) -> None:
    """A sysfs-like IIO device folder: per-channel raw values, a shared scale, one offset."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "name").write_text("fake-accel\n")
    (folder / "in_accel_scale").write_text("0.5\n")
    (folder / "in_accel_z_offset").write_text("-10\n")
    for channel, value in raw.items():
        (folder / f"in_{channel}_raw").write_text(f"{value}\n")


def test_iio_polls_raw_values_with_scale_and_offset_and_reconnects(tmp_path: Path) -> None:
    device = tmp_path / "iio:device0"
    fake_iio(device, {"accel_x": 2, "accel_z": 30})
    (device / "in_accel_x_scale").write_text("0.25\n")  # a channel's own scale wins
    cfg = sensor(
        driver="iio", path=str(device), channels=["accel_x", "accel_z"], rate_hz=100, window=5, hop=5
    )
    source = start(cfg)
    got = collect(source, 2, timeout=5)
    assert len(got) == 2 and got[0].data.tolist() == [[0.5, 10.0]] * 5
    assert 0.03 <= got[0].end_ts - got[0].start_ts <= 0.08  # 4 polls 10 ms apart
    for f in device.iterdir():  # unplugged: the kernel removes the device folder
        f.unlink()
    device.rmdir()
    assert wait_for(lambda: source.state == "reconnecting", 5)
    fake_iio(device, {"accel_x": 4, "accel_z": 10})
    assert wait_for(lambda: source.state == "streaming", 5)
    later = [w for w in collect(source, 6, timeout=5) if w.data[0, 0] == 2.0]  # scale 0.5 after replug
    source.stop()
    assert later and later[-1].data.tolist() == [[2.0, 0.0]] * 5 and source.reconnects == 1


def test_iio_missing_channel_file_is_a_clear_reconnect_reason(tmp_path: Path) -> None:
    device = tmp_path / "iio:device1"
    fake_iio(device, {"accel_x": 1})
    source = start(sensor(driver="iio", path=str(device), channels=["accel_x", "accel_y"], rate_hz=50))
    assert wait_for(lambda: source.state == "reconnecting", 5)
    source.stop()
    assert "no in_accel_y_raw" in (source.error or "")


# -- serial ----------------------------------------------------------------------------------


class Pty:
    """A pty pair whose slave is reachable through a stable symlink (as udev's /dev/serial/by-id)."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master, slave = os.openpty()
        name = os.ttyname(slave)
        os.close(slave)  # only the source holds the slave side open
        if link.is_symlink():
            link.unlink()
        link.symlink_to(name)

    def write(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        os.close(self.master)


def test_serial_lines_through_a_pty_and_a_replug(tmp_path: Path) -> None:
    pytest.importorskip("serial")
    link = tmp_path / "ttyACM-sensor"
    pty = Pty(link)
    source = start(sensor(driver="serial", path=str(link), baudrate=9600, window=2, hop=2))
    assert wait_for(lambda: source.state == "streaming", 5)
    pty.write("0,0\r\n1,-1\r\n2,")  # CRLF line ends; the last line arrives in two pieces
    time.sleep(0.3)
    pty.write("-2\r\n3,-3\r\nbad line\r\n")
    got = collect(source, 2)
    assert first_column(got) == [[0.0, 1.0], [2.0, 3.0]]
    assert wait_for(lambda: source.stats()["malformed"] == 1, 2)
    pty.close()  # unplugged
    assert wait_for(lambda: source.state == "reconnecting", 5)
    pty = Pty(link)  # plugged in again (a new pty behind the same link)
    assert wait_for(lambda: source.state == "streaming", 5)
    pty.write("4,-4\n5,-5\n")
    got = collect(source, 1)
    source.stop()
    pty.close()
    assert first_column(got) == [[4.0, 5.0]] and source.reconnects == 1


# -- MQTT ------------------------------------------------------------------------------------


def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sensor-device", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_mqtt_topic_samples_from_another_device(broker: Broker) -> None:
    cfg = sensor(driver="mqtt", topic="plant/pump1/vibration", format="json", window=3, hop=2)
    source = start(cfg, mqtt=MqttConfig(host="127.0.0.1", port=broker.port, keepalive=5), device="box")
    assert wait_for(lambda: source.state == "streaming", 10)
    client = publisher(broker.port)
    for i in range(5):  # one sample per message
        client.publish("plant/pump1/vibration", f'{{"a": {i}, "b": {-i}, "ts": {100 + i}}}', qos=1)
    # several samples in one message, and a malformed one
    client.publish("plant/pump1/vibration", '{"a": 5, "b": -5}\n{"a": "x"}\n{"a": 6, "b": -6}', qos=1)
    got = collect(source, expected_windows(7, 3, 2))
    source.stop()
    client.loop_stop()
    client.disconnect()
    assert first_column(got) == [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 6.0]]
    assert (got[0].start_ts, got[0].end_ts) == (100.0, 102.0)
    assert source.stats()["malformed"] == 1


def test_mqtt_source_reconnects_when_the_broker_restarts(broker: Broker) -> None:
    cfg = sensor(driver="mqtt", topic="t/s", window=2, hop=2)
    source = start(cfg, mqtt=MqttConfig(host="127.0.0.1", port=broker.port, keepalive=5), device="box")
    assert wait_for(lambda: source.state == "streaming", 10)
    broker.kill()
    assert wait_for(lambda: source.state == "reconnecting", 10)
    broker.start()
    assert wait_for(lambda: source.state == "streaming", 15)
    client = publisher(broker.port)
    client.publish("t/s", "1,2\n3,4", qos=1)
    got = collect(source, 1)
    source.stop()
    client.loop_stop()
    client.disconnect()
    assert got and got[0].data.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_sensor_demo_config_validates_and_stdin_path_stays_stdin(tmp_path: Path) -> None:
    assert run_cli("validate", ROOT / "configs" / "sensor-demo.yaml").code == 0
    config = tmp_path / "c.yaml"
    config.write_text(
        "models: {m: {path: " + str(ROOT / "models" / "vibration_anomaly") + "}}\n"
        "pipelines:\n- name: p\n  model: m\n  source: {type: sensor, driver: stream, path: '-',"
        " channels: [ax, ay, az], rate_hz: 1000, window: 256, hop: 128}\n"
    )
    source = load_config(config).pipelines[0].source
    assert isinstance(source, SensorConfig) and source.path == "-"


def test_an_overlong_line_is_one_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(lines(range(2)) + "9" * 200_000 + "\n" + lines(range(2, 4)))
    source = start(sensor(path=str(path), window=2, hop=2))
    got = collect(source, 10, timeout=5)
    assert first_column(got) == [[0.0, 1.0], [2.0, 3.0]]
    assert source.stats() == {"samples": 4, "malformed": 1, "reconnects": 0}


STDIN_READER = """
import sys, time
from edge_runtime.capture import make_source
from edge_runtime.config.sources import SensorSource
cfg = SensorSource.model_validate(dict(type="sensor", driver="stream", path="-", format="json",
    channels=["a", "b"], rate_hz=100, window=3, hop=2))
source = make_source("stdin", cfg)
source.start()
starts = []
while (item := source.handoff.get(5)) is not None:
    if item is not False:
        starts.append(item.first_sample)
print(starts, source.state, source.stats()["samples"], source.stats()["malformed"])
"""


def test_stdin_gives_every_window_and_ends_at_end_of_file() -> None:
    text = "".join(f'{{"a": {i}, "b": {-i}}}\n' for i in range(9)) + "[1]\n" + '{"a": 9, "b": -9}'
    proc = subprocess.run(
        [sys.executable, "-c", STDIN_READER],
        input=text,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=True,
    )
    assert proc.stdout.split("\n")[0] == "[0, 2, 4, 6] ended 10 1"
