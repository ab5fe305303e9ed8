"""The update in progress, as saved in ``job.json`` before each state is entered.

The file's format is fixed (a daemon resumes a job that an older daemon saved)::

    {"update": id, "name": model name, "version": v, "sha256": hex, "size": bytes,
     "transfer": {"type": "chunks", "topic": t, "chunk_size": n, ...} | {"type": "url", "url": u, ...},
     "state": "downloading" | "verifying" | "testing" | "watching",
     "deadline": epoch s (download), "started": epoch s, "verified": true (once the bytes checked out)}

``transfer`` is the envelope's object as ``push`` sent it (not signed): keys this module does not
use (``count``) are kept as they came.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.errors import UpdateError
from edge_runtime.update.manifest import Manifest
from edge_runtime.update.transfer import MAX_CHUNK_BYTES


class JobState(str, enum.Enum):
    """Where a job is; the outcomes (active, rejected, rolled_back) end it and are not saved."""

    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    TESTING = "testing"
    WATCHING = "watching"


@dataclass(frozen=True, slots=True)
class Transfer:
    """How the bundle's bytes come: chunks pulled over MQTT from ``topic``, or a URL."""

    kind: str | None  # "chunks" or "url" once checked
    topic: str | None = None
    chunk_size: int | None = None
    url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other keys the sender added, kept as sent

    @property
    def chunked(self) -> bool:
        """Chunks over MQTT (anything else is downloaded from ``url``)."""
        return self.kind == "chunks"

    def to_json(self) -> dict[str, Any]:
        """The envelope's ``transfer`` object, as it came."""
        fields = {"topic": self.topic, "chunk_size": self.chunk_size, "url": self.url}
        return {"type": self.kind, **{k: v for k, v in fields.items() if v is not None}, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Transfer:
        """Read an envelope's (or a saved job's) ``transfer`` object, unchecked (see ``check``)."""
        extra = {k: v for k, v in data.items() if k not in ("type", "topic", "chunk_size", "url")}
        return cls(data.get("type"), data.get("topic"), data.get("chunk_size"), data.get("url"), extra)

    @classmethod
    def check(cls, data: dict[str, Any]) -> Transfer:
        """An envelope's ``transfer`` object, or UpdateError saying what is wrong with it."""
        kind = data.get("type")
        if kind == "url":
            if not isinstance(data.get("url"), str):
                raise UpdateError("transfer: 'url' missing")
            return cls.from_json(data)
        if kind == "chunks":
            size, topic = data.get("chunk_size"), data.get("topic")
            if not isinstance(size, int) or not isinstance(topic, str) or not topic:
                raise UpdateError("transfer: chunks need 'topic' and 'chunk_size'")
            if any(c in topic for c in "+#"):
                raise UpdateError("transfer: chunk topic must not contain wildcards")
            if not 0 < size <= MAX_CHUNK_BYTES:
                raise UpdateError(f"transfer: chunk_size {size} out of range (1..{MAX_CHUNK_BYTES})")
            return cls.from_json(data)
        raise UpdateError(f"transfer type {kind!r} unknown (expected chunks or url)")


@dataclass(slots=True)
class Job:
    """One accepted update on its way to an outcome."""

    update: str
    name: str
    version: str
    sha256: str
    size: int
    transfer: Transfer
    state: JobState
    deadline: float  # epoch seconds: the download must be complete by then
    started: float  # epoch seconds
    verified: bool = False  # size and sha256 checked: from here on the outcome is recorded

    @classmethod
    def begin(cls, update: str, manifest: Manifest, transfer: Transfer, *, download_timeout_s: float) -> Job:
        """A job for an accepted manifest: downloading, due in ``download_timeout_s``."""
        m, now = manifest, time.time()
        return cls(
            update=update,
            name=m.name,
            version=m.version,
            sha256=m.sha256,
            size=m.size,
            transfer=transfer,
            state=JobState.DOWNLOADING,
            deadline=now + download_timeout_s,
            started=now,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``job.json`` object (``verified`` appears once true, as it always has)."""
        data: dict[str, Any] = {
            "update": self.update,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "transfer": self.transfer.to_json(),
            "state": self.state.value,
            "deadline": self.deadline,
            "started": self.started,
        }
        if self.verified:
            data["verified"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """A saved job; KeyError, TypeError or ValueError when ``data`` is not one."""
        transfer = data["transfer"]
        if not isinstance(transfer, dict):
            raise TypeError(f"job.json: 'transfer' is {type(transfer).__name__}, expected an object")
        return cls(
            update=str(data["update"]),
            name=str(data["name"]),
            version=str(data["version"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            transfer=Transfer.from_json(transfer),
            state=JobState(data["state"]),
            deadline=float(data["deadline"]),
            started=float(data["started"]),
            verified=bool(data.get("verified", False)),
        )
