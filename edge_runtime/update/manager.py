"""The device side of model updates: a crash-safe state machine in its own thread.

    manifest -> verify signature, target, expiry, size, replay, downgrade      (rejected)
      -> downloading: MQTT chunks or URL, resumable (download.py)              (rejected)
      -> verifying: size + sha256, safe extraction, install by one rename      (rejected)
      -> testing: each slot's trial: fresh backend, golden vectors, latency    (rejected)
      -> watching: swap between two frames, then a health window               (rolled_back)
      -> active (committed; older versions pruned to ``keep``)

What arrives (manifests, chunks) is intake.py's; the admission checks admission.py's; testing and
the health window acceptance.py's.

Every state is saved in ``job.json`` (job.py) before it is entered and ``active.json`` is the
single commit point (see store.py), so a SIGKILL anywhere leaves the old model or the new one
serving. States are published on the retained ``P/D/model/status`` (status.py); during the
health window the state is still ``testing`` (step ``health_window``): ``active`` means committed.
The daemon's side is behind ports.py; what serves at start is startup.py's.

Inbound messages are hostile until verified (refusals.py): one that fails authentication is
counted and ignored, never attributed to the update it claims; a later authenticated copy of the
update in progress can only offer another source for its bytes (download.py). An exception while
handling a message drops that message; one while a job runs ends the job with its reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.config.sections import DeviceConfig, UpdatesConfig
from edge_runtime.errors import UpdateError
from edge_runtime.update import bundle, faults
from edge_runtime.update.acceptance import HealthWindow, trial_all
from edge_runtime.update.desired import DesiredState
from edge_runtime.update.download import Download
from edge_runtime.update.inbox import Inbox
from edge_runtime.update.intake import Intake
from edge_runtime.update.job import Job, JobState, Transfer
from edge_runtime.update.manifest import (
    Envelope,
    load_public_key,
)
from edge_runtime.update.policy import UpdatePolicy
from edge_runtime.update.ports import Candidate, Link, Slot
from edge_runtime.update.refusals import Refusals
from edge_runtime.update.startup import resumed_ending
from edge_runtime.update.status import StatusReporter
from edge_runtime.update.store import BASE, Active, ModelStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["UpdateManager", "UpdatePolicy", "open_manager"]

logger = logging.getLogger(__name__)


def _no_checkpoint(_point: str) -> None:
    pass


class UpdateManager(Intake):
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
        link: Link,
        topic_prefix: str,
        checkpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.device, self.groups, self.keys, self.store = device, groups, keys, store
        self.slots, self.policy, self.link = slots, policy, link
        self.topic_prefix = topic_prefix  # chunks of update <id> travel on P/updates/<id>
        self.status = StatusReporter(device, slots, publish_status)
        self.refusals = Refusals()
        self._checkpoint = checkpoint or _no_checkpoint
        self.inbox = Inbox()
        self.desired = DesiredState(store.root)
        self.stop_event = threading.Event()
        self.job: Job | None = None
        self._download: Download | None = None
        self._window: HealthWindow | None = None
        self._thread = threading.Thread(target=self._run, name="updates", daemon=True)

    # -- wiring ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Resume a saved job (if any), then serve the inbox."""
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the thread; an unfinished job stays on disk and resumes at the next start."""
        self.stop_event.set()
        if self._thread.ident is not None:  # started (a daemon whose start failed never did)
            self._thread.join(timeout)
        if self._download is not None:
            self._download.close()

    @property
    def running(self) -> bool:
        """The thread is still inside a step (verifying, extracting, testing a bundle)."""
        return self._thread.is_alive()

    def listen(self, manifest_topics: list[str]) -> None:
        """Take the manifests published on these topics (routed before the link connects)."""
        for topic in manifest_topics:  # desired state: the broker's retained copies are told apart
            self.link.route_retained(topic, lambda topic, payload, kept: self.submit(payload, topic, kept))

    def _send(self, topic: str, body: bytes) -> bool:
        """A chunk request (QoS 0, straight to the link: a lost one is asked again)."""
        return self.link.publish(topic, body, qos=0) is not None

    def _subscribe(self, topic_filter: str, on: bool) -> None:
        """Route a download's chunk topic here (``on``), or stop."""
        self.link.route(topic_filter, self.chunk_message if on else None)

    def counters(self) -> dict[str, int]:
        """Refused update traffic since the start (health ``updates``, docs/mqtt.md)."""
        return self.refusals.snapshot()

    # -- the loop ----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._resume()
        except Exception:
            logger.exception("update: cannot resume the saved job")
            if self.job is not None:
                self._end_after_failure("could not resume after restart")
        while not self.stop_event.is_set():
            item = self.inbox.get(timeout=0.2)
            if item is not None:
                self._handle(*item)
            try:
                self._tick()
            except Exception as exc:  # the supervisor loop: log, end the job with why, keep serving
                logger.exception("update: unexpected failure")
                if self.job is not None:
                    step = self.job.state.value
                    self._end_after_failure(f"unexpected error while {step}: {type(exc).__name__}: {exc}")

    def _end_after_failure(self, reason: str) -> None:
        try:
            self._fail(reason)
        except Exception:  # cannot even record the ending (disk?): forget the job in memory
            logger.exception("update: cannot end the job cleanly")
            if self._download is not None:
                self._download.close()
            self.job, self._download, self._window = None, None, None

    def _tick(self) -> None:
        job = self.job
        if job is None:
            self._reconsider()  # a desired update that waited for the job that just ended
            return
        if job.state == JobState.DOWNLOADING:
            self._download_step(job)
        elif job.state == JobState.WATCHING:
            self._watch(job)
        if self.job is not None and self.job.state not in (JobState.DOWNLOADING, JobState.WATCHING):
            self._advance(self.job)

    def _begin(self, env: Envelope, transfer: Transfer) -> None:
        m = env.manifest
        job = Job.begin(env.update_id, m, transfer, download_timeout_s=self.policy.download_timeout_s)
        self.store.save_job(job)  # before the job exists: a failure here refuses the message
        self.job = job
        logger.info("update %s: %s version %s accepted; downloading", env.update_id, m.name, m.version)
        self.status.publish("downloading", job, progress=0.0)
        self._checkpoint("accepted")

    # -- download ----------------------------------------------------------------------------------
    def _part(self, job: Job) -> Path:
        return self.store.staging / f"{job.update}.part"

    def _downloader(self, job: Job) -> Download:
        if self._download is None:
            self._download = Download(
                job,
                self._part(job),
                self.policy,
                device=self.device,
                topic=f"{self.topic_prefix}/updates/{job.update}",
                send=self._send,
                subscribe=self._subscribe,
                progress=lambda fraction: self.status.publish("downloading", job, progress=fraction),
                checkpoint=self._checkpoint,
                stop=self.stop_event,
            )
        return self._download

    def _on_chunk(self, topic: str, index: int, data: bytes) -> None:
        job = self.job
        if job is None or job.state != JobState.DOWNLOADING:
            self.refusals.chunk("no download in progress")
            return
        try:
            verdict = self._downloader(job).on_chunk(topic, index, data)
        except UpdateError as exc:  # the part file cannot be written: this device's problem
            self._fail(str(exc))
            return
        if verdict.bad:
            self.refusals.chunk(f"chunk {index} of update {job.update}: {verdict.value.replace('_', ' ')}")

    def _download_step(self, job: Job) -> None:
        try:
            done = self._downloader(job).step()
        except UpdateError as exc:
            self._fail(str(exc))
            return
        if done:
            self._download = None
            self._enter(job, JobState.VERIFYING)

    # -- verify, install, test, swap -------------------------------------------------------------------
    def _enter(self, job: Job, state: JobState) -> None:
        job.state = state
        self.store.save_job(job)

    def _advance(self, job: Job) -> None:
        """Run the blocking steps of the current job until it waits for something (or ends)."""
        try:
            if job.state == JobState.VERIFYING:
                self._checkpoint("downloaded")
                self.status.publish("verifying", job)
                self._verify_and_install(job)
                self._enter(job, JobState.TESTING)
            if job.state == JobState.TESTING:
                self._checkpoint("installed")
                self.status.publish("testing", job, step="golden_vectors")
                candidates = trial_all(
                    self.slots[job.name], self.store.folder(job.name, job.version), self.policy
                )
                self._checkpoint("tested")
                self._swap_in(job, candidates)
        except UpdateError as exc:
            self._fail(str(exc))

    def _verify_and_install(self, job: Job) -> None:
        part = self._part(job)
        bundle.check_bytes(part, job.size, job.sha256)
        job.verified = True
        tmp = self.store.staging / f"{job.update}.extract"
        bundle.unpack(part, tmp, job.name, job.version, max_bytes=4 * self.policy.max_bundle_bytes)
        self.slots[job.name][0].check_bundle(tmp)  # model.yaml and the files it names, no runtime yet
        self._checkpoint("extracted")
        self.store.install(job.name, job.version, tmp)

    def _swap_in(self, job: Job, candidates: dict[str, Candidate]) -> None:
        old = self.store.active(job.name)
        previous = [old.version, *old.previous] if old else [BASE]
        record = Active(version=job.version, previous=previous, committed=False, update=job.update)
        # first: a restart from here on means "rolled back" unless committed
        self._enter(job, JobState.WATCHING)
        self.store.set_active(job.name, record)  # uncommitted: a restart serves the previous version
        self._checkpoint("swapped")
        self._window = HealthWindow.open(job.name, self.slots[job.name], candidates, record, self.policy)
        self.status.publish("testing", job, step="health_window")

    def _watch(self, job: Job) -> None:
        window = self._window
        assert window is not None
        self._checkpoint("watching")
        reason = window.verdict()
        if reason is not None:
            window.roll_back(self.store, reason)
        elif window.over:
            window.commit(self.store, self._checkpoint)
        else:
            return
        self._window = None
        self._finish("active" if reason is None else "rolled_back", reason)

    # -- endings -------------------------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        assert self.job is not None
        logger.warning("update %s rejected: %s", self.job.update, reason)
        self._finish("rejected", reason)

    def _finish(self, outcome: str, reason: str | None) -> None:
        job = self.job
        assert job is not None
        if self._download is not None:
            self._download.end()
            self._download = None
        if job.verified:  # unverified bytes prove nothing: the same update may come again
            self.store.record(job.update, job.name, job.version, outcome, reason)
        self.status.publish(outcome, job, reason=reason)
        self.store.save_job(None)
        self.store.clean_staging()
        if outcome != "active":
            self.store.remove_unused(job.name, job.version)
        self.job = None

    # -- restart ---------------------------------------------------------------------------------------
    def _resume(self) -> None:
        job = self.store.job()
        if job is None:
            self.store.clean_staging()
            return
        self.job = job
        ending = resumed_ending(self.store, job)
        if ending is not None:
            outcome, reason = ending
            if outcome == "rejected":
                logger.warning("update %s rejected: %s", job.update, reason)
            self._finish(outcome, reason)
            return
        self.store.clean_staging(keep={job.update})
        logger.info("update %s: resuming in state %s", job.update, job.state.value)
        if job.state == JobState.DOWNLOADING:
            self.status.publish("downloading", job, progress=None)
        if job.state == JobState.VERIFYING and not self._part(job).exists():
            self._fail("downloaded bundle missing after restart")


def open_manager(
    uc: UpdatesConfig,
    *,
    device: DeviceConfig,
    store: ModelStore,
    slots: dict[str, list[Slot]],
    link: Link,
    topic_prefix: str,
    publish_status: Callable[[dict[str, Any]], None],
) -> UpdateManager:
    """The manager the config's ``updates:`` section describes, for ``device``'s slots.

    The crash tests' fault hook is installed only when EDGE_RUNTIME_FAULT is set (faults.py).
    """
    return UpdateManager(
        device=device.id,
        groups=device.groups,
        keys=[load_public_key(p) for p in uc.public_keys],
        store=store,
        slots=slots,
        policy=UpdatePolicy.of(uc),
        publish_status=publish_status,
        link=link,
        topic_prefix=topic_prefix,
        checkpoint=faults.from_environment(),
    )
