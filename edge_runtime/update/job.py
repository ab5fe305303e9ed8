"""The update in progress, as saved in ``job.json`` before each state is entered.

The file's format is fixed (a daemon resumes a job that an older daemon saved)::

    {"update": id, "name": model name, "version": v, "sha256": hex, "size": bytes,
     "transfer": {"type": "chunks", "topic": t, "chunk_size": n, ...} | {"type": "url", "url": u, ...},
     "state": "downloading" | "verifying" | "testing" | "watching",
     "deadline": epoch s (download), "started": epoch s, "verified": true (once the bytes checked out),
     "signed": {"chunk_size": n, "chunk_digests": base64, "url": u | null}}   # format 2 manifests only

``transfer`` is the envelope's object as ``push`` sent it (not signed, a hint): keys this module
does not use (``count``) are kept as they came. ``signed`` is what the manifest signed about the
transfer (docs/updates.md, Transfer).
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.errors import UpdateError
from edge_runtime.throttle import Throttle
from edge_runtime.update.manifest import DEFAULT_CHUNK_BYTES, DIGEST_BYTES, MAX_CHUNK_BYTES, Manifest

logger = logging.getLogger(__name__)
MAX_HINTED_CHUNKS = 65_536  # format 1: a hinted chunk size that gives more chunks is not used
_THROTTLE = Throttle(per_s=60.0, burst=5)  # replayed envelopes may carry any transfer


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
        """An envelope's ``transfer`` object, or UpdateError saying what is wrong with it.

        The device reads it as a hint only: the chunk topic is its own ``P/updates/<id>``, so a
        ``topic`` is not needed (one with wildcards is still refused as malformed).
        """
        kind = data.get("type")
        if kind == "url":
            url = data.get("url")
            if not isinstance(url, str):
                raise UpdateError("transfer: 'url' missing")
            if not url.startswith(("http://", "https://")) or len(url) > 2048:
                raise UpdateError(f"transfer: url must be http:// or https:// (got {url[:40]!r})")
            return cls.from_json(data)
        if kind == "chunks":
            size, topic = data.get("chunk_size"), data.get("topic")
            if not isinstance(size, int) or isinstance(size, bool):
                raise UpdateError("transfer: chunks need 'chunk_size'")
            if topic is not None and (not isinstance(topic, str) or any(c in topic for c in "+#")):
                raise UpdateError("transfer: chunk topic must be text without wildcards")
            if not 0 < size <= MAX_CHUNK_BYTES:
                raise UpdateError(f"transfer: chunk_size {size} out of range (1..{MAX_CHUNK_BYTES})")
            return cls.from_json(data)
        raise UpdateError(f"transfer type {str(kind)[:20]!r} unknown (expected chunks or url)")

    @classmethod
    def hint(cls, data: dict[str, Any], update: str) -> Transfer:
        """An envelope's unsigned ``transfer`` read as a hint: chunks (on the device's own topic)
        when it is missing or malformed, since a hint can never refuse an update."""
        if not data:
            return cls("chunks")
        try:
            return cls.check(data)
        except UpdateError as exc:
            _THROTTLE.log(logger, logging.INFO, "hint", "update %s: transfer ignored (%s)", update, exc)
            return cls("chunks")


@dataclass(frozen=True, slots=True)
class SignedTransfer:
    """What a format 2 manifest signed about the transfer: the chunk size, each chunk's digest,
    optionally a URL."""

    chunk_size: int
    digests: bytes
    url: str | None = None

    @classmethod
    def of(cls, manifest: Manifest) -> SignedTransfer | None:
        """The manifest's signed transfer (None for format 1)."""
        if manifest.chunk_size is None or manifest.digests is None:
            return None
        return cls(manifest.chunk_size, manifest.digests, manifest.url)

    def to_json(self) -> dict[str, Any]:
        """``job.json``'s ``signed`` object."""
        digests = base64.b64encode(self.digests).decode()
        return {"chunk_size": self.chunk_size, "chunk_digests": digests, "url": self.url}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignedTransfer:
        """Read ``job.json``'s ``signed``; TypeError or ValueError when it is not one."""
        try:
            digests = base64.b64decode(str(data["chunk_digests"]), validate=True)
        except (KeyError, binascii.Error) as exc:
            raise ValueError(f"job.json: signed.chunk_digests: {exc}") from exc
        size, url = int(data["chunk_size"]), data.get("url")
        if size <= 0 or len(digests) % DIGEST_BYTES:
            raise ValueError("job.json: signed transfer is malformed")
        return cls(size, digests, None if url is None else str(url))


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
    signed: SignedTransfer | None = None  # format 2: the signed chunk size and digests (and URL)

    @property
    def chunk_size(self) -> int:
        """Bytes per chunk: signed, else the hint's, else push's default (or larger, so that the
        received-chunk bitmap stays small whatever an unsigned hint says)."""
        if self.signed is not None:
            return self.signed.chunk_size
        hinted = self.transfer.chunk_size if self.transfer.chunked else None
        if hinted and -(-self.size // hinted) <= MAX_HINTED_CHUNKS:
            return hinted
        return max(DEFAULT_CHUNK_BYTES, -(-self.size // MAX_HINTED_CHUNKS))

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
            signed=SignedTransfer.of(m),
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
        if self.signed is not None:
            data["signed"] = self.signed.to_json()
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
            signed=None if data.get("signed") is None else SignedTransfer.from_json(data["signed"]),
        )
