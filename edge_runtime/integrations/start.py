"""Wiring of the integrations to a running daemon: ``start(daemon)`` -> :class:`Integrations`.

What is configured starts; a part that cannot (a port in use, an unreadable token file) is logged
at ERROR and left out, while the daemon goes on. The status page never starts without the
authentication its config asks for.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.config.files import read_secret
from edge_runtime.config.integrations import parse_listen
from edge_runtime.integrations.hastate import HomeAssistant
from edge_runtime.integrations.http import Auth, Routes, StatusServer
from edge_runtime.integrations.metrics import Metrics, MetricsExporter
from edge_runtime.integrations.ports import DaemonView, pipeline_views
from edge_runtime.integrations.render import annotate
from edge_runtime.integrations.snapshots import SnapshotHolder, SnapshotPublisher, SnapshotTrigger
from edge_runtime.integrations.status import RecentErrors, StatusReader

logger = logging.getLogger(__name__)


class Integrations:
    """The running integrations of one daemon; :meth:`close` stops them (before the link stops)."""

    def __init__(self, daemon: DaemonView) -> None:
        cfg = daemon.cfg
        self.daemon = daemon
        self.holders = {p.name: _holder(p.name, cfg) for p in cfg.pipelines}
        self.metrics: Metrics | None = None
        self.exporter: MetricsExporter | None = None
        self.server: StatusServer | None = None
        self.snapshots: SnapshotPublisher | None = None
        self.errors = RecentErrors()
        self.home_assistant: HomeAssistant | None = None
        self._watched: set[str] = set()
        # A watched pipeline keeps each frame until its result is committed (a few frames more in
        # memory: 6 MB each at 1080p), so only what some part uses is watched.
        uses = cfg.http.listen is not None or cfg.home_assistant.enabled
        for pc in cfg.pipelines:
            if uses or pc.snapshots is not None:
                self.watch(pc.name)

    def watch(self, pipeline: str) -> None:
        """Give ``pipeline``'s frames and results to its holder from now on (idempotent)."""
        for p in pipeline_views(self.daemon):
            if p.name == pipeline and pipeline not in self._watched:
                p.keep_frames = True
                p.observers.append(self.holders[p.name].offer)
                self._watched.add(pipeline)

    def annotated(self, pipeline: str, max_height: int = 4320) -> np.ndarray | None:
        """``pipeline``'s latest frame with its own result drawn on it (the ``snapshot`` command's
        image); None until a result is kept (the first call starts keeping them)."""
        holder = self.holder(pipeline)
        pair = holder.latest_pair() if holder is not None else None
        return None if pair is None else annotate(pair[0], pair[1], max_height)

    def holder(self, pipeline: str) -> SnapshotHolder | None:
        """A pipeline's latest frame and result (the ``snapshot`` command renders from it). A
        pipeline nothing watched until now is watched from this call on: its holder has a frame
        once the next result is committed."""
        self.watch(pipeline)
        return self.holders.get(pipeline)

    def start(self) -> None:
        """Start each configured part; one that fails is logged and left out (the daemon goes on)."""
        for part in (
            self._start_metrics,
            self._start_snapshots,
            self._start_http,
            self._start_home_assistant,
        ):
            try:
                part()
            except Exception:  # an integration must never keep the daemon from running
                logger.exception("integrations: %s failed; going on without it", part.__name__)

    def _start_snapshots(self) -> None:
        cfg = self.daemon.cfg
        topics = {
            pc.name: (f"{self.daemon.topics.base}/snapshot/{pc.name}", pc.snapshots.retain)
            for pc in cfg.pipelines
            if pc.snapshots is not None and pc.name in {p.name for p in pipeline_views(self.daemon)}
        }
        if topics:
            self.snapshots = SnapshotPublisher(self.holders, topics, self._publish_snapshot)
            self.snapshots.start()

    def _start_metrics(self) -> None:
        cfg = self.daemon.cfg.metrics
        if cfg.listen is None and cfg.textfile is None:
            return
        self.metrics = Metrics(self.daemon)
        for p in pipeline_views(self.daemon):
            p.observers.append(self.metrics.observer(p.name))
        shared = cfg.listen is not None and cfg.listen == self.daemon.cfg.http.listen  # the page serves it
        host, port = parse_listen(cfg.listen) if cfg.listen is not None and not shared else (None, None)
        try:
            self.exporter = MetricsExporter(self.metrics, host, port, cfg.textfile, cfg.textfile_interval_s)
        except OSError as exc:
            logger.error("metrics: cannot listen on %s: %s; no metrics endpoint", cfg.listen, exc)

    def _start_http(self) -> None:
        cfg = self.daemon.cfg.http
        if cfg.listen is None:
            return
        try:
            auth = Auth(_secret(cfg.token_file), _secret(cfg.basic_auth_file))
        except (OSError, ValueError) as exc:
            logger.error("http: no status page: its credentials cannot be read: %s", exc)
            return
        routes = Routes(
            StatusReader(self.daemon, self.errors, cfg.stall_s, self.holders),
            self.holders,
            self.metrics.exposition if self.metrics is not None else None,
            auth,
            cfg.refresh_s,
        )
        host, port = parse_listen(cfg.listen)
        try:
            self.server = StatusServer(host, port, routes, cfg.max_threads)
        except OSError as exc:
            logger.error("http: no status page: cannot listen on %s: %s", cfg.listen, exc)
            return
        logging.getLogger().addHandler(self.errors)

    def _start_home_assistant(self) -> None:
        cfg = self.daemon.cfg
        record = cfg.outbox.path.parent / "home-assistant.json"
        version = str(self.daemon.status().get("version", ""))
        ha = HomeAssistant(cfg.home_assistant, self.daemon, self.holders, version, record=record)
        if not cfg.home_assistant.enabled:
            ha.remove_previous()
            return
        ha.start()
        self.home_assistant = ha

    def _publish_snapshot(self, topic: str, jpeg: bytes, retain: bool) -> None:
        link = self.daemon.link
        if link is not None:
            link.publish(topic, jpeg, 0, retain)

    def close(self) -> None:
        """Stop every part (the pipelines' observers stay: they only keep references)."""
        logging.getLogger().removeHandler(self.errors)
        for part in (self.home_assistant, self.snapshots, self.server, self.exporter):
            if part is not None:
                try:
                    part.close()
                except Exception:  # the rest must still stop
                    logger.exception("integrations: stopping %s failed", type(part).__name__)


def start_integrations(daemon: DaemonView) -> Integrations:
    """The integrations the daemon's config asks for, started (docs/integrations.md)."""
    integrations = Integrations(daemon)
    integrations.start()
    return integrations


def _holder(name: str, cfg: Any) -> SnapshotHolder:
    pc = next(p for p in cfg.pipelines if p.name == name)
    snap = pc.snapshots
    if snap is None:
        return SnapshotHolder(name)
    trigger = SnapshotTrigger(snap.labels, snap.min_interval_s, snap.every_s)
    return SnapshotHolder(name, max_height=snap.max_height, quality=snap.quality, trigger=trigger)


def _secret(name: Path | None) -> bytes | None:
    """A token or USER:PASSWORD file: an absolute path, or a systemd credential's name."""
    if name is None:
        return None
    path = name
    if not name.is_absolute():
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds:
            raise ValueError(f"{name}: a relative name is a systemd credential, and there are none here")
        path = Path(creds) / name
    value = read_secret(path).strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value
