"""Sources, each in its own thread: camera, gstreamer, rtsp/http, video, images, synthetic, sensor."""

from __future__ import annotations

from edge_runtime.capture.base import SourceThread
from edge_runtime.capture.files import ImagesSource, VideoFileSource
from edge_runtime.capture.live import LiveSource, camera_opener, ffmpeg_opener, gstreamer_opener
from edge_runtime.capture.sensor import make_sensor_source
from edge_runtime.capture.synthetic import SyntheticSource
from edge_runtime.config import sources as cfg
from edge_runtime.config.sections import MqttConfig

__all__ = ["SourceThread", "make_source"]


def make_source(
    name: str, source: cfg.SourceConfig, *, mqtt: MqttConfig | None = None, device: str = "edge"
) -> SourceThread:
    """The source thread for a pipeline's ``source:`` config (not started).

    ``mqtt`` (the daemon's broker) and ``device`` serve sensor sources that read an MQTT topic.
    """
    if isinstance(source, cfg.SensorSource):
        return make_sensor_source(name, source, mqtt, device)
    if isinstance(source, cfg.VideoSource):
        threads = None if source.decode_threads == "auto" else int(source.decode_threads)
        return VideoFileSource(name, source.path, source.fps, source.loop, decode_threads=threads)
    if isinstance(source, cfg.ImagesSource):
        return ImagesSource(name, source.path, source.fps, source.loop)
    if isinstance(source, cfg.SyntheticSource):
        return SyntheticSource(name, source.width, source.height, source.fps, source.frames)
    if isinstance(source, cfg.CameraSource):
        opener = camera_opener(source.device, source.width, source.height, source.fps, source.fourcc)
        describe = f"camera {source.device}"
    elif isinstance(source, cfg.GstreamerSource):
        opener, describe = gstreamer_opener(source.pipeline), "gstreamer pipeline"
    else:
        opener = ffmpeg_opener(source.url, source.open_timeout_s, source.read_timeout_s, source.transport)
        describe = _redact(source.url)
    r = source.reconnect
    return LiveSource(
        name,
        opener,
        describe,
        reconnect_initial_s=r.initial_s,
        reconnect_max_s=r.max_s,
        give_up_after=r.give_up_after,
        fps=source.fps,
    )


def _redact(url: str) -> str:
    """Hide credentials in stream URLs before they reach logs and health."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
