"""MQTT topic names (``P`` = topic prefix, ``D`` = device id)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic the daemon uses."""

    prefix: str
    device: str

    @property
    def base(self) -> str:
        """``P/D``."""
        return f"{self.prefix}/{self.device}"

    @property
    def status(self) -> str:
        """Retained online/offline status (birth and will)."""
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        """Health telemetry."""
        return f"{self.base}/health"

    @property
    def model_status(self) -> str:
        """Retained model-update state."""
        return f"{self.base}/model/status"

    @property
    def model_update(self) -> str:
        """Device-addressed update manifests (inbound)."""
        return f"{self.base}/model/update"

    def predictions(self, pipeline: str) -> str:
        """One result per inferred frame of ``pipeline``."""
        return f"{self.base}/predictions/{pipeline}"

    def events(self, pipeline: str) -> str:
        """Tracked objects' start/update/end events of ``pipeline`` (analytics)."""
        return f"{self.base}/events/{pipeline}"

    def state(self, pipeline: str) -> str:
        """Retained zone and line counters of ``pipeline``: ``.../zones/NAME``, ``.../lines/NAME``."""
        return f"{self.base}/state/{pipeline}"

    def group_update(self, group: str) -> str:
        """Group-addressed update manifests (inbound)."""
        return f"{self.prefix}/groups/{group}/model/update"

    @property
    def commands(self) -> str:
        """Inbound commands (wildcard subscription)."""
        return f"{self.base}/cmd/+"

    def inbound(self, groups: list[str]) -> list[str]:
        """Everything the daemon subscribes to."""
        return [self.model_update, *(self.group_update(g) for g in groups), self.commands]
