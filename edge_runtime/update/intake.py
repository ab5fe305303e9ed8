"""What reaches the update manager from the broker: manifests and chunks, hostile until verified.

The manager's half that takes messages in (a mixin of :class:`~edge_runtime.update.manager.
UpdateManager`): ``submit`` and ``chunk_message`` run on paho's thread and only check sizes and
enqueue; the rest runs on the manager's thread. A message that fails authentication is counted
and ignored (refusals.py), never attributed to the update it claims; an authenticated one is
admitted, refused with its reason at a bounded rate, told its recorded outcome again (a replay),
or, for the update in progress, may only offer another source for the bytes (download.py).

Desired state (desired.py): a retained copy of an update already decided here changes nothing
and publishes nothing; one that must wait for the running job waits, and the newest waiting one
is considered when the job ends; an empty (cleared) message is nobody's update and is ignored.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import UpdateError
from edge_runtime.throttle import Throttle
from edge_runtime.update.admission import NotNewerError, check_admission
from edge_runtime.update.desired import DesiredState
from edge_runtime.update.download import Download
from edge_runtime.update.inbox import CHUNK, MANIFEST, Inbox
from edge_runtime.update.job import Job, JobState, Transfer
from edge_runtime.update.manifest import (
    MAX_ENVELOPE_BYTES,
    Envelope,
    Manifest,
    authenticate,
    is_newer,
    open_signed,
)
from edge_runtime.update.policy import UpdatePolicy
from edge_runtime.update.ports import Slot
from edge_runtime.update.refusals import Refusals
from edge_runtime.update.status import StatusReporter
from edge_runtime.update.store import ModelStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

logger = logging.getLogger("edge_runtime.update.manager")  # one logger for the manager's lines
_THROTTLE = Throttle(per_s=60.0, burst=5)  # lines that copies of a signed update can cause


class BusyError(UpdateError):
    """Another update is running and this one does not supersede it: it waits (desired state)."""


class Intake:
    """Messages in: size checks, authentication, admission, refusals, replays, chunks."""

    device: str
    groups: list[str]
    keys: list[Ed25519PublicKey]
    store: ModelStore
    slots: dict[str, list[Slot]]
    policy: UpdatePolicy
    status: StatusReporter
    refusals: Refusals
    inbox: Inbox
    desired: DesiredState
    job: Job | None
    stop_event: threading.Event

    # -- the manager's side (manager.py) ---------------------------------------------------------
    def _begin(self, env: Envelope, transfer: Transfer) -> None:
        raise NotImplementedError

    def _finish(self, outcome: str, reason: str | None) -> None:
        raise NotImplementedError

    def _on_chunk(self, topic: str, index: int, data: bytes) -> None:
        raise NotImplementedError

    def _downloader(self, job: Job) -> Download:
        raise NotImplementedError

    # -- on paho's thread ------------------------------------------------------------------------
    def submit(self, payload: bytes, topic: str = "", retained: bool = False) -> None:
        """An update message arrived on ``topic`` (called on paho's thread: it only checks the size
        and enqueues). ``retained``: the broker kept it (sent again at every connect)."""
        if not payload:  # a cleared desired update: not signed, so it changes nothing here
            return
        if len(payload) > MAX_ENVELOPE_BYTES:
            self.refusals.unauthenticated(
                f"update message is {len(payload)} bytes (limit {MAX_ENVELOPE_BYTES})"
            )
        elif not self.inbox.put(MANIFEST, (topic, retained), payload):
            self.refusals.dropped("update")

    def chunk_message(self, topic: str, data: bytes) -> None:
        """A message on ``<transfer topic>/chunk/<index>`` arrived (on paho's thread: enqueue only).

        The index must be plain ASCII digits: ``str.isdigit`` also accepts characters such as
        "²" that ``int`` refuses.
        """
        base, _, index = topic.rpartition("/chunk/")
        if not (index.isascii() and index.isdecimal() and len(index) <= 9):
            self.refusals.chunk("the index is not a number")
        elif not self.inbox.put(CHUNK, (base, int(index)), data):
            self.refusals.dropped("chunk")

    def _handle(self, kind: str, key: Any, payload: bytes) -> None:
        """One inbound message; whatever it holds, it cannot end the job by raising."""
        try:
            if kind == MANIFEST:
                topic, retained = key if key is not None else ("", False)
                self._on_manifest(payload, topic, retained)
            else:
                self._on_chunk(key[0], key[1], payload)
        except Exception as exc:  # a message we could not handle is dropped, never blamed on the job
            logger.debug("update: %s message not handled", kind, exc_info=True)
            if kind == MANIFEST:
                self.refusals.unauthenticated(f"not handled: {type(exc).__name__}: {exc}")
            else:
                self.refusals.chunk(f"not handled: {type(exc).__name__}: {exc}")

    # -- manifests, on the manager's thread -------------------------------------------------------
    def _on_manifest(self, payload: bytes, topic: str = "", retained: bool = False) -> None:
        try:
            signed = authenticate(payload, self.keys)
        except UpdateError as exc:  # belongs to no update, whatever id it claims
            self.refusals.unauthenticated(str(exc))
            return
        if retained and self._decided(signed.update_id):
            return  # the broker's copy at a (re)connect of what was decided here: nothing to do
        try:
            env = open_signed(signed)
        except UpdateError as exc:
            self.desired.mark(signed.update_id, "rejected", str(exc))
            self._refuse(signed.update_id, None, str(exc))
            return
        try:
            self._on_signed(env, topic, retained)
        except Exception as exc:  # authenticated: refused with the reason, never blamed on a job
            logger.debug("update %s: not handled", env.update_id, exc_info=True)
            reason = f"cannot process it: {type(exc).__name__}: {exc}"
            if self.job is not None and self.job.update == env.update_id:  # a copy: the job goes on
                _THROTTLE.log(logger, logging.WARNING, "copy", "update %s: a copy %s", env.update_id, reason)
            else:
                self._refuse(env.update_id, env.manifest, reason)

    def _decided(self, update: str) -> bool:
        """Update ``update`` ended here, or was refused before any byte (desired.json)."""
        if self.job is not None and self.job.update == update:
            return False  # in progress: a copy may still offer a source (_another_copy)
        return self.desired.handled(update) is not None or self.store.ended(update) is not None

    def _on_signed(self, env: Envelope, topic: str = "", retained: bool = False) -> None:
        job = self.job
        if job is not None and job.update == env.update_id:
            self._another_copy(job, env)  # QoS 1 redelivery, push again, or a replayed copy
            return
        ended = self.store.ended(env.update_id)
        if ended is not None:
            self._answer_replay(env, ended)
            return
        try:
            self._admit(env)
        except BusyError as exc:  # desired state: it waits for the running job (_reconsider)
            self.desired.hold(topic, env)
            _THROTTLE.log(logger, logging.INFO, "wait", "update %s waits: %s", env.update_id, exc)
            return
        except UpdateError as exc:
            self.desired.mark(env.update_id, "rejected", str(exc))
            if retained and isinstance(exc, NotNewerError):  # desired and already satisfied: no news
                _THROTTLE.log(logger, logging.INFO, "met", "update %s: already met (%s)", env.update_id, exc)
            else:
                self._refuse(env.update_id, env.manifest, str(exc))
            return
        self._begin(env, Transfer.hint(env.transfer, env.update_id))

    def _reconsider(self) -> None:
        """No job runs: the newest desired manifest that waited is taken as if delivered again."""
        while (taken := self.desired.take()) is not None:
            topic, env = taken
            if not self._decided(env.update_id):
                self._on_signed(env, topic, retained=True)
                return

    def _admit(self, env: Envelope) -> None:
        """Every check that needs no bytes; UpdateError with the reason."""
        check_admission(
            env,
            device=self.device,
            groups=self.groups,
            policy=self.policy,
            slots=self.slots,
            store=self.store,
        )
        if self.job is not None:
            m = env.manifest
            if not (self.job.state == JobState.DOWNLOADING and is_newer(m.version, self.job.version)):
                raise BusyError(f"busy with update {self.job.update} (version {self.job.version})")
            logger.info("update: %s supersedes %s", env.update_id, self.job.update)
            self._finish("rejected", f"superseded by version {m.version}")

    def _another_copy(self, job: Job, env: Envelope) -> None:
        """The update in progress again: its (unsigned) transfer may offer another source."""
        if job.state == JobState.DOWNLOADING and self._downloader(job).offer(
            Transfer.hint(env.transfer, env.update_id)
        ):
            self.store.save_job(job)

    def _answer_replay(self, env: Envelope, ended: dict[str, Any]) -> None:
        """An update that ended here already: its outcome is told again (never tried twice)."""
        outcome = str(ended.get("outcome"))
        if self.refusals.refused(env.update_id, f"already processed ({outcome})"):
            reason = None if outcome == "active" else ended.get("reason")
            self.status.publish(outcome, self.job, update=env.update_id, manifest=env.manifest, reason=reason)

    def _refuse(self, update: str, m: Manifest | None, reason: str) -> None:
        """An authenticated message refused: ``rejected`` for it, at a bounded rate."""
        if self.refusals.refused(update, reason):
            self.status.publish("rejected", self.job, update=update, manifest=m, reason=reason)
