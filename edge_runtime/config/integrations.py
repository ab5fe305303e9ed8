"""Config sections of the integrations: snapshots (per pipeline), metrics, the local HTTP page and
Home Assistant discovery (docs/integrations.md). All are off unless configured."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_LISTEN = re.compile(r"^(?:(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):)?(?P<port>[0-9]{1,5})$")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` as (host, port); no host means 127.0.0.1 (local only)."""
    m = _LISTEN.match(value)
    if m is None or not 1 <= int(m["port"]) <= 65535:
        raise ValueError(f"{value[:60]!r} is not HOST:PORT (a port 1-65535; the host defaults to 127.0.0.1)")
    host = (m["host"] or "127.0.0.1").strip("[]")
    return host, int(m["port"])


class Section(BaseModel):
    """As sections.py's base (imported by it, so not importing it): strict and frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_listen(value: str | None) -> str | None:
    if value is not None:
        parse_listen(value)
    return value


class SnapshotsConfig(Section):
    """Annotated JPEG snapshots of one pipeline on ``P/D/snapshot/<pipeline>``."""

    labels: list[str] = Field(
        default_factory=list, description="publish a snapshot when one of these labels is detected"
    )
    min_interval_s: float = Field(
        10.0, ge=0.5, description="at most one label-triggered snapshot this often (seconds)"
    )
    every_s: float | None = Field(None, ge=1, description="also publish one every this many seconds")
    retain: bool = Field(False, description="publish retained (a stale image after a reconnect)")
    max_height: int = Field(480, ge=64, le=4320, description="images are scaled down to this height")
    quality: int = Field(80, ge=10, le=100, description="JPEG quality")

    @model_validator(mode="after")
    def _some_trigger(self) -> SnapshotsConfig:
        if not self.labels and self.every_s is None:
            raise ValueError("give labels (publish on detection) and/or every_s (publish periodically)")
        return self


class MetricsConfig(Section):
    """Prometheus metrics: an HTTP endpoint and/or a node_exporter textfile."""

    listen: str | None = Field(
        None, description="HOST:PORT of the /metrics endpoint (host default 127.0.0.1); none: no port"
    )
    textfile: Path | None = Field(
        None, description="a .prom file rewritten atomically for node_exporter's textfile collector"
    )
    textfile_interval_s: float = Field(15.0, ge=1, description="seconds between textfile rewrites")

    _listen = field_validator("listen")(_check_listen)

    @field_validator("textfile")
    @classmethod
    def _prom_suffix(cls, v: Path | None) -> Path | None:
        if v is not None and v.suffix != ".prom":
            raise ValueError("node_exporter reads only files ending in .prom")
        return v


class HttpConfig(Section):
    """The local status page, /api/status, /healthz, /metrics and snapshots (read-only)."""

    listen: str | None = Field(None, description="HOST:PORT (host default 127.0.0.1); none: no server")
    token_file: Path | None = Field(
        None, description="file holding a bearer token that every request must send (credential name ok)"
    )
    basic_auth_file: Path | None = Field(
        None, description="file holding USER:PASSWORD for HTTP basic auth (credential name ok)"
    )
    refresh_s: float = Field(2.0, ge=0.5, le=3600, description="how often the page refreshes itself")
    max_threads: int = Field(8, ge=1, le=64, description="requests served at once; more wait")
    stall_s: float = Field(
        30.0, gt=0, description="/healthz answers 503 when a pipeline made no progress for this long"
    )

    _listen = field_validator("listen")(_check_listen)


class HomeAssistantConfig(Section):
    """Home Assistant MQTT discovery (one device, its entities per pipeline)."""

    enabled: bool = Field(False, description="publish discovery; false removes what was published")
    discovery_prefix: str = Field("homeassistant", min_length=1, description="Home Assistant's prefix")
    node_id: str | None = Field(None, description="the device's discovery id (default: device.id)")
    labels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="pipeline -> labels with an occupancy and a count entity (default: the model's "
        "labels, at most 10)",
    )
    state_interval_s: float = Field(
        5.0, ge=0.5, description="entity states are published on change, at most this often"
    )
    origin_url: str | None = Field(
        None, max_length=500, description="support URL Home Assistant shows for the device's software"
    )

    @field_validator("discovery_prefix", "node_id")
    @classmethod
    def _topic_level(cls, v: str | None) -> str | None:
        if v is not None and (any(c in v for c in "+#") or v.startswith("/") or v.endswith("/")):
            raise ValueError(f"{v[:60]!r}: no + # and no leading or trailing /")
        return v
