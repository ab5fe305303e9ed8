"""Driving one job's download: chunks over MQTT and URLs, with progress reports and fallbacks.

The manager's thread calls ``step`` on every turn of its loop while the job is downloading, and
hands over the chunks the MQTT link received (``on_chunk``; the link's route for the chunk topic
exists from the first chunk request until the download ends, either way) and the transfer hints
of later copies of the same update (``offer``). The rule (docs/updates.md, Transfer):

- the chunk topic is the device's own ``P/updates/<id>``; the chunk size and every chunk's digest
  come from the signed manifest (format 2), so a chunk that is not the signed bytes is ignored;
- a URL is tried in a thread of its own (``UrlFetch``): for a format 2 manifest only the one it
  signed (a device never fetches an address nobody signed); for format 1, up to ``MAX_URLS`` from
  the unsigned ``transfer`` hints of the copies that arrived. A URL that fails, or stores no
  chunk for ``policy.source_stall_s``, gives way to the next one (or to chunks);
- chunks are requested over MQTT (a window at a time, again after ``chunk_retry_s`` of silence)
  whenever a copy offered chunks or no URL is making progress, and always once a URL stalled or
  failed: so whatever an unsigned hint says, the device falls back on the chunks the operator's
  ``push`` or ``fleet serve`` serves.

The bitmap of what arrived is saved after the data (transfer.py), so a restart asks only for the
rest.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from edge_runtime.errors import UpdateError
from edge_runtime.throttle import Throttle
from edge_runtime.update.job import Job, Transfer
from edge_runtime.update.policy import UpdatePolicy
from edge_runtime.update.transfer import ChunkFile, UrlFetch, Verdict

logger = logging.getLogger(__name__)
_THROTTLE = Throttle(per_s=60.0, burst=5)

MAX_URLS = 4  # distinct unsigned URLs remembered per job; more are ignored
SAVE_EVERY_S = 2.0


class Download:
    """The bytes of one job's bundle on their way into ``part``."""

    def __init__(
        self,
        job: Job,
        part: Path,
        policy: UpdatePolicy,
        *,
        device: str,
        topic: str,
        send: Callable[[str, bytes], bool],
        subscribe: Callable[[str, bool], None],
        progress: Callable[[float], None],
        checkpoint: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        self.job, self.part, self.policy, self.device, self.topic = job, part, policy, device, topic
        self._send, self._subscribe, self._report = send, subscribe, progress
        self._checkpoint, self._stop = checkpoint, stop
        self._chunks: ChunkFile | None = None
        self._routed = False
        self._offered_chunks = job.transfer.chunked
        # format 2: the signed URL only; format 1 (nothing signed): the hints
        first = job.signed.url if job.signed is not None else job.transfer.url
        self._urls: list[str] = [first] if first else []
        self._next_url = 0
        self._url_after = 0.0
        self._fetch: UrlFetch | None = None
        self._last_chunk_at = 0.0
        self._last_request_at = 0.0
        self._last_save = time.monotonic()
        self._outstanding: set[int] = set()
        self._last_progress_sent = 0.0  # 0 % was reported when the job began
        self.bad_chunks = 0  # chunks that were not the signed bytes (for the timeout's reason)

    # -- the manager's calls -----------------------------------------------------------------------
    def step(self) -> bool:
        """Move the download on; True once every byte is in ``part``, UpdateError when it failed."""
        chunks = self._open_chunks()
        if chunks.error is not None:
            raise UpdateError(chunks.error)
        if chunks.done:
            self.end()
            return True
        if time.time() > self.job.deadline:
            bad = f"; {self.bad_chunks} chunk(s) were not the signed bytes" if self.bad_chunks else ""
            raise UpdateError(
                f"download timed out after {self.policy.download_timeout_s:.0f} s "
                f"({chunks.progress:.0%} received{bad})"
            )
        now = time.monotonic()
        live = self._drive_url(chunks, now)
        if self._offered_chunks or not live:
            self._drive_chunks(chunks, now)
        if now - self._last_save >= SAVE_EVERY_S:
            chunks.save()
            self._last_save = now
        self._progress(chunks.progress)
        if chunks.progress >= 0.5:
            self._checkpoint("downloading")
        return False

    def on_chunk(self, topic: str, index: int, data: bytes) -> Verdict:
        """Chunk ``index`` arrived on ``<topic>/chunk/<index>``: stored only if it is right."""
        if topic != self.topic:
            return Verdict.OUT_OF_RANGE
        chunks = self._open_chunks()
        verdict = chunks.write(index, data)
        if verdict == Verdict.STORED:
            self._last_chunk_at = time.monotonic()
        elif verdict.bad:
            self.bad_chunks += verdict == Verdict.BAD_DIGEST
        if chunks.error is not None:
            raise UpdateError(chunks.error)
        return verdict

    def offer(self, transfer: Transfer) -> bool:
        """A later authenticated copy of this update came with ``transfer`` (unsigned: a hint).

        Chunks offered are requested from now on; for a format 1 job, a new URL joins the ones to
        try. True when the job changed (a format 1 job took the chunk size of this copy because
        nothing had arrived yet): the caller saves it.
        """
        if transfer.chunked:
            self._offered_chunks = True
            return self._adopt_chunk_size(transfer)
        url = transfer.url
        if url and self.job.signed is None and url not in self._urls and len(self._urls) < MAX_URLS:
            self._urls.append(url)
            _THROTTLE.log(
                logger,
                logging.INFO,
                "url",
                "update %s: another source offered: %s",
                self.job.update,
                url[:200],
            )
        return False

    def close(self) -> None:
        """Save what arrived and close the part file (the download resumes from there)."""
        if self._fetch is not None:
            self._fetch.cancel()
            self._fetch = None
        if self._chunks is not None:
            self._chunks.close()
            self._chunks = None

    def end(self) -> None:
        """The job is over (whatever the outcome): close, and stop receiving its chunk topic."""
        self.close()
        if self._routed:
            self._subscribe(f"{self.topic}/chunk/+", False)
            self._routed = False

    # -- the part file ------------------------------------------------------------------------------
    def _open_chunks(self) -> ChunkFile:
        if self._chunks is None:
            digests = self.job.signed.digests if self.job.signed is not None else None
            self._chunks = ChunkFile(self.part, self.job.size, self.job.chunk_size, digests)
        return self._chunks

    def _adopt_chunk_size(self, transfer: Transfer) -> bool:
        """Format 1 only: the chunk size is a hint; a different one replaces it while nothing arrived."""
        job = self.job
        if job.signed is not None or transfer.chunk_size in (None, job.chunk_size):
            return False
        chunks = self._open_chunks()
        if chunks.progress > 0 or replace(job, transfer=transfer).chunk_size == job.chunk_size:
            return False
        if self._fetch is not None:
            self._fetch.cancel()
            self._fetch = None
        chunks.discard()
        self._chunks = None
        self._outstanding.clear()
        job.transfer = transfer
        _THROTTLE.log(
            logger,
            logging.INFO,
            "size",
            "update %s: chunk size %s from a later copy",
            job.update,
            transfer.chunk_size,
        )
        return True

    # -- URLs ---------------------------------------------------------------------------------------
    def _drive_url(self, chunks: ChunkFile, now: float) -> bool:
        """Start, watch and replace URL fetches; True while one makes progress."""
        fetch = self._fetch
        if fetch is not None:
            self.bad_chunks += fetch.bad_chunks
            fetch.bad_chunks = 0
            if fetch.failed is None and fetch.running and now - fetch.last_good < self.policy.source_stall_s:
                return True
            self._give_up(fetch, now)
            return False
        if not self._urls or self._stop.is_set() or now < self._url_after:
            return False
        url = self._urls[self._next_url % len(self._urls)]
        self._next_url = (self._next_url + 1) % len(self._urls)
        self._fetch = UrlFetch(url, chunks, timeout_s=min(30.0, self.policy.source_stall_s)).start()
        return True

    def _give_up(self, fetch: UrlFetch, now: float) -> None:
        """Stop a URL that failed or stalled; one that failed is not tried again."""
        fetch.cancel()
        self._fetch = None
        why = fetch.failed or f"no bytes for {self.policy.source_stall_s:.0f} s"
        _THROTTLE.log(
            logger,
            logging.WARNING,
            "source",
            "update %s: %s: %s; trying another source",
            self.job.update,
            fetch.url[:200],
            why,
        )
        if fetch.failed is not None and fetch.url in self._urls:  # it will never give the signed bytes
            self._urls.remove(fetch.url)
        self._url_after = now + self.policy.chunk_retry_s
        # From now on chunks are asked for too, also while a URL is tried again: a dead web server
        # then costs one stall, not one per retry (both sources fill the same file).
        self._offered_chunks = True

    # -- chunks over MQTT ---------------------------------------------------------------------------
    def _drive_chunks(self, chunks: ChunkFile, now: float) -> None:
        if not self._routed:
            self._subscribe(f"{self.topic}/chunk/+", True)
            self._routed = True
            self._last_chunk_at = now
        self._outstanding = {i for i in self._outstanding if not chunks.received[i]}
        stalled = min(now - self._last_chunk_at, now - self._last_request_at) >= self.policy.chunk_retry_s
        if not self._outstanding or stalled:
            self._request_chunks(chunks)

    def _request_chunks(self, chunks: ChunkFile) -> None:
        missing = chunks.missing(self.policy.chunk_window)
        body = json.dumps({"device": self.device, "chunks": missing}).encode()
        if self._send(f"{self.topic}/request", body):
            self._outstanding = set(missing)
        self._last_request_at = time.monotonic()
        chunks.save()

    def _progress(self, fraction: float) -> None:
        """Report progress in steps of 10 % (and once at 100 %)."""
        if fraction - self._last_progress_sent >= 0.1 or (fraction >= 1.0 > self._last_progress_sent):
            self._last_progress_sent = fraction
            self._report(round(fraction, 3))
