"""The daemon as a service: signals, config reload, readiness, status and the watchdog.

``edge-runtime run CONFIG`` runs one :class:`~edge_runtime.app.Daemon` under this supervisor:

* ``READY=1`` once the daemon has started: models loaded, outbox open, sources started;
* ``STATUS=`` every ``health.interval_s`` (broker connected?, fps per pipeline, outbox backlog);
* ``WATCHDOG=1`` every half ``WatchdogSec=`` while every pipeline makes progress
  (:mod:`edge_runtime.health.watchdog` states the rule);
* SIGHUP: ``RELOADING=1``, then the new config is checked. When it is valid, the running daemon
  is stopped cleanly and a new one started from it, in this process; when it is not, the running
  one goes on and one log line says why (``FILE:LINE: key: message``). Either way ``READY=1``
  follows. Should the new config pass the checks and still fail to start (no pipeline can run),
  the previous config is started again.
* SIGTERM/SIGINT: ``STOPPING=1``, an orderly stop, exit 0.

While a reload swaps the daemon the watchdog has no pipelines to watch and keeps pinging: the
swap is bounded (stopping takes at most a few seconds, then model loading).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from edge_runtime.app import Daemon
from edge_runtime.config.loader import collect_problems
from edge_runtime.config.sections import Config
from edge_runtime.control import RemoteConfig
from edge_runtime.errors import OutboxClosedError, OutboxUnavailableError
from edge_runtime.health.logformat import set_format
from edge_runtime.health.notify import Notifier
from edge_runtime.health.watchdog import Progress, Watchdog, progress_of

logger = logging.getLogger(__name__)

RELOAD_PROBLEMS_LOGGED = 5  # of a rejected config's problems, in the one ERROR line of a reload


def leave(code: int, grace_s: float = 2.0) -> int:
    """``code`` once every other thread has ended; if one has not within ``grace_s``, exit now.

    A thread inside a native call that no flag interrupts (a camera's open or read in
    OpenCV/FFmpeg, waiting for a network camera that went silent) must not meet the
    interpreter's finalisation: when the call returns into OpenCV's C++ with the interpreter
    gone, the thread is unwound through frames that forbid it and the C++ runtime aborts the
    process (``terminate called without an active exception``, SIGABRT after "stopped
    cleanly"; a slow board or a hung camera makes that likely). By now the daemon has stopped:
    the outbox is committed and closed, the broker link closed. So the logs are flushed and the
    process ends without finalisation (``os._exit``), with ``code``; nothing is lost.
    """
    deadline = time.monotonic() + grace_s
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    for thread in others:
        if not isinstance(thread, threading._DummyThread):  # not ours: started outside Python
            thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in others if t.is_alive() and not isinstance(t, threading._DummyThread)]
    if not left:
        return code
    logger.warning("exiting with thread(s) still in a call that did not return: %s", ", ".join(left))
    logging.shutdown()  # flushes every handler
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def progress(daemon: Daemon | None) -> list[Progress]:
    """The watchdog's view of ``daemon``'s pipelines (none while a reload swaps daemons)."""
    return [] if daemon is None else progress_of(daemon.pipelines)


class StatusLine:
    """The ``STATUS=`` text: broker, fps per pipeline (since the previous line), outbox backlog."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._marks: dict[tuple[int, str], tuple[float, int]] = {}

    def __call__(self, daemon: Daemon | None) -> str:
        """One line for ``daemon`` (``reloading`` while there is none)."""
        if daemon is None or daemon.link is None or daemon.outbox is None:
            return "reloading"
        now, parts = self.clock(), []
        marks: dict[tuple[int, str], tuple[float, int]] = {}
        for p in daemon.pipelines:
            key, inferred = (id(daemon), p.name), p.metrics.inferred
            then, before = self._marks.get(key, (now, inferred))
            fps = (inferred - before) / (now - then) if now > then else 0.0
            marks[key] = (now, inferred)
            parts.append(f"{p.name} {fps:.1f} fps ({p.source.state})")
        parts += [f"{name} failed" for name in daemon.failed_pipelines]
        self._marks = marks
        broker = "connected" if daemon.link.connected.is_set() else "disconnected"
        return f"mqtt {broker}; {', '.join(parts)}; outbox {daemon.outbox.pending} pending"


@dataclass
class _Swap:
    """A remote config for the main loop to run (control/remote.py waits on ``done``)."""

    cfg: Config
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


def health_problems(daemon: Daemon | None) -> str | None:
    """Why ``daemon`` is not healthy (a remote config's health window); None when it is."""
    if daemon is None or daemon.link is None:
        return "no daemon runs"
    problems = [f"pipeline {n} failed: {why}" for n, why in daemon.failed_pipelines.items()]
    problems += [f"pipeline {p.name} has no result yet" for p in daemon.pipelines if p.metrics.inferred == 0]
    if not daemon.link.connected.is_set():
        problems.append(f"the broker is not connected ({daemon.link.last_error or 'connecting'})")
    return "; ".join(problems) or None


class Service:
    """Runs the daemon for ``config_path`` until SIGTERM/SIGINT; SIGHUP reloads (module docstring)."""

    def __init__(
        self,
        config_path: Path,
        cfg: Config,
        notifier: Notifier,
        *,
        watchdog_s: float | None = None,
        stall_limit_s: float | None = None,
        keep_log_level: bool = False,
    ) -> None:
        self.config_path, self.cfg, self.notifier = config_path, cfg, notifier
        self.keep_log_level = keep_log_level
        self.daemon: Daemon | None = None
        self.status_line = StatusLine()
        self._stop, self._reload, self._wake = threading.Event(), threading.Event(), threading.Event()
        self._done = threading.Event()  # ends the status thread
        self._status_thread = threading.Thread(target=self._status_loop, name="status", daemon=True)
        self.remote = RemoteConfig(cfg, config_path)  # outlives daemons: it swaps them
        self._swaps: queue.SimpleQueue[_Swap] = queue.SimpleQueue()
        self.watchdog: Watchdog | None = None
        if watchdog_s is not None:
            self.watchdog = Watchdog(
                lambda: progress(self.daemon),
                notifier.watchdog,
                interval_s=watchdog_s,
                stall_limit_s=stall_limit_s or watchdog_s,
                report=notifier.status,
            )

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> int:
        """Start, serve signals until told to stop, stop; the exit code."""
        self._install_signals()
        self._apply_logging(self.cfg)
        self.daemon = self._first_start()
        self.remote.start(self)
        try:
            self._warn_slow_sources(self.cfg)
            logger.info(
                "edge-runtime running: device %s, %d pipeline(s)",
                self.cfg.device.id,
                len(self.daemon.pipelines),
            )
            self.notifier.ready(self.status())
            if self.watchdog is not None:
                self.watchdog.start()
            if self.notifier.enabled:
                self._status_thread.start()
            while not self._stop.is_set():
                self._wake.wait(0.5)
                self._wake.clear()
                if self._reload.is_set() and not self._stop.is_set() and not self.remote.on_trial:
                    self._reload.clear()  # during a remote config's health window: after it
                    self._reload_now()
                self._serve_swaps()
            self.notifier.stopping()
        finally:
            self._done.set()
            self.remote.close()
            if self.watchdog is not None:
                self.watchdog.stop()
            if self.daemon is not None:
                self.daemon.stop()
            if self._status_thread.is_alive():
                self._status_thread.join(2.0)
        logger.info("stopped cleanly")
        return 0

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s; stopping", signal.Signals(signum).name)
            self._stop.set()
            self._wake.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            logger.info("received SIGHUP; reloading %s", self.config_path)
            self._reload.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def _first_start(self) -> Daemon:
        """The daemon of the first start: the remote config the rule picks, else the local file's
        (a remote config that does not start any more is dropped, not retried at every restart)."""
        local, self.cfg = self.cfg, self.remote.startup(self.cfg)
        if self.cfg is local:
            return self._start(local)
        try:
            return self._start(self.cfg)
        except Exception as exc:
            logger.exception("the remote config did not start; starting %s", self.config_path)
            self.remote.drop(
                f"it did not start ({str(exc).splitlines()[0] if str(exc) else exc!r}); the local file runs"
            )
            self.cfg = self.remote.running = local
            return self._start(local)

    def _start(self, cfg: Config) -> Daemon:
        daemon = Daemon(cfg, remote=self.remote)
        try:
            daemon.start()
        except BaseException:
            daemon.stop()
            raise
        return daemon

    # -- reload ------------------------------------------------------------------------------
    def _reload_now(self) -> None:
        """``RELOADING=1``; swap to the config file's new content if it is valid; ``READY=1``."""
        self.notifier.reloading(f"reloading {self.config_path}")
        path, folder = self.remote.source()  # the local file, or the remote config it has not changed
        try:
            cfg, problems = collect_problems(path, folder=folder)
        except Exception:  # a bug in the checks must not end a running daemon
            logger.exception("reload: keeping the running config: checking %s failed", self.config_path)
            cfg, problems = None, []
        if cfg is None and problems:
            shown = problems[:RELOAD_PROBLEMS_LOGGED]
            more = len(problems) - len(shown)
            tail = f" (and {more} more: edge-runtime validate {self.config_path})" if more > 0 else ""
            logger.error("reload: keeping the running config: %s%s", "; ".join(shown), tail)
        elif cfg is not None and self._swap(cfg) is None:
            self.remote.running = cfg
        self.notifier.ready(self.status())

    def _swap(self, cfg: Config) -> str | None:
        """Run ``cfg``; None, or why it did not start (the previous config runs again then)."""
        old, self.daemon = self.daemon, None  # the watchdog watches nothing during the swap
        if old is not None:
            old.stop()
        try:
            self.daemon = self._start(cfg)
        except Exception as exc:  # the supervisor must keep a daemon running
            logger.exception("reload: the new config did not start; starting the previous one again")
            self.daemon = self._start(self.cfg)
            self.remote.started()
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.cfg = cfg
        self.remote.started()
        self._apply_logging(cfg)
        self._warn_slow_sources(cfg)
        logger.info("reload: running %s with %d pipeline(s)", self.config_path, len(self.daemon.pipelines))
        return None

    # -- remote config (control/remote.py's Supervisor) -----------------------------------------
    def swap(self, cfg: Config) -> str | None:
        """Run ``cfg`` in the main loop (from the ``config`` thread); as :meth:`_swap` says."""
        request = _Swap(cfg)
        self._swaps.put(request)
        self._wake.set()
        while not request.done.wait(0.5):
            if self._done.is_set():
                return "the service is stopping"
        return request.error

    def _serve_swaps(self) -> None:
        while not self._swaps.empty() and not self._stop.is_set():
            request = self._swaps.get()
            self.notifier.reloading("applying a remote config")
            request.error = self._swap(request.cfg)
            self.notifier.ready(self.status())
            request.done.set()

    def problems(self) -> str | None:
        """Why the running daemon is not healthy now; None when it is."""
        return health_problems(self.daemon)

    def report(self, topic: str, payload: bytes) -> bool:
        """A retained message through the running daemon's outbox; False when none runs."""
        daemon = self.daemon
        if daemon is None or daemon.outbox is None:
            return False
        try:
            daemon.outbox.put(topic, lambda _seq: payload, qos=1, retain=True)
        except (OutboxClosedError, OutboxUnavailableError):  # kept by control, sent with the next daemon
            return False
        return True

    def reload(self) -> None:
        """Reload as SIGHUP does (the ``reload`` command; from any thread)."""
        self._reload.set()
        self._wake.set()

    # -- status ------------------------------------------------------------------------------
    def status(self) -> str:
        """The current ``STATUS=`` text (a stall, if any, first)."""
        stalled = self.watchdog.stalled if self.watchdog is not None else []
        head = "STALLED: " + "; ".join(map(str, stalled)) + " | " if stalled else ""
        return head + self.status_line(self.daemon)

    def _status_loop(self) -> None:
        while not self._done.wait(self.cfg.health.interval_s):
            try:
                self.notifier.status(self.status())
            except Exception:  # status is informational; never let it end the thread
                logger.exception("status update failed")

    # -- helpers -----------------------------------------------------------------------------
    def _apply_logging(self, cfg: Config) -> None:
        if not self.keep_log_level:
            logging.getLogger().setLevel(cfg.logging.level)
        set_format(cfg.logging.format)

    def _warn_slow_sources(self, cfg: Config) -> None:
        """Live sources whose own timeouts reach the stall limit would be taken for hangs."""
        if self.watchdog is None:
            return
        limit = self.watchdog.stall_limit_s
        for pc in cfg.pipelines:
            longest = max(
                getattr(pc.source, "open_timeout_s", 0.0), getattr(pc.source, "read_timeout_s", 0.0)
            )
            if longest >= limit:
                logger.warning(
                    "pipeline %s: source timeouts up to %.1fs reach the watchdog's stall limit %.1fs; "
                    "raise WatchdogSec= or lower open_timeout_s/read_timeout_s",
                    pc.name,
                    longest,
                    limit,
                )
