"""The body of the retained ``P/D/model/status`` (docs/mqtt.md, Model status)::

    {"state", "update", "name", "version", "reason", "progress", "step", "active_version", "device", "ts"}

``version`` is the update's, ``active_version`` what serves now.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edge_runtime.update.job import Job
from edge_runtime.update.manifest import Manifest
from edge_runtime.update.ports import Slot


class StatusReporter:
    """Builds model/status bodies and hands them to ``publish`` (the outbox, retained)."""

    def __init__(
        self, device: str, slots: dict[str, list[Slot]], publish: Callable[[dict[str, Any]], None]
    ) -> None:
        self.device, self.slots, self._publish = device, slots, publish

    def publish(
        self,
        state: str,
        job: Job | None,
        *,
        update: str | None = None,
        manifest: Manifest | None = None,
        reason: str | None = None,
        progress: float | None = None,
        step: str | None = None,
    ) -> None:
        """About ``job``; or about a message (``update``, ``manifest``) that never became one."""
        if manifest is not None or update is not None or job is None:
            uid = update
            name, version = (manifest.name, manifest.version) if manifest else (None, None)
        else:
            uid, name, version = job.update, job.name, job.version
        body = {
            "state": state,
            "update": uid,
            "name": name,
            "version": version,
            "reason": reason,
            "progress": progress,
            "step": step,
            "active_version": self._active_version(name),
            "device": self.device,
            "ts": round(time.time(), 3),
        }
        self._publish(body)

    def _active_version(self, name: str | None) -> str | None:
        slots = self.slots.get(name or "") or next(iter(self.slots.values()), [])
        return slots[0].version() if slots else None
