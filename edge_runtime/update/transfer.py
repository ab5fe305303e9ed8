"""Getting a bundle's bytes: chunks into a ``.part`` file, from MQTT or an HTTP(S) URL.

Every source fills the same :class:`ChunkFile`, chunk by chunk: a chunk is stored only when its
index, its size and (for a format 2 manifest) its signed digest are right, so whatever anyone
publishes, no byte that the operator did not sign reaches the file. :class:`UrlFetch` downloads
a URL in its own thread (resuming with ``Range`` from the first missing chunk) and never blocks
the update manager. The ``.part`` file lives in the store's staging folder, never in /tmp (with
systemd's PrivateTmp a rename from /tmp into the state directory would cross mounts). The whole
file's size and sha256 are checked against the signed manifest again before anything reads it.
"""

from __future__ import annotations

import enum
import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from edge_runtime.backoff import backoff_delays
from edge_runtime.errors import UpdateError
from edge_runtime.throttle import Throttle
from edge_runtime.update.manifest import DIGEST_BYTES, MAX_CHUNK_BYTES, chunk_digest

logger = logging.getLogger(__name__)
_THROTTLE = Throttle(per_s=60.0, burst=5)  # a hostile URL must not fill the log either

__all__ = ["MAX_CHUNK_BYTES", "ChunkFile", "UrlFetch", "Verdict"]


class Verdict(str, enum.Enum):
    """What became of one chunk offered to a :class:`ChunkFile`."""

    STORED = "stored"
    REPEAT = "repeat"  # arrived before (a re-sent chunk: normal)
    OUT_OF_RANGE = "out_of_range"
    WRONG_SIZE = "wrong_size"
    BAD_DIGEST = "bad_digest"  # not the signed bytes
    CLOSED = "closed"  # the download is over or the file could not be written (see ``error``)

    @property
    def bad(self) -> bool:
        """A chunk nobody honest sends (counted as ignored)."""
        return self in (Verdict.OUT_OF_RANGE, Verdict.WRONG_SIZE, Verdict.BAD_DIGEST)


class ChunkFile:
    """A sparse ``.part`` file filled chunk by chunk, with a persisted bitmap of what arrived.

    Reordered and repeated chunks are fine: a chunk is written at its offset, a repeat is ignored.
    The bitmap is saved only after the data it describes was fsynced, so after a crash a chunk is
    either known and on disk, or requested again. Thread-safe: a URL fetch and MQTT chunks may
    fill it at the same time.
    """

    def __init__(self, part: Path, size: int, chunk_size: int, digests: bytes | None = None) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_BYTES:
            raise UpdateError(f"chunk size {chunk_size} out of range (1..{MAX_CHUNK_BYTES})")
        self.part, self.size, self.chunk_size, self.digests = part, size, chunk_size, digests
        self.count = (size + chunk_size - 1) // chunk_size
        if digests is not None and len(digests) != self.count * DIGEST_BYTES:
            raise UpdateError(f"{len(digests) // DIGEST_BYTES} chunk digests for {self.count} chunks")
        self.bitmap_path = part.with_suffix(".chunks.json")
        self.received = bytearray(self.count)
        self.error: str | None = None  # the file could not be written: the job must fail
        self._lock = threading.Lock()
        self._load()
        self._fd: int | None = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self._fd, size)
        self._dirty = 0
        self._stored = sum(self.received)

    def _load(self) -> None:
        try:
            saved = json.loads(self.bitmap_path.read_text())
            if saved.get("size") == self.size and saved.get("chunk_size") == self.chunk_size:
                bits = bytes.fromhex(saved.get("received", ""))
                if len(bits) == self.count:
                    self.received[:] = bits
        except (OSError, ValueError, AttributeError, TypeError):  # our own file; a torn one restarts
            return

    @property
    def done(self) -> bool:
        """Every chunk arrived."""
        return self._stored >= self.count

    @property
    def progress(self) -> float:
        """Fraction of chunks received."""
        return self._stored / self.count if self.count else 1.0

    def expected_size(self, index: int) -> int:
        """Bytes of chunk ``index`` (the last one is shorter)."""
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def missing(self, limit: int) -> list[int]:
        """Up to ``limit`` indices still missing, lowest first."""
        out: list[int] = []
        start = 0
        while len(out) < limit:
            i = self.received.find(0, start)
            if i < 0:
                break
            out.append(i)
            start = i + 1
        return out

    def write(self, index: int, data: bytes) -> Verdict:
        """Store chunk ``index`` if it is right; the verdict says what happened."""
        if not 0 <= index < self.count:
            return Verdict.OUT_OF_RANGE
        if len(data) != self.expected_size(index):
            return Verdict.WRONG_SIZE
        if self.digests is not None:
            want = self.digests[index * DIGEST_BYTES : (index + 1) * DIGEST_BYTES]
            if chunk_digest(data) != want:
                return Verdict.BAD_DIGEST
        with self._lock:
            if self._fd is None:
                return Verdict.CLOSED
            if self.received[index]:
                return Verdict.REPEAT
            try:
                os.pwrite(self._fd, data, index * self.chunk_size)
            except OSError as exc:
                self.error = f"cannot write {self.part.name}: {exc.strerror or exc}"
                return Verdict.CLOSED
            self.received[index] = 1
            self._stored += 1
            self._dirty += 1
        return Verdict.STORED

    def save(self) -> None:
        """fsync the data, then persist the bitmap atomically."""
        with self._lock:
            if not self._dirty or self._fd is None:
                return
            try:
                os.fsync(self._fd)
                tmp = self.bitmap_path.with_suffix(".tmp")
                payload = {"size": self.size, "chunk_size": self.chunk_size, "received": self.received.hex()}
                tmp.write_text(json.dumps(payload))
                tmp.replace(self.bitmap_path)
            except OSError as exc:
                self.error = f"cannot save the download's progress: {exc.strerror or exc}"
                return
            self._dirty = 0

    def close(self) -> None:
        """Save and close the file (later writes are refused)."""
        self.save()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def discard(self) -> None:
        """Close and delete the file and its bitmap (a different chunk size starts over)."""
        self.close()
        self.part.unlink(missing_ok=True)
        self.bitmap_path.unlink(missing_ok=True)


class UrlFetch:
    """Download ``url`` into ``chunks`` in a thread of its own, resuming after interruptions.

    ``last_good`` is when the last chunk was stored (or the fetch started): the download decides
    from it whether this source stalled. ``failed`` is set when the source can never succeed.
    """

    def __init__(self, url: str, chunks: ChunkFile, *, timeout_s: float) -> None:
        self.url, self.chunks, self.timeout_s = url, chunks, timeout_s
        self.last_good = time.monotonic()
        self.failed: str | None = None
        self.bad_chunks = 0
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="update-fetch", daemon=True)

    def start(self) -> UrlFetch:
        """Begin downloading."""
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop soon (a blocked read ends within ``timeout_s``; nothing is written after this)."""
        self._cancel.set()

    @property
    def running(self) -> bool:
        """The thread has not ended."""
        return self._thread.is_alive()

    def _run(self) -> None:
        delays = backoff_delays(1.0, 30.0)
        while not self._cancel.is_set() and not self.chunks.done:
            try:
                self._fetch_once()
            except UpdateError as exc:  # this URL will never give the signed bytes
                self.failed = str(exc)
                return
            except (OSError, http.client.HTTPException, ValueError) as exc:  # network: try again
                reason = getattr(exc, "reason", exc)
                _THROTTLE.log(
                    logger,
                    logging.INFO,
                    self.url[:200],
                    "update: download of %s interrupted: %s",
                    self.url[:200],
                    reason,
                )
            except Exception as exc:  # the fetch thread's supervisor: a failed source, never a crash
                logger.debug("update: download of %s failed", self.url[:200], exc_info=True)
                self.failed = f"{type(exc).__name__}: {exc}"
                return
            self._cancel.wait(next(delays))

    def _fetch_once(self) -> None:
        chunks = self.chunks
        missing = chunks.missing(1)
        if not missing:
            return
        index = missing[0]
        offset = index * chunks.chunk_size
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code in (408, 429) or exc.code >= 500:
                raise OSError(f"HTTP {exc.code}") from exc
            raise UpdateError(f"download refused: HTTP {exc.code} {exc.reason}") from exc
        with response:
            if response.status != 206:  # the server ignored Range: it starts from zero
                index = 0
            self._read(response, index)

    def _read(self, response: http.client.HTTPResponse, index: int) -> None:
        chunks, buf = self.chunks, bytearray()
        while not self._cancel.is_set():
            # read1: what has arrived (a read(n) would hold up to n - 1 bytes back while a server stalls)
            block = response.read1(64 * 1024)
            if not block:
                return  # ended early: resumed from the first missing chunk
            buf += block
            while index < chunks.count and len(buf) >= chunks.expected_size(index):
                size = chunks.expected_size(index)
                verdict = chunks.write(index, bytes(buf[:size]))
                del buf[:size]
                if verdict.bad:
                    self.bad_chunks += 1
                    raise UpdateError(f"{self.url[:200]} sends bytes that are not the signed bundle")
                if verdict == Verdict.CLOSED:
                    return
                if verdict == Verdict.STORED:
                    self.last_good = time.monotonic()
                index += 1
            if index >= chunks.count and buf:
                raise UpdateError(f"{self.url[:200]} sends more than the signed size of {chunks.size} bytes")
