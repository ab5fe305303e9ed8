"""``pipelines[].source``: one model per source type, selected by ``type:``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_runtime.config.yamltree import shorten


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Reconnect(_Source):
    """Exponential backoff with jitter for live sources."""

    initial_s: float = Field(0.5, gt=0, description="first retry delay")
    max_s: float = Field(30.0, gt=0, description="longest retry delay")
    give_up_after: int | None = Field(None, ge=1, description="failed attempts before 'failed' (None: never)")


class LiveReconnect(Reconnect):
    """The backoff of a camera or stream: capped low, so one that comes back streams again soon.

    A failed attempt at a camera costs little (a refused connection, or one open timeout), while
    a long delay is time without frames after the camera is back. With ``max_s`` 2 a camera that
    returns is streaming again within about 2.4 s (the delay with jitter) plus its open time.
    """

    max_s: float = Field(
        2.0,
        gt=0,
        description="longest retry delay (+-20% jitter); a camera that is back streams again "
        "within about this long plus its open time",
    )


class _Live(_Source):
    fps: float | None = Field(None, ge=0, description="requested capture rate")
    width: int | None = Field(
        None, ge=1, description="camera: requested frame width (other sources keep the stream's)"
    )
    height: int | None = Field(
        None, ge=1, description="camera: requested frame height (other sources keep the stream's)"
    )
    open_timeout_s: float = Field(10.0, gt=0, description="opening the stream")
    read_timeout_s: float = Field(5.0, gt=0, description="no frame for this long = reconnect")
    reconnect: LiveReconnect = Field(
        default_factory=LiveReconnect, description="retries after a lost stream (backoff capped at max_s)"
    )


class CameraSource(_Live):
    """A V4L2 camera: index (0) or device path (/dev/video0)."""

    type: Literal["camera"] = Field(..., description="a V4L2 camera")
    device: int | str = Field(0, description="V4L2 index or /dev/videoN")
    fourcc: str | None = Field(None, min_length=4, max_length=4, description="e.g. MJPG, YUYV")


class GstreamerSource(_Live):
    """Any GStreamer pipeline ending in appsink (CSI cameras, libcamerasrc, hardware decoders)."""

    type: Literal["gstreamer"] = Field(..., description="a GStreamer pipeline (OpenCV built with GStreamer)")
    pipeline: str = Field(..., min_length=1, description="gst-launch syntax, ending in appsink")


class StreamSource(_Live):
    """A network stream (RTSP, HTTP MJPEG/HLS) through FFmpeg."""

    type: Literal["rtsp", "http"] = Field(..., description="a network stream, read by FFmpeg")
    url: str = Field(
        ..., min_length=1, description="stream URL (credentials in it are masked in logs and health)"
    )
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport")


class VideoSource(_Source):
    """A video file, read losslessly (back-pressure)."""

    type: Literal["video"] = Field(..., description="a video file")
    path: Path = Field(..., description="the video file (any format FFmpeg reads)")
    fps: float = Field(0, ge=0, description="pacing; 0 = as fast as possible")
    loop: bool = Field(
        False, description="start again at the end; false: the pipeline idles, the daemon keeps running"
    )
    decode_threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="FFmpeg decoder threads; auto: 1 up to 1280x720, FFmpeg's own choice above",
    )


class ImagesSource(_Source):
    """A folder of images, or a glob pattern, read in name order."""

    type: Literal["images"] = Field(..., description="image files")
    path: str = Field(..., description="folder or glob, e.g. /data/*.jpg")
    fps: float = Field(0, ge=0, description="pacing; 0 = as fast as possible")
    loop: bool = Field(
        False, description="start again after the last image; false: the pipeline idles after it"
    )


class SyntheticSource(_Source):
    """A moving test pattern (a demo without a camera)."""

    type: Literal["synthetic"] = Field(..., description="a generated test pattern")
    width: int = Field(640, ge=16, description="frame width in pixels")
    height: int = Field(480, ge=16, description="frame height in pixels")
    fps: float = Field(15, ge=0, description="frames per second; 0 = as fast as possible")
    frames: int | None = Field(None, ge=1, description="stop after N frames (None: forever)")


class ChannelScaling(_Source):
    """Per-channel normalisation of a sensor value: ``(raw * scale + offset - mean) / std``.

    ``scale``/``offset`` turn raw readings into physical units (calibration); ``mean``/``std``
    standardise them. Every key is optional (identity by default).
    """

    scale: float = Field(1.0, description="multiplies the raw value")
    offset: float = Field(0.0, description="added after scaling")
    mean: float = Field(0.0, description="subtracted after scale/offset")
    std: float = Field(1.0, description="divides after the mean is subtracted")

    @model_validator(mode="after")
    def _std_nonzero(self) -> ChannelScaling:
        if self.std == 0:
            raise ValueError("std must be non-zero")
        return self


class SensorSource(_Source):
    """Numeric samples (one per line, CSV or JSON) windowed into tensors; lossless.

    Drivers: ``iio`` polls a Linux IIO device folder (``in_<channel>_raw`` with ``_scale`` and
    ``_offset``) at ``rate_hz``; ``stream`` reads a regular file, a FIFO, a character device or
    stdin (``path: "-"``); ``serial`` a serial port (pyserial, ``edge-runtime[serial]``); ``mqtt``
    a topic on the daemon's own broker.
    """

    type: Literal["sensor"] = Field(..., description="numeric sensor samples, windowed")
    driver: Literal["iio", "stream", "serial", "mqtt"] = Field(..., description="where samples come from")
    path: str | None = Field(
        None, min_length=1, description="iio device folder, file/FIFO ('-' = stdin) or serial device"
    )
    topic: str | None = Field(None, min_length=1, description="mqtt: the topic carrying the samples")
    format: Literal["csv", "json"] = Field(
        "csv",
        description="csv: values in channel order (an extra first column is the timestamp); "
        "json: an object keyed by channel (optional 'ts') or an array in channel order",
    )
    channels: list[str] = Field(..., min_length=1, description="channel names, in tensor order")
    rate_hz: float = Field(..., gt=0, description="sample rate (iio: polling rate; files: replay rate)")
    window: int = Field(..., ge=1, description="samples per window")
    hop: int | None = Field(None, ge=1, description="samples between window starts (default: window)")
    normalize: dict[str, ChannelScaling] = Field(
        default_factory=dict, description="per-channel scale/offset/mean/std, keyed by channel name"
    )
    pace: bool = Field(True, description="regular files: replay at rate_hz (false: as fast as possible)")
    loop: bool = Field(False, description="regular files: start again at the end")
    follow: bool = Field(False, description="regular files: at the end, wait for appended lines")
    baudrate: int = Field(115200, ge=50, description="serial: line speed")
    reconnect: Reconnect = Field(
        default_factory=Reconnect, description="retries when the device cannot be opened or goes away"
    )

    @property
    def step(self) -> int:
        """The hop, defaulting to the window (back-to-back windows)."""
        return self.hop or self.window

    @model_validator(mode="after")
    def _where_from(self) -> SensorSource:
        if self.driver == "mqtt" and (self.topic is None or self.path is not None):
            raise ValueError("driver mqtt takes topic: (and no path:)")
        if self.driver != "mqtt" and (self.path is None or self.topic is not None):
            raise ValueError(f"driver {self.driver} takes path: (and no topic:)")
        if self.path == "-" and self.driver != "stream":
            raise ValueError("path '-' (stdin) works with driver stream only")
        if self.loop and self.follow:
            raise ValueError("give loop or follow, not both")
        return self

    @model_validator(mode="after")
    def _channels_known(self) -> SensorSource:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channel names must be unique")
        unknown = sorted(set(self.normalize) - set(self.channels))
        if unknown:
            raise ValueError(f"normalize names unknown channel(s) {shorten(', '.join(unknown), 200)}")
        return self


SourceConfig = Annotated[
    CameraSource
    | GstreamerSource
    | StreamSource
    | VideoSource
    | ImagesSource
    | SyntheticSource
    | SensorSource,
    Field(discriminator="type"),
]
