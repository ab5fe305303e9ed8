"""The daemon's config file, one pydantic model per section (strict: unknown keys are errors)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_runtime.config.analytics import LineConfig, MotionConfig, TrackingConfig, ZoneConfig
from edge_runtime.config.integrations import HomeAssistantConfig, HttpConfig, MetricsConfig, SnapshotsConfig
from edge_runtime.config.sources import SensorSource, SourceConfig
from edge_runtime.config.vocabulary import ACCELERATORS
from edge_runtime.config.yamltree import shorten


class Section(BaseModel):
    """Base: unknown keys rejected, values frozen after load, no infinite or NaN numbers (a
    ``.inf`` timeout would reach ``Event.wait`` and end a thread in OverflowError)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def state_path(name: str) -> Path:
    """Default location under ``$STATE_DIRECTORY`` (systemd StateDirectory=) or /var/lib."""
    base = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/edge-runtime"
    return Path(base) / name


class DeviceConfig(Section):
    """Who this device is."""

    id: str = Field(
        default_factory=socket.gethostname, min_length=1, description="device id (default: hostname)"
    )
    groups: list[str] = Field(
        default_factory=list, description="fleet groups whose updates this device follows"
    )

    @field_validator("id", "groups")
    @classmethod
    def _no_topic_wildcards(cls, v: Any) -> Any:
        for item in [v] if isinstance(v, str) else v:
            if any(c in item for c in "+#/") or not item:
                raise ValueError(f"{shorten(item)!r} must be non-empty and contain none of + # /")
        return v


class TlsConfig(Section):
    """TLS to the broker; the CA is required, client cert/key for mutual TLS."""

    ca_file: Path = Field(..., description="CA certificate(s) that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client private key (mutual TLS)")
    insecure: bool = Field(False, description="skip hostname verification (testing only)")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttConfig(Section):
    """The broker connection (MQTT v5)."""

    host: str = Field("localhost", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (1883 plain, usually 8883 with TLS)")
    topic_prefix: str = Field("edge", min_length=1, description="first topic level")
    qos: Literal[0, 1] = Field(
        1, description="QoS of health messages (predictions always go at QoS 1: delivered at least once)"
    )
    keepalive: int = Field(30, ge=5, le=3600, description="seconds; a dead broker is noticed in ~1.5x")
    username: str | None = Field(None, description="user name for the broker (none: anonymous)")
    password: str | None = Field(
        None, description="password for username; prefer password_file (a secret out of the config)"
    )
    password_file: Path | None = Field(
        None, description="file holding the password (systemd credential name ok)"
    )
    tls: TlsConfig | None = Field(None, description="TLS to the broker (none: plain TCP)")
    reconnect_min_s: float = Field(1.0, gt=0, description="first reconnect delay")
    reconnect_max_s: float = Field(30.0, gt=0, description="longest reconnect delay")
    max_inflight: int = Field(100, ge=1, le=65535, description="unacknowledged publishes at once")
    connect_timeout_s: float = Field(
        10.0, gt=0, description="a connection attempt without the broker's CONNACK this long has failed"
    )
    max_packet_bytes: int = Field(
        1024 * 1024 + 64 * 1024,
        ge=128 * 1024,
        le=268_435_460,
        description="largest MQTT packet taken from the broker (MQTT v5 Maximum Packet Size): the broker "
        "drops larger messages for this device; default: a 1 MiB update chunk plus 64 KiB for its headers",
    )

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self


class OutboxConfig(Section):
    """The on-disk store-and-forward queue."""

    path: Path = Field(default_factory=lambda: state_path("outbox.db"), description="SQLite file")
    max_messages: int = Field(100_000, ge=10, description="messages kept while the broker is away")
    max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024, description="payload bytes kept")
    drop_policy: Literal["oldest", "newest"] = Field("oldest", description="what to drop when full")
    synchronous: Literal["normal", "full"] = Field(
        "normal", description="normal: survives crashes; full: also survives power loss, slower"
    )
    reserve_bytes: int = Field(
        8 * 1024 * 1024,
        ge=0,
        description="free disk space kept: below it new messages are refused (dropped and counted) "
        "so deletions and counters still write; 0 = none",
    )


class HealthConfig(Section):
    """Health telemetry."""

    interval_s: float = Field(10.0, ge=0.5, description="seconds between health messages")


class ModelConfig(Section):
    """A model the pipelines refer to by name."""

    path: Path = Field(..., description="model file or bundle folder")
    backend: Literal["auto", "onnx", "tflite"] = Field(
        "auto", description="runtime; auto: tflite for edgetpu, gpu or external, else onnx (if installed)"
    )
    accelerator: str = Field(
        "auto", description="auto | cpu | xnnpack | edgetpu | gpu | cuda | tensorrt | ..."
    )
    threads: int | None = Field(2, ge=1, le=64, description="inference threads")
    streams: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto",
        description="inference calls that run at once, each on its own frame, the threads split "
        "among them (ONNX: one shared session; LiteRT: one interpreter each); auto: one "
        "single-thread stream per thread on the CPU (measured 1.2-1.3x the throughput of one "
        "call with all threads on 2 cores), one on an accelerator",
    )
    allow_cpu_fallback: bool | None = Field(None, description="default: true for auto, false otherwise")
    device: str | None = Field(None, description="Edge TPU device: usb, usb:N, pci:N")
    delegate_path: str | None = Field(None, description="external TFLite delegate library")
    delegate_options: dict[str, str] = Field(
        default_factory=dict, description="options passed to the TFLite delegate library (name: value)"
    )
    provider_options: dict[str, Any] = Field(
        default_factory=dict, description="ONNX Runtime provider options"
    )
    spin_wait: bool | None = Field(
        False,
        description="onnx: idle inference threads spin (lower latency, but a busy core that capture "
        "and publishing need: with 2 threads on 2 cores, off was measured 20% faster in the daemon); "
        "null: the runtime's default (spin)",
    )
    exact_int8: bool | None = Field(
        None,
        description="onnx: on x86 CPUs without VNNI (AVX2, AVX-512F), run int8 products in ONNX "
        "Runtime's exact uint8 x uint8 kernels; its default kernels saturate with 8-bit weights and "
        "change the answers. null (default): exact on those CPUs, where it is needed; false: the "
        "default kernels (faster, right only for 7-bit weights); no effect on other CPUs",
    )
    top_k: int | None = Field(None, ge=1, description="classification: classes per result")
    score_threshold: float | None = Field(None, ge=0, le=1, description="override model.yaml")

    @field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, v: str) -> str:
        if v not in ACCELERATORS:
            raise ValueError(f"unknown accelerator {shorten(v)!r}; use one of {', '.join(ACCELERATORS)}")
        return v


RegionName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class PipelineConfig(Section):
    """One source feeding one model."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] = Field(
        ..., description="unique; the last level of its predictions topic (letters, digits, _ . -)"
    )
    model: str = Field(..., description="a key of models:")
    source: SourceConfig = Field(
        ..., description="where frames or sensor windows come from; type: says which kind"
    )
    every_n_frames: int = Field(1, ge=1, description="infer every Nth frame")
    max_fps: float | None = Field(None, gt=0, description="cap on inferences per second")
    snapshots: SnapshotsConfig | None = Field(
        None, description="publish annotated JPEG snapshots (docs/integrations.md); none: off"
    )
    # -- video analytics (docs/analytics.md) --
    motion: MotionConfig = Field(default_factory=MotionConfig, description="motion gating")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="object tracking and events")
    zones: dict[RegionName, ZoneConfig] = Field(
        default_factory=dict, max_length=64, description="named polygons: occupancy, dwell, entries"
    )
    lines: dict[RegionName, LineConfig] = Field(
        default_factory=dict, max_length=64, description="named counting lines: crossings by direction"
    )
    output: Literal["every", "changes", "events"] = Field(
        "every",
        description="every: one prediction per inferred frame; changes: only when what is seen changes "
        "(labels, or track ids when tracking); events: no predictions, only events and states",
    )

    @property
    def tracks(self) -> bool:
        """Whether this pipeline tracks objects (explicitly, or because analytics need it)."""
        if self.tracking.enabled is not None:
            return self.tracking.enabled
        return bool(self.zones or self.lines or self.output == "events")

    @model_validator(mode="after")
    def _analytics_fit(self) -> PipelineConfig:
        if self.tracking.enabled is False and (self.zones or self.lines or self.output == "events"):
            raise ValueError("zones, lines and output: events need tracking (tracking.enabled: false)")
        if self.tracking.start == "zone" and not self.zones:
            raise ValueError("tracking.start: zone needs zones")
        if isinstance(self.source, SensorSource) and (
            self.motion.enabled or self.tracks or self.output != "every"
        ):
            raise ValueError(
                "motion, tracking, zones, lines and output other than every need an image source"
            )
        return self


class UpdatesConfig(Section):
    """Signed model updates."""

    public_keys: list[Path] = Field(default_factory=list, description="trusted Ed25519 public keys (PEM)")
    store: Path = Field(default_factory=lambda: state_path("models"), description="versioned model store")
    keep: int = Field(2, ge=1, le=20, description="previous versions kept in the store for rollback")
    max_bundle_bytes: int = Field(256 * 1024 * 1024, gt=0, description="largest bundle accepted (bytes)")
    download_timeout_s: float = Field(600.0, gt=0, description="give up a download after this long")
    chunk_window: int = Field(32, ge=1, le=1024, description="MQTT chunks requested at a time")
    chunk_retry_s: float = Field(3.0, gt=0, description="request missing chunks again after this silence")
    health_window_s: float = Field(15.0, ge=0, description="watch a swapped-in model this long before commit")
    max_errors: int = Field(0, ge=0, description="failed frames tolerated in the health window")
    max_latency_ms: float | None = Field(None, gt=0, description="absolute inference latency budget (ms)")
    latency_factor: float = Field(
        3.0, gt=1, description="a candidate may be at most this many times slower than the current model"
    )


class ControlConfig(Section):
    """Remote commands and remote configuration over MQTT (docs/control.md)."""

    require_signed: Literal["changes", "all"] = Field(
        "changes",
        description="changes: commands that change what the device does (pause, resume, reload) must "
        "be signed by a key in updates.public_keys; all: every command must be",
    )
    state_dir: Path = Field(
        default_factory=lambda: state_path("control"),
        description="accepted remote configs, what runs now, and the command nonces seen",
    )
    keep: int = Field(5, ge=1, le=50, description="accepted remote configs kept for rollback and audit")
    health_window_s: float = Field(
        30.0, gt=0, le=3600, description="a remote config that is not healthy within this long is rolled back"
    )
    max_command_age_s: float = Field(
        300.0, gt=0, le=86400, description="signed commands must expire within this long of arriving"
    )
    commands_per_s: float = Field(
        5.0, gt=0, le=1000, description="commands taken per second; more are dropped"
    )
    max_pending: int = Field(
        16, ge=1, le=1024, description="commands waiting to be handled; more are dropped"
    )
    snapshot_max_height: int = Field(
        480, ge=16, le=2160, description="snapshots are scaled down to this height"
    )
    snapshot_quality: int = Field(80, ge=10, le=100, description="JPEG quality of snapshots")


class LoggingConfig(Section):
    """Log level and line format of the daemon."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="lowest level logged (edge-runtime -v or -q overrides it)"
    )
    format: Literal["auto", "human", "journal"] = Field(
        "auto", description="auto: journald lines (<N> priority, no timestamp) under systemd, else human"
    )


class Config(Section):
    """The whole config file."""

    device: DeviceConfig = Field(default_factory=DeviceConfig, description="who this device is")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="the broker connection")
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig, description="the on-disk queue of messages for the broker"
    )
    health: HealthConfig = Field(default_factory=HealthConfig, description="health telemetry")
    models: dict[str, ModelConfig] = Field(
        ..., min_length=1, description="the models, by the name pipelines use for them"
    )
    pipelines: list[PipelineConfig] = Field(..., min_length=1, description="each a source feeding a model")
    updates: UpdatesConfig = Field(default_factory=UpdatesConfig, description="signed model updates")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="log level and format")
    control: ControlConfig = Field(
        default_factory=ControlConfig, description="remote commands and remote configuration"
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus metrics (off)")
    http: HttpConfig = Field(default_factory=HttpConfig, description="the local status page (off)")
    home_assistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig, description="Home Assistant MQTT discovery (off)"
    )

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Cross-section rules, each with the key path it is about (for FILE:LINE reporting)."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        seen: set[str] = set()
        for i, p in enumerate(self.pipelines):
            if p.name in seen:
                out.append((("pipelines", i, "name"), f"duplicate pipeline name {shorten(p.name)!r}"))
            seen.add(p.name)
            if p.model not in self.models:
                known = shorten(", ".join(sorted(self.models)), 200)
                out.append(
                    (("pipelines", i, "model"), f"unknown model {shorten(p.model)!r} (models: {known})")
                )
        for name in self.home_assistant.labels:
            if name not in seen:
                out.append((("home_assistant", "labels", name), f"no pipeline named {shorten(name)!r}"))
        return out
