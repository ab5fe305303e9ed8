"""``pipelines[].source``: one model per source type, selected by ``type:``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reconnect(_Source):
    """Exponential backoff with jitter for live sources."""

    initial_s: float = Field(0.5, gt=0, description="first retry delay")
    max_s: float = Field(30.0, gt=0, description="longest retry delay")
    give_up_after: int | None = Field(None, ge=1, description="failed attempts before 'failed' (None: never)")


class _Live(_Source):
    fps: float | None = Field(None, ge=0, description="requested capture rate")
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    open_timeout_s: float = Field(10.0, gt=0, description="opening the stream")
    read_timeout_s: float = Field(5.0, gt=0, description="no frame for this long = reconnect")
    reconnect: Reconnect = Field(default_factory=Reconnect)


class CameraSource(_Live):
    """A V4L2 camera: index (0) or device path (/dev/video0)."""

    type: Literal["camera"]
    device: int | str = Field(0, description="V4L2 index or /dev/videoN")
    fourcc: str | None = Field(None, min_length=4, max_length=4, description="e.g. MJPG, YUYV")


class GstreamerSource(_Live):
    """Any GStreamer pipeline ending in appsink (CSI cameras, libcamerasrc, hardware decoders)."""

    type: Literal["gstreamer"]
    pipeline: str = Field(..., min_length=1)


class StreamSource(_Live):
    """A network stream (RTSP, HTTP MJPEG/HLS) through FFmpeg."""

    type: Literal["rtsp", "http"]
    url: str = Field(..., min_length=1)
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport")


class VideoSource(_Source):
    """A video file, read losslessly (back-pressure)."""

    type: Literal["video"]
    path: Path
    fps: float = Field(0, ge=0, description="pacing; 0 = as fast as possible")
    loop: bool = False


class ImagesSource(_Source):
    """A folder of images, or a glob pattern, read in name order."""

    type: Literal["images"]
    path: str = Field(..., description="folder or glob, e.g. /data/*.jpg")
    fps: float = Field(0, ge=0, description="pacing; 0 = as fast as possible")
    loop: bool = False


class SyntheticSource(_Source):
    """A moving test pattern (a demo without a camera)."""

    type: Literal["synthetic"]
    width: int = Field(640, ge=16)
    height: int = Field(480, ge=16)
    fps: float = Field(15, ge=0)
    frames: int | None = Field(None, ge=1, description="stop after N frames (None: forever)")


SourceConfig = Annotated[
    CameraSource | GstreamerSource | StreamSource | VideoSource | ImagesSource | SyntheticSource,
    Field(discriminator="type"),
]
LIVE_TYPES = frozenset({"camera", "gstreamer", "rtsp", "http"})
