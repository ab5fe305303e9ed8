"""Sensor sources: numeric samples from IIO, a stream (file, FIFO, stdin), a serial port or MQTT,
cut into windows for a window model."""

from __future__ import annotations

import threading

from edge_runtime.capture.sensor.drivers import Driver, StreamDriver
from edge_runtime.capture.sensor.iio import IioDriver
from edge_runtime.capture.sensor.samples import LineParser
from edge_runtime.capture.sensor.source import SensorSource, affine
from edge_runtime.config.sections import MqttConfig
from edge_runtime.config.sources import SensorSource as SensorConfig

__all__ = ["SensorSource", "make_sensor_source"]


def _driver(
    name: str, cfg: SensorConfig, stop: threading.Event, mqtt: MqttConfig | None, device: str
) -> Driver:
    parser = LineParser(cfg.format, cfg.channels)
    if cfg.driver == "mqtt":
        from edge_runtime.capture.sensor.mqtt_topic import MqttTopicDriver

        assert cfg.topic is not None  # the config's validator guarantees it
        return MqttTopicDriver(cfg.topic, parser, mqtt or MqttConfig(), f"{device}-sensor-{name}", stop)
    assert cfg.path is not None
    if cfg.driver == "iio":
        return IioDriver(cfg.path, cfg.channels, cfg.rate_hz, stop)
    if cfg.driver == "serial":
        from edge_runtime.capture.sensor.serial_port import SerialDriver

        return SerialDriver(cfg.path, cfg.baudrate, parser)
    return StreamDriver(
        cfg.path,
        parser,
        stop,
        rate_hz=cfg.rate_hz,
        pace=cfg.pace,
        loop=cfg.loop,
        follow=cfg.follow,
    )


def make_sensor_source(
    name: str, cfg: SensorConfig, mqtt: MqttConfig | None = None, device: str = "edge"
) -> SensorSource:
    """The source thread for a ``type: sensor`` config (not started).

    ``mqtt`` is the daemon's broker config, used by ``driver: mqtt``; ``device`` names its client.
    """
    gain, bias = affine(cfg)
    return SensorSource(
        name,
        lambda stop: _driver(name, cfg, stop, mqtt, device),
        channels=len(cfg.channels),
        window=cfg.window,
        hop=cfg.step,
        rate_hz=cfg.rate_hz,
        reconnect=cfg.reconnect,
        gain=gain,
        bias=bias,
    )
