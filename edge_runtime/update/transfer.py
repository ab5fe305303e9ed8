"""Getting a bundle's bytes: MQTT chunks (pulled by index) or an HTTP(S) URL (resumed with Range).

Both write into a ``.part`` file in the store's staging folder (never in /tmp: with systemd's
PrivateTmp a rename from /tmp into the state directory would cross mounts). Neither trusts the
bytes: the manager checks size and sha256 against the signed manifest before anything reads them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from edge_runtime.backoff import backoff_delays
from edge_runtime.errors import UpdateError

logger = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 1024 * 1024


class ChunkFile:
    """A sparse ``.part`` file filled chunk by chunk, with a persisted bitmap of what arrived.

    Reordered and repeated chunks are fine: a chunk is written at its offset, a repeat is ignored.
    The bitmap is saved only after the data it describes was fsynced, so after a crash a chunk is
    either known and on disk, or requested again.
    """

    def __init__(self, part: Path, size: int, chunk_size: int) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_BYTES:
            raise UpdateError(f"chunk size {chunk_size} out of range (1..{MAX_CHUNK_BYTES})")
        self.part, self.size, self.chunk_size = part, size, chunk_size
        self.count = (size + chunk_size - 1) // chunk_size
        self.bitmap_path = part.with_suffix(".chunks.json")
        self.received = bytearray(self.count)
        self._load()
        self._fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self._fd, size)
        self._dirty = 0

    def _load(self) -> None:
        try:
            saved = json.loads(self.bitmap_path.read_text())
        except (OSError, ValueError):
            return
        if saved.get("size") == self.size and saved.get("chunk_size") == self.chunk_size:
            bits = bytes.fromhex(saved.get("received", ""))
            if len(bits) == self.count:
                self.received[:] = bits

    @property
    def done(self) -> bool:
        """Every chunk arrived."""
        return all(self.received)

    @property
    def progress(self) -> float:
        """Fraction of chunks received."""
        return sum(self.received) / self.count if self.count else 1.0

    def missing(self, limit: int) -> list[int]:
        """Up to ``limit`` indices still missing, lowest first."""
        out: list[int] = []
        for i, got in enumerate(self.received):
            if not got:
                out.append(i)
                if len(out) >= limit:
                    break
        return out

    def write(self, index: int, data: bytes) -> bool:
        """Store chunk ``index``; False for a repeat; UpdateError for a chunk that cannot be right."""
        if not 0 <= index < self.count:
            raise UpdateError(f"chunk {index} out of range (bundle has {self.count} chunks)")
        expected = min(self.chunk_size, self.size - index * self.chunk_size)
        if len(data) != expected:
            logger.warning("update: chunk %d has %d bytes, expected %d; ignored", index, len(data), expected)
            return False
        if self.received[index]:
            return False
        os.pwrite(self._fd, data, index * self.chunk_size)
        self.received[index] = 1
        self._dirty += 1
        return True

    def save(self) -> None:
        """fsync the data, then persist the bitmap atomically."""
        if not self._dirty:
            return
        os.fsync(self._fd)
        tmp = self.bitmap_path.with_suffix(".tmp")
        payload = {"size": self.size, "chunk_size": self.chunk_size, "received": self.received.hex()}
        tmp.write_text(json.dumps(payload))
        tmp.replace(self.bitmap_path)
        self._dirty = 0

    def close(self) -> None:
        """Save and close the file."""
        self.save()
        os.close(self._fd)


def http_download(
    url: str,
    part: Path,
    size: int,
    *,
    stop: threading.Event,
    deadline: float,
    progress: Callable[[float], None],
    timeout_s: float = 30.0,
    clock: Callable[[], float] | None = None,
) -> None:
    """Fetch ``url`` into ``part``, resuming what is there; exactly ``size`` bytes or UpdateError."""
    now = clock or time.monotonic
    if not url.startswith(("http://", "https://")):
        raise UpdateError(f"transfer url must be http:// or https:// (got {url[:40]!r})")
    delays = backoff_delays(1.0, 30.0)
    while True:
        try:
            if _fetch_once(url, part, size, timeout_s, progress, stop):
                return
        except UpdateError:
            raise
        except (OSError, urllib.error.URLError) as exc:  # network trouble: retry until the deadline
            reason = getattr(exc, "reason", exc)
            logger.warning("update: download of %s interrupted: %s", url, reason)
            if now() >= deadline:
                raise UpdateError(f"download failed: {reason}") from exc
        if stop.is_set():
            raise UpdateError("stopped during download")
        if now() >= deadline:
            raise UpdateError("download timed out")
        stop.wait(next(delays))


def _fetch_once(  # noqa: PLR0917 - one private call site
    url: str,
    part: Path,
    size: int,
    timeout_s: float,
    progress: Callable[[float], None],
    stop: threading.Event,
) -> bool:
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if have == size:
        return True
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # asked past the end: start again from zero
            part.unlink()
            return False
        if exc.code in (408, 429) or exc.code >= 500:
            raise OSError(f"HTTP {exc.code}") from exc
        raise UpdateError(f"download refused: HTTP {exc.code} {exc.reason}") from exc
    with response:
        if response.status == 200 and have:  # the server ignored Range: start from zero
            have = 0
        mode = "ab" if have else "wb"
        with part.open(mode) as fh:
            while not stop.is_set():
                block = response.read(64 * 1024)
                if not block:
                    break
                have += len(block)
                if have > size:
                    raise UpdateError(f"server sent more than the signed size of {size} bytes")
                fh.write(block)
                progress(have / size)
            fh.flush()
            os.fsync(fh.fileno())
    return have == size
