"""Driving one job's download: chunks pulled over MQTT by index, or a URL, with progress reports.

The manager's thread calls ``step`` on every turn of its loop while the job is downloading, and
hands over the chunks the MQTT link received (``on_chunk``; the link's route for the chunk topic
exists from the first chunk request until the download ends, either way). Chunks are requested a window at a
time and again when none arrived for ``chunk_retry_s``; the bitmap of what arrived is saved after
the data (transfer.py), so a restart asks only for the rest. A URL download blocks the thread
until it completes, fails or the daemon stops (it resumes with ``Range`` at the next start).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge_runtime.errors import UpdateError
from edge_runtime.update.job import Job
from edge_runtime.update.policy import UpdatePolicy
from edge_runtime.update.transfer import ChunkFile, http_download


class Download:
    """The bytes of one job's bundle on their way into ``part``."""

    def __init__(
        self,
        job: Job,
        part: Path,
        policy: UpdatePolicy,
        *,
        device: str,
        send: Callable[[str, bytes], bool],
        subscribe: Callable[[str, bool], None],
        progress: Callable[[float], None],
        checkpoint: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        self.job, self.part, self.policy, self.device = job, part, policy, device
        self._send, self._subscribe, self._report = send, subscribe, progress
        self._checkpoint, self._stop = checkpoint, stop
        self._chunks: ChunkFile | None = None
        self._last_chunk_at = 0.0
        self._last_request_at = 0.0
        self._outstanding: set[int] = set()
        self._last_progress_sent = -1.0

    def step(self) -> bool:
        """Move the download on; True once every byte is in ``part``, UpdateError when it failed."""
        return self._drive_chunks() if self.job.transfer.chunked else self._download_url()

    def on_chunk(self, topic: str, index: int, data: bytes) -> None:
        """Chunk ``index`` arrived on ``<topic>/chunk/<index>`` (ignored when not this job's)."""
        if self.job.transfer.topic != topic:
            return
        chunks = self._open_chunks()
        if chunks.write(index, data):
            self._last_chunk_at = time.monotonic()
            if chunks.progress >= 0.5:
                self._checkpoint("downloading")

    def close(self) -> None:
        """Save what arrived and close the part file (the download resumes from there)."""
        if self._chunks is not None:
            self._chunks.close()
            self._chunks = None

    def end(self) -> None:
        """The job is over (whatever the outcome): close, and stop receiving its chunk topic."""
        routed = self._chunks is not None
        self.close()
        if routed:
            self._subscribe(f"{self._topic}/chunk/+", False)

    # -- chunks over MQTT ------------------------------------------------------------------------
    @property
    def _topic(self) -> str:
        return str(self.job.transfer.topic)

    def _open_chunks(self) -> ChunkFile:
        if self._chunks is None:
            chunk_size = int(self.job.transfer.chunk_size or 0)
            self._chunks = ChunkFile(self.part, self.job.size, chunk_size)
            self._subscribe(f"{self._topic}/chunk/+", True)
            self._last_chunk_at = time.monotonic()
        return self._chunks

    def _drive_chunks(self) -> bool:
        chunks = self._open_chunks()
        now = time.monotonic()
        if chunks.done:
            self.end()
            return True
        if time.time() > self.job.deadline:
            raise UpdateError(
                f"download timed out after {self.policy.download_timeout_s:.0f} s "
                f"({chunks.progress:.0%} received)"
            )
        self._outstanding = {i for i in self._outstanding if not chunks.received[i]}
        stalled = min(now - self._last_chunk_at, now - self._last_request_at) >= self.policy.chunk_retry_s
        if not self._outstanding or stalled:
            self._request_chunks(chunks)
        if now - self._last_chunk_at > 1.0:
            chunks.save()
        self._progress(chunks.progress)
        return False

    def _request_chunks(self, chunks: ChunkFile) -> None:
        missing = chunks.missing(self.policy.chunk_window)
        body = json.dumps({"device": self.device, "chunks": missing}).encode()
        if self._send(f"{self._topic}/request", body):
            self._outstanding = set(missing)
        self._last_request_at = time.monotonic()
        chunks.save()

    # -- a URL ---------------------------------------------------------------------------------------
    def _download_url(self) -> bool:
        deadline = time.monotonic() + max(0.0, self.job.deadline - time.time())
        try:
            http_download(
                str(self.job.transfer.url),
                self.part,
                self.job.size,
                stop=self._stop,
                deadline=deadline,
                progress=self._url_progress,
            )
        except UpdateError:
            if self._stop.is_set():
                return False  # resumes at the next start
            raise
        return True

    def _url_progress(self, fraction: float) -> None:
        self._progress(fraction)
        if fraction >= 0.5:
            self._checkpoint("downloading")

    def _progress(self, fraction: float) -> None:
        """Report progress in steps of 10 % (and once at 100 %)."""
        if fraction - self._last_progress_sent >= 0.1 or (fraction >= 1.0 > self._last_progress_sent):
            self._last_progress_sent = fraction
            self._report(round(fraction, 3))
