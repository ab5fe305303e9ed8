"""The device side of model updates: a crash-safe state machine in its own thread.

    manifest -> verify signature, target, expiry, size, replay, downgrade      (rejected)
      -> downloading (MQTT chunks or URL, resumable)                          (rejected)
      -> verifying: size + sha256, safe extraction, install by one rename     (rejected)
      -> testing: each slot's trial (fresh backend, golden vectors, latency)  (rejected)
      -> swap between two frames, then a health window                        (rolled_back)
      -> active (committed; older versions pruned to ``keep``)

Every state is saved in ``job.json`` before it is entered and ``active.json`` is the single commit
point (see store.py), so a SIGKILL anywhere leaves the old model or the new one serving. States
are published on the retained ``P/D/model/status``; during the health window the state is still
``testing`` (step ``health_window``): ``active`` means committed.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import UpdateError
from edge_runtime.hashing import file_sha256
from edge_runtime.update import bundle
from edge_runtime.update.job import Job, JobState, Transfer
from edge_runtime.update.manifest import Envelope, Manifest, is_newer, peek_update_id, verify
from edge_runtime.update.ports import Candidate, Slot
from edge_runtime.update.store import BASE, Active, ModelStore
from edge_runtime.update.transfer import ChunkFile, http_download

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpdatePolicy:
    """Limits and the acceptance gate (from ``updates:`` in the config)."""

    max_bundle_bytes: int
    download_timeout_s: float
    chunk_window: int
    chunk_retry_s: float
    health_window_s: float
    max_errors: int
    max_latency_ms: float | None
    latency_factor: float
    keep: int


@dataclass
class _Swap:
    """The health window after a swap: what served before, counters at the swap."""

    previous: dict[str, Candidate]
    marks: dict[str, tuple[int, int, float]]
    until: float
    record: Active


def _no_checkpoint(_point: str) -> None:
    pass


class UpdateManager:
    """Consumes update manifests and chunks from the MQTT link; publishes model/status.

    ``checkpoint`` is the test seam: it is called with the name of each step as the job reaches it
    (accepted, downloading, downloaded, extracted, installed, tested, swapped, watching,
    committed). Only the crash tests pass one (update/faults.py); a daemon runs without.
    """

    def __init__(
        self,
        *,
        device: str,
        groups: list[str],
        keys: list[Ed25519PublicKey],
        store: ModelStore,
        slots: dict[str, list[Slot]],
        policy: UpdatePolicy,
        publish_status: Callable[[dict[str, Any]], None],
        send: Callable[[str, bytes], bool],
        subscribe: Callable[[str, bool], None],
        checkpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.device, self.groups, self.keys, self.store = device, groups, keys, store
        self.slots, self.policy = slots, policy
        self._publish_status, self._send, self._subscribe = publish_status, send, subscribe
        self._checkpoint = checkpoint or _no_checkpoint
        self.inbox: queue.Queue[tuple[str, Any, Any]] = queue.Queue(maxsize=2000)
        self.stop_event = threading.Event()
        self.job: Job | None = None
        self.last_status: dict[str, Any] | None = None
        self._chunks: ChunkFile | None = None
        self._last_chunk_at = 0.0
        self._last_request_at = 0.0
        self._outstanding: set[int] = set()
        self._last_progress_sent = -1.0
        self._swap: _Swap | None = None
        self._thread = threading.Thread(target=self._run, name="updates", daemon=True)

    # -- wiring ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Resume a saved job (if any), then serve the inbox."""
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the thread; an unfinished job stays on disk and resumes at the next start."""
        self.stop_event.set()
        self._thread.join(timeout)
        if self._chunks is not None:
            self._chunks.close()
            self._chunks = None

    def submit(self, payload: bytes) -> None:
        """An update manifest arrived (called from the dispatcher thread)."""
        self._offer(("manifest", payload, None))

    def chunk_message(self, topic: str, data: bytes) -> None:
        """A message on ``<transfer topic>/chunk/<index>`` arrived (called from the dispatcher)."""
        base, _, index = topic.rpartition("/chunk/")
        if index.isdigit():
            self._offer(("chunk", (base, int(index)), data))

    def _offer(self, item: tuple[str, Any, Any]) -> None:
        try:
            self.inbox.put_nowait(item)
        except queue.Full:  # a missing chunk is requested again later
            logger.debug("update: inbox full, %s dropped", item[0])

    # -- the loop ----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._resume()
        except Exception:
            logger.exception("update: cannot resume the saved job")
            if self.job is not None:
                self._finish("rejected", "could not resume after restart")
        while not self.stop_event.is_set():
            try:
                kind, a, b = self.inbox.get(timeout=0.2)
            except queue.Empty:
                kind = ""
            try:
                if kind == "manifest":
                    self._on_manifest(a)
                elif kind == "chunk":
                    self._on_chunk(a[0], a[1], b)
                self._tick()
            except Exception:  # the supervisor loop: log, end the job, keep serving
                logger.exception("update: unexpected failure")
                if self.job is not None:
                    self._fail("internal error (see the daemon log)")

    def _tick(self) -> None:
        job = self.job
        if job is None:
            return
        if job.state == JobState.DOWNLOADING and job.transfer.chunked:
            self._drive_chunks()
        elif job.state == JobState.DOWNLOADING:
            self._download_url()
        elif job.state == JobState.WATCHING:
            self._watch()
        if self.job is not None and self.job.state not in (JobState.DOWNLOADING, JobState.WATCHING):
            self._advance()

    # -- manifests -------------------------------------------------------------------------------
    def _on_manifest(self, payload: bytes) -> None:
        try:
            env = verify(payload, self.keys)
        except UpdateError as exc:
            self._reject_message(peek_update_id(payload), None, str(exc))
            return
        m = env.manifest
        if self.job is not None and self.job.update == env.update_id:
            return  # the update in progress, delivered again (QoS 1 may redeliver)
        try:
            transfer = self._admit(env)
        except UpdateError as exc:
            self._reject_message(env.update_id, m, str(exc))
            return
        self._begin(env, transfer)

    def _admit(self, env: Envelope) -> Transfer:
        """Every check that needs no bytes; UpdateError with the reason."""
        m, pol = env.manifest, self.policy
        m.check_target(self.device, self.groups)
        m.check_time()
        if m.size > pol.max_bundle_bytes:
            raise UpdateError(f"bundle is {m.size} bytes, over the limit of {pol.max_bundle_bytes}")
        slots = self.slots.get(m.name)
        if not slots:
            raise UpdateError(f"no model named {m.name!r} here (have: {', '.join(self.slots) or 'none'})")
        outcome = self.store.outcome(env.update_id)
        if outcome is not None:
            raise UpdateError(f"replay: update {env.update_id} was already processed ({outcome})")
        current = slots[0].version()
        if not is_newer(m.version, current):
            raise UpdateError(f"downgrade: version {m.version} is not newer than the active {current}")
        if self.job is not None:
            if not (self.job.state == JobState.DOWNLOADING and is_newer(m.version, self.job.version)):
                raise UpdateError(f"busy with update {self.job.update} (version {self.job.version})")
            logger.info("update: %s supersedes %s", env.update_id, self.job.update)
            self._finish("rejected", f"superseded by version {m.version}")
        return Transfer.check(env.transfer)

    def _reject_message(self, update: str | None, m: Manifest | None, reason: str) -> None:
        logger.warning("update %s rejected: %s", update or "?", reason)
        self._status("rejected", update=update, manifest=m, reason=reason)

    def _begin(self, env: Envelope, transfer: Transfer) -> None:
        m = env.manifest
        self.job = Job(
            update=env.update_id,
            name=m.name,
            version=m.version,
            sha256=m.sha256,
            size=m.size,
            transfer=transfer,
            state=JobState.DOWNLOADING,
            deadline=time.time() + self.policy.download_timeout_s,
            started=time.time(),
        )
        self.store.save_job(self.job)
        logger.info("update %s: %s version %s accepted; downloading", env.update_id, m.name, m.version)
        self._status("downloading", progress=0.0)
        self._checkpoint("accepted")

    # -- download ----------------------------------------------------------------------------------
    def _part(self) -> Path:
        assert self.job is not None
        return self.store.staging / f"{self.job.update}.part"

    def _chunk_topic(self) -> str:
        assert self.job is not None
        return str(self.job.transfer.topic)

    def _open_chunks(self) -> ChunkFile:
        if self._chunks is None:
            assert self.job is not None
            size, chunk_size = self.job.size, self.job.transfer.chunk_size
            self._chunks = ChunkFile(self._part(), size, int(chunk_size or 0))
            self._subscribe(f"{self._chunk_topic()}/chunk/+", True)
            self._last_chunk_at = time.monotonic()
        return self._chunks

    def _on_chunk(self, topic: str, index: int, data: bytes) -> None:
        job = self.job
        if job is None or job.state != JobState.DOWNLOADING or job.transfer.topic != topic:
            return
        chunks = self._open_chunks()
        if chunks.write(index, data):
            self._last_chunk_at = time.monotonic()
            if chunks.progress >= 0.5:
                self._checkpoint("downloading")

    def _drive_chunks(self) -> None:
        assert self.job is not None
        chunks = self._open_chunks()
        now = time.monotonic()
        if chunks.done:
            chunks.close()
            self._chunks = None
            self._subscribe(f"{self._chunk_topic()}/chunk/+", False)
            self._enter(JobState.VERIFYING)
            return
        if time.time() > self.job.deadline:
            self._fail(
                f"download timed out after {self.policy.download_timeout_s:.0f} s "
                f"({chunks.progress:.0%} received)"
            )
            return
        self._outstanding = {i for i in self._outstanding if not chunks.received[i]}
        stalled = min(now - self._last_chunk_at, now - self._last_request_at) >= self.policy.chunk_retry_s
        if not self._outstanding or stalled:
            self._request_chunks(chunks)
        if now - self._last_chunk_at > 1.0:
            chunks.save()
        self._progress(chunks.progress)

    def _request_chunks(self, chunks: ChunkFile) -> None:
        missing = chunks.missing(self.policy.chunk_window)
        body = json.dumps({"device": self.device, "chunks": missing}).encode()
        if self._send(f"{self._chunk_topic()}/request", body):
            self._outstanding = set(missing)
        self._last_request_at = time.monotonic()
        chunks.save()

    def _download_url(self) -> None:
        assert self.job is not None
        url = str(self.job.transfer.url)
        deadline = time.monotonic() + max(0.0, self.job.deadline - time.time())
        try:
            http_download(
                url,
                self._part(),
                self.job.size,
                stop=self.stop_event,
                deadline=deadline,
                progress=self._url_progress,
            )
        except UpdateError as exc:
            if self.stop_event.is_set():
                return  # resumes at the next start
            self._fail(str(exc))
            return
        self._enter(JobState.VERIFYING)

    def _url_progress(self, fraction: float) -> None:
        self._progress(fraction)
        if fraction >= 0.5:
            self._checkpoint("downloading")

    def _progress(self, fraction: float) -> None:
        if fraction - self._last_progress_sent >= 0.1 or (fraction >= 1.0 > self._last_progress_sent):
            self._last_progress_sent = fraction
            self._status("downloading", progress=round(fraction, 3))

    # -- verify, install, test, swap -------------------------------------------------------------------
    def _enter(self, state: JobState) -> None:
        assert self.job is not None
        self.job.state = state
        self.store.save_job(self.job)

    def _advance(self) -> None:
        """Run the blocking steps of the current job until it waits for something (or ends)."""
        assert self.job is not None
        try:
            if self.job.state == JobState.VERIFYING:
                self._checkpoint("downloaded")
                self._status("verifying")
                self._verify_and_install()
                self._enter(JobState.TESTING)
            if self.job.state == JobState.TESTING:
                self._checkpoint("installed")
                self._status("testing", step="golden_vectors")
                candidates = self._trial()
                self._checkpoint("tested")
                self._swap_in(candidates)
        except UpdateError as exc:
            self._fail(str(exc))

    def _verify_and_install(self) -> None:
        assert self.job is not None
        part = self._part()
        size = part.stat().st_size if part.exists() else -1
        if size != self.job.size:
            raise UpdateError(f"bundle is {size} bytes, the manifest says {self.job.size}")
        digest = file_sha256(part)
        if digest != self.job.sha256:
            raise UpdateError(f"sha256 mismatch: bundle {digest[:12]}..., manifest {self.job.sha256[:12]}...")
        self.job.verified = True
        tmp = self.store.staging / f"{self.job.update}.extract"
        if tmp.exists():
            shutil.rmtree(tmp)
        bundle.extract(part, tmp, max_bytes=4 * self.policy.max_bundle_bytes)
        bundle.check_contents(tmp, self.job.name, self.job.version)
        self._checkpoint("extracted")
        self.store.install(self.job.name, self.job.version, tmp)

    def _trial(self) -> dict[str, Candidate]:
        """A tested candidate per slot of the job's model; UpdateError (all of them closed) if one fails."""
        assert self.job is not None
        folder = self.store.folder(self.job.name, self.job.version)
        pol = self.policy
        loaded: dict[str, Candidate] = {}
        try:
            for slot in self.slots[self.job.name]:
                loaded[slot.key] = slot.trial(
                    folder, max_latency_ms=pol.max_latency_ms, latency_factor=pol.latency_factor
                )
        except BaseException:
            for key, candidate in loaded.items():
                self._slot(key).close(candidate)
            raise
        return loaded

    def _slot(self, key: str) -> Slot:
        assert self.job is not None
        return next(s for s in self.slots[self.job.name] if s.key == key)

    def _swap_in(self, candidates: dict[str, Candidate]) -> None:
        assert self.job is not None
        name, version = self.job.name, self.job.version
        old = self.store.active(name)
        previous = [old.version, *old.previous] if old else [BASE]
        record = Active(version=version, previous=previous, committed=False, update=self.job.update)
        self._enter(JobState.WATCHING)  # first: a restart from here on means "rolled back" unless committed
        self.store.set_active(name, record)  # uncommitted: a restart serves the previous version
        self._checkpoint("swapped")
        marks = {key: self._slot(key).counters() for key in candidates}
        before = {key: self._slot(key).swap(c) for key, c in candidates.items()}
        until = time.monotonic() + self.policy.health_window_s
        self._swap = _Swap(before, marks, until, record)
        logger.info(
            "update %s: %s version %s serving; health window %.0f s",
            self.job.update,
            name,
            version,
            self.policy.health_window_s,
        )
        self._status("testing", step="health_window")

    def _watch(self) -> None:
        assert self.job is not None and self._swap is not None
        self._checkpoint("watching")
        sw = self._swap
        for key in sw.previous:
            inferred, errors, total_ms = self._slot(key).counters()
            n0, e0, t0 = sw.marks[key]
            if errors - e0 > self.policy.max_errors:
                self._rollback(f"{errors - e0} frame(s) failed in the health window")
                return
            n, ms = inferred - n0, total_ms - t0
            budget = self.policy.max_latency_ms
            if budget is not None and n >= 5 and ms / n > budget:
                self._rollback(f"mean inference {ms / n:.1f} ms in the health window, budget {budget:.1f} ms")
                return
        if time.monotonic() >= sw.until:
            self._commit()

    def _commit(self) -> None:
        assert self.job is not None and self._swap is not None
        sw, name = self._swap, self.job.name
        sw.record.committed = True
        self.store.set_active(name, sw.record)
        self._checkpoint("committed")
        for key, candidate in sw.previous.items():
            self._slot(key).close(candidate)
        removed = self.store.prune(name)
        logger.info(
            "update %s: %s version %s active (pruned: %s)",
            self.job.update,
            name,
            self.job.version,
            ", ".join(removed) or "nothing",
        )
        self._swap = None
        self._finish("active", None)

    def _rollback(self, reason: str) -> None:
        assert self.job is not None and self._swap is not None
        sw, name = self._swap, self.job.name
        for key, candidate in sw.previous.items():
            self._slot(key).close(self._slot(key).swap(candidate))
        self.store.roll_back(name, sw.record)
        logger.warning("update %s: rolled back to the previous model: %s", self.job.update, reason)
        self._swap = None
        self._finish("rolled_back", reason)

    # -- endings -------------------------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        assert self.job is not None
        logger.warning("update %s rejected: %s", self.job.update, reason)
        self._finish("rejected", reason)

    def _finish(self, outcome: str, reason: str | None) -> None:
        job = self.job
        assert job is not None
        if self._chunks is not None:
            self._chunks.close()
            self._chunks = None
        if job.verified:  # unverified bytes prove nothing: the same update may come again
            self.store.record(job.update, job.name, job.version, outcome, reason)
        self._status(outcome, reason=reason)
        self.store.save_job(None)
        self.store.clean_staging()
        if outcome != "active":
            self._remove_unused_version(job)
        self.job = None
        self._last_progress_sent = -1.0
        self._last_request_at = 0.0
        self._outstanding = set()

    def _remove_unused_version(self, job: Job) -> None:
        record = self.store.active(job.name)
        if record is None or (record.version != job.version and job.version not in record.previous):
            folder = self.store.folder(job.name, job.version)
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)

    # -- status ---------------------------------------------------------------------------------------
    def _status(
        self,
        state: str,
        *,
        update: str | None = None,
        manifest: Manifest | None = None,
        reason: str | None = None,
        progress: float | None = None,
        step: str | None = None,
    ) -> None:
        job = self.job
        if manifest is not None or update is not None or job is None:  # about a message, not the job
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
        self.last_status = body
        self._publish_status(body)

    def _active_version(self, name: str | None) -> str | None:
        slots = self.slots.get(name or "") or next(iter(self.slots.values()), [])
        return slots[0].version() if slots else None

    # -- restart ---------------------------------------------------------------------------------------
    def _resume(self) -> None:
        try:
            job = self.store.job()
        except (KeyError, TypeError, ValueError) as exc:  # nothing to report it under: no update id
            logger.warning("update: job.json holds no resumable job (%s); discarded", exc)
            self.store.save_job(None)
            job = None
        if job is None:
            self.store.clean_staging()
            return
        self.job = job
        if job.state == JobState.WATCHING:
            record = self.store.active(job.name)
            if record is not None and record.version == job.version and record.committed:
                self.store.prune(job.name)  # it was committed just before the restart
                self._finish("active", None)
            else:  # the app served the previous version at start: the window never completed
                self._finish("rolled_back", "the daemon restarted before the health window ended")
            return
        if job.state == JobState.DOWNLOADING and time.time() > job.deadline:
            self._fail("download timed out (daemon restarted)")
            return
        self.store.clean_staging(keep={job.update})
        logger.info("update %s: resuming in state %s", job.update, job.state.value)
        if job.state == JobState.DOWNLOADING:
            self._status("downloading", progress=None)
        if job.state == JobState.VERIFYING:
            part = self._part()
            if not part.exists():
                self._fail("downloaded bundle missing after restart")
