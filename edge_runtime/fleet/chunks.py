"""Serving a signed bundle's MQTT chunks: what ``push`` and ``fleet serve`` share.

A device downloading update ``<id>`` asks on ``P/updates/<id>/request`` with
``{"device": D, "chunks": [i, ...]}`` for the indices it lacks; the answer is each chunk on
``P/updates/<id>/chunk/<i>`` (QoS 1). Anyone on the broker may publish a request, so an answer
is bounded: the request body is parsed with the bounded parser (size and depth first), at most
``max_per_request`` indices are taken from it, a chunk sent less than ``repeat_s`` ago is not sent
again (several devices asking at once get one copy), and a token bucket holds all chunks together
to ``max_bytes_per_s``. What is held back is simply not sent: devices ask again after their
``chunk_retry_s``. Only the bundle files of the offers are ever read, at offsets computed from the
signed size and chunk size, so no request can make the server read anything else.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import InputError, UpdateError
from edge_runtime.update.inbound import parse_json
from edge_runtime.update.manifest import DEFAULT_CHUNK_BYTES, Manifest, read_envelope_file, update_id

MAX_REQUEST_BYTES = 64 * 1024  # a window of indices is a few KB
MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True, slots=True)
class Offer:
    """One signed bundle whose chunks are served: its update id, file, sizes and envelope."""

    update: str
    path: Path
    manifest: Manifest
    chunk_size: int
    envelope: dict[str, Any] = field(repr=False)

    @property
    def count(self) -> int:
        """How many chunks the bundle has."""
        return -(-self.manifest.size // self.chunk_size)

    @classmethod
    def load(cls, bundle: Path, chunk_size: int | None = None) -> Offer:
        """The offer for ``bundle`` and ``bundle.manifest.json``; InputError saying what is wrong.

        ``chunk_size`` is used for a format 1 manifest only (format 2 signs its own).
        """
        if not bundle.is_file():
            raise InputError(f"{bundle}: no such bundle file")
        envelope = read_envelope_file(bundle.with_name(bundle.name + MANIFEST_SUFFIX))
        try:
            manifest = Manifest.model_validate_json(envelope["manifest"])
        except ValueError as exc:
            raise InputError(f"{bundle}{MANIFEST_SUFFIX}: invalid manifest: {exc}") from exc
        size = manifest.chunk_size or chunk_size or DEFAULT_CHUNK_BYTES
        return cls(update_id(envelope["manifest"]), bundle, manifest, size, envelope)

    def matches(self) -> bool:
        """The file holds exactly the signed bytes (size and sha256)."""
        digest = hashlib.sha256()
        try:
            with self.path.open("rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
        except OSError:
            return False
        return self.path.stat().st_size == self.manifest.size and digest.hexdigest() == self.manifest.sha256


def request_indices(payload: bytes, count: int, limit: int) -> list[int]:
    """The chunk indices a request asks for (valid ones, at most ``limit``); UpdateError if the
    body is not a request at all."""
    body = parse_json(payload, max_bytes=MAX_REQUEST_BYTES, max_depth=2, what="chunk request")
    chunks = body.get("chunks") if isinstance(body, dict) else None
    if not isinstance(chunks, list):
        raise UpdateError("chunk request has no 'chunks' list")
    wanted: list[int] = []
    for index in chunks:
        valid = isinstance(index, int) and not isinstance(index, bool) and 0 <= index < count
        if valid and index not in wanted:
            wanted.append(index)
            if len(wanted) >= limit:
                break
    return wanted


class ChunkSender:
    """Answers chunk requests, bounded per request and in rate (see the module's docstring).

    ``publish(topic, data)`` hands one chunk to the broker and returns False when it could not
    (not connected, the client's queue full): that chunk is then asked for again by the device.
    """

    def __init__(
        self,
        publish: Callable[[str, bytes], bool],
        *,
        prefix: str,
        max_per_request: int = 64,
        repeat_s: float = 1.0,
        max_bytes_per_s: float = 8 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publish, self.prefix, self.clock = publish, prefix, clock
        self.max_per_request, self.repeat_s, self.rate = max_per_request, repeat_s, max_bytes_per_s
        self._sent_at: dict[tuple[str, int], float] = {}
        self._tokens, self._refilled = max_bytes_per_s, clock()
        self.sent = self.held = 0  # chunks sent, chunks held back by the rate limit

    def answer(self, offer: Offer, payload: bytes) -> int:
        """Answer one request for ``offer``; how many chunks were sent. UpdateError: not a request."""
        indices = request_indices(payload, offer.count, self.max_per_request)
        now = self.clock()
        self._refill(now)
        self._forget(now)
        sent = 0
        with offer.path.open("rb") as fh:
            for index in indices:
                key = (offer.update, index)
                if now - self._sent_at.get(key, -1e9) < self.repeat_s:
                    continue  # several devices asked at once: one copy reaches them all
                size = min(offer.chunk_size, offer.manifest.size - index * offer.chunk_size)
                if size > self._tokens:
                    self.held += len(indices) - sent
                    break
                fh.seek(index * offer.chunk_size)
                if not self._publish(f"{self.prefix}/updates/{offer.update}/chunk/{index}", fh.read(size)):
                    break
                self._tokens -= size
                self._sent_at[key] = now
                sent += 1
        self.sent += sent
        return sent

    def _refill(self, now: float) -> None:
        self._tokens = min(self.rate, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now

    def _forget(self, now: float) -> None:
        """Drop send times older than ``repeat_s`` (memory stays bounded by the recent chunks)."""
        if len(self._sent_at) > 4096:
            self._sent_at = {k: t for k, t in self._sent_at.items() if now - t < self.repeat_s}
