"""Remote configuration: signed config documents on ``P/D/config/desired`` (or a group's), applied
like a reload, watched for a health window, rolled back by the device itself (docs/control.md).

One ``config`` thread handles the documents; paho's thread keeps only the latest message per
topic. A document is authenticated before anything in it is read, must be newer than every
version accepted before, is checked by the same loader as ``validate`` (the reason names the key
and line), must not change who the device is or whom it trusts, and is then run through the
service (:class:`~edge_runtime.control.ports.Supervisor`). The outcome is reported retained on
``P/D/config/reported``. What runs at start is decided by :meth:`RemoteConfig.source` (the rule
in the README).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge_runtime.config.loader import collect_problems
from edge_runtime.config.sections import Config
from edge_runtime.control import envelope
from edge_runtime.control.checks import check_document
from edge_runtime.control.configstore import ConfigStore, file_digest
from edge_runtime.control.envelope import ConfigDoc
from edge_runtime.control.ports import Supervisor
from edge_runtime.errors import ControlError
from edge_runtime.throttle import Throttle

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = envelope.MAX_CONFIG_BYTES + 8 * 1024  # the YAML, escaped a little, and a signature


class RemoteConfig:
    """Desired -> checked -> applied -> watched -> applied | rejected | rolled_back."""

    def __init__(self, cfg: Config, config_path: Path) -> None:
        self.config_path, self.folder = config_path, config_path.resolve().parent
        self.running = cfg  # the config the daemon runs now
        c, prefix, device = cfg.control, cfg.mqtt.topic_prefix, cfg.device.id
        self.store = ConfigStore(c.state_dir, keep=c.keep)
        self.window_s, self.device, self.groups = c.health_window_s, device, list(cfg.device.groups)
        self.keys = envelope.load_keys(list(cfg.updates.public_keys))
        self.reported_topic = f"{prefix}/{device}/config/reported"
        self.desired_topics = [f"{prefix}/{device}/config/desired"]
        self.desired_topics += [f"{prefix}/groups/{g}/config/desired" for g in self.groups]
        self.supervisor: Supervisor | None = None
        self._pending: dict[str, bytes] = {}
        self._unsent: list[bytes] = []
        self._lock = threading.RLock()  # the store and the reports (the service's thread too)
        self._intake = threading.Condition()  # only _pending: paho's thread never waits on disk I/O
        self._stop = threading.Event()
        self._log = Throttle(per_s=60.0, burst=5)
        self._refusals = Throttle(per_s=10.0, burst=1)  # reports of unauthenticated documents
        self._thread = threading.Thread(target=self._run, name="config", daemon=True)

    # -- what runs ---------------------------------------------------------------------------
    def source(self) -> tuple[Path, Path | None]:
        """The config file to load now and the folder its relative paths are in (None: its own).

        The rule: the last remote config that passed its health window runs, unless the local
        file changed since it was applied; then the local file wins and the remote one is dropped.
        """
        with self._lock:
            active = self.store.active
            if active is None:
                return self.config_path, None
            if file_digest(self.config_path) != active["base"]:
                self.drop(f"the local file {self.config_path} changed since it was applied: the file wins")
                return self.config_path, None
            return self.store.path(active), self.folder

    def drop(self, why: str) -> None:
        """Stop using the active remote config (reported ``rolled_back`` with ``why``)."""
        with self._lock:
            active = self.store.active
            if active is None:
                return
            self.store.state["active"] = None
            self.store.save()
            logger.warning("remote config v%s dropped: %s", active["version"], why)
            self._report("rolled_back", active["version"], active["sha256"], why)

    @property
    def on_trial(self) -> bool:
        """A remote config is in its health window now (a reload waits for the outcome)."""
        with self._lock:
            return self.store.trial is not None

    def startup(self, local: Config) -> Config:
        """The config to start with (the service's first start).

        A remote config still on trial here means the daemon died while trying it: it is rolled
        back (reported) and what ran before it is used.
        """
        with self._lock:
            trial = self.store.trial
            if trial is not None:
                self.store.state["trial"] = None
                self.store.save()
                why = (
                    "the daemon stopped while trying it (a crash at start?); the last config that worked runs"
                )
                logger.error("remote config v%s rolled back: %s", trial["version"], why)
                self._report("rolled_back", trial["version"], trial["sha256"], why)
        path, folder = self.source()
        self.running = local
        if folder is None:
            return local
        cfg, problems = collect_problems(path, folder=folder)
        if cfg is None:  # e.g. a file it names is gone: the local file is what is left
            self.drop(f"it no longer loads ({'; '.join(problems[:3])}); the local file runs")
            return local
        logger.info("running remote config %s (control.state_dir; the rule in the README)", path.name)
        self.running = cfg
        return cfg

    # -- intake --------------------------------------------------------------------------------
    def offer(self, topic: str, payload: bytes) -> None:
        """paho's thread: keep the latest message per desired topic (bounded), wake the thread."""
        if len(payload) > MAX_DOCUMENT_BYTES:
            self._log.log(
                logger, logging.WARNING, "big", "remote config: a %d-byte message ignored", len(payload)
            )
            return
        with self._intake:
            self._pending[topic] = payload
            self._intake.notify()

    def start(self, supervisor: Supervisor) -> None:
        """Handle documents from now on; reports not sent yet go out."""
        self.supervisor = supervisor
        self.started()
        self._thread.start()

    def started(self) -> None:
        """A daemon (re)started: send the reports that found none."""
        with self._lock:
            unsent, self._unsent = self._unsent, []
            for payload in unsent:
                self._send(payload)

    def close(self) -> None:
        """Stop the thread (a trial in progress ends; at the next start it counts as failed)."""
        self._stop.set()
        with self._intake:
            self._intake.notify()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def reload(self) -> None:
        """The ``reload`` command: as SIGHUP."""
        if self.supervisor is not None:
            self.supervisor.reload()

    def republish(self) -> list[str]:
        """The last report again, if there is one."""
        with self._lock:
            body = self.store.state.get("report")
            if body is None:
                return []
            self._send(json.dumps(body).encode())
        return [self.reported_topic]

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._intake:
                while not self._pending and not self._stop.is_set():
                    self._intake.wait(1.0)
                if self._stop.is_set():
                    return
                topic = next(iter(self._pending))
                payload = self._pending.pop(topic)
            try:
                self._handle(payload)
            except Exception:  # the config thread must outlive any one document
                logger.exception("remote config: handling a document failed")

    # -- one document ----------------------------------------------------------------------------
    def _handle(self, payload: bytes) -> None:
        digest = hashlib.sha256(payload).hexdigest()
        if not payload or self.store.seen(digest):
            return  # a cleared topic, or the same retained document read again: nothing to do
        with self._lock:
            self.store.remember(digest)
        try:
            message = envelope.read_json(payload, max_bytes=MAX_DOCUMENT_BYTES, what="config document")
            if not envelope.is_envelope(message):
                raise ControlError("not a signed config document (fleet config signs one)")
            signed = envelope.authenticate(message, self.keys)
        except ControlError as exc:  # unauthenticated: reported rarely, so outsiders cannot churn it
            self._log.log(logger, logging.WARNING, "unauth", "remote config ignored: %s", exc)
            if self._refusals.allow() is not None:
                self._report("rejected", None, digest, str(exc))
            return
        version: int | None = None
        try:
            doc = envelope.open_document(signed, ConfigDoc)
            version = doc.version
            doc.check_target(self.device, self.groups)
            cfg, text = self._check(doc)
        except ControlError as exc:
            logger.warning("remote config v%s rejected: %s", version, exc)
            self._report("rejected", version, signed.sha256, str(exc))
            return
        self._apply(doc, signed.sha256, cfg, text)

    def _check(self, doc: ConfigDoc) -> tuple[Config, str]:
        """The document as a Config and the text to store, or ControlError: not newer, invalid,
        locked keys, secrets. A document without ``device:`` (one for a group) keeps this
        device's own section: it is put in front of the text."""
        with self._lock:
            active = self.store.active
            floor = max(int(self.store.state["max_version"]), int(active["version"]) if active else 0)
        if doc.version <= floor:
            raise ControlError(f"version {doc.version} is not newer than version {floor} (accepted before)")
        return check_document(
            doc, self.running, scratch=self.store.folder / "candidate.yaml", folder=self.folder
        )

    def _apply(self, doc: ConfigDoc, sha256: str, cfg: Config, text: str) -> None:
        """Run it, watch the health window, keep it or go back."""
        assert self.supervisor is not None
        with self._lock:
            name = self.store.write(doc.version, sha256, text)
            entry = {
                "version": doc.version,
                "sha256": sha256,
                "file": name,
                "base": file_digest(self.config_path),
            }
            self.store.state["trial"] = entry
            self.store.save()
        previous = self.running
        logger.info("remote config v%s: applying (health window %.0f s)", doc.version, self.window_s)
        failed = self.supervisor.swap(cfg)
        problem = f"did not start: {failed}" if failed else self._watch()
        with self._lock:
            self.store.state["trial"] = None
            if problem is None:
                self.running = cfg
                self.store.state["active"] = entry
                self.store.state["max_version"] = doc.version
            self.store.save()
            self.store.trim()
        if problem is None:
            logger.info("remote config v%s applied", doc.version)
            self._report("applied", doc.version, sha256, None)
            return
        logger.error("remote config v%s rolled back: %s", doc.version, problem)
        if not failed:
            self.supervisor.swap(previous)
        self._report("rolled_back", doc.version, sha256, problem)

    def _watch(self) -> str | None:
        """None once the new daemon is healthy; else why it was not within the window."""
        assert self.supervisor is not None
        deadline = time.monotonic() + self.window_s
        while True:
            problem = self.supervisor.problems()
            if problem is None:
                return None
            if time.monotonic() >= deadline or self._stop.is_set():
                return f"not healthy within {self.window_s:g} s (control.health_window_s): {problem}"
            self._stop.wait(0.5)

    # -- reports -------------------------------------------------------------------------------------
    def _report(self, state: str, version: int | None, sha256: str, reason: str | None) -> None:
        active = self.store.active
        body: dict[str, Any] = {
            "version": version,
            "sha256": sha256,
            "state": state,
            "reason": reason,
            "at": round(time.time(), 3),
            "device": self.device,
            "running_version": int(active["version"]) if active else 0,
        }
        with self._lock:
            self.store.state["report"] = body
            self.store.save()
            self._send(json.dumps(body).encode())

    def _send(self, payload: bytes) -> None:
        if self.supervisor is None or not self.supervisor.report(self.reported_topic, payload):
            self._unsent = [*self._unsent, payload][-8:]
