"""A configured model as the daemon serves it: a named slot whose runner an update swaps.

Pipelines read ``current`` once per frame (the runner and its identity in one attribute), so every
frame is inferred and labelled by the same model and a swap lands between two frames. The update
manager sees a slot through its Slot protocol (update/ports.py): the version serving, a trial of a
candidate folder (golden.py: load, golden vectors, latency budget), the swap, the counters of the
pipelines using it, and closing a runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from edge_runtime.config.sections import ModelConfig
from edge_runtime.errors import EdgeRuntimeError, InputError, UpdateError
from edge_runtime.model import golden
from edge_runtime.model.files import resolve
from edge_runtime.model.loader import backend_options, load_model
from edge_runtime.model.runner import Runner
from edge_runtime.model.window import make_runner

logger = logging.getLogger(__name__)


class Usage(Protocol):
    """What a pipeline counts (health/metrics.py ``PipelineMetrics``), read by the health window."""

    inferred: int
    errors: int
    inference_ms: float


def identity(runner: Runner) -> dict[str, str]:
    """The ``model`` object of a prediction: name, version, sha256."""
    d = runner.model.describe()
    return {"name": d["name"], "version": d["version"], "sha256": d["sha256"]}


class ModelSlot:
    """A named model that pipelines share (``models.<key>`` in the config).

    ``load`` makes a runner from a bundle folder with this slot's backend options; it is what a
    model update's trial uses.
    """

    def __init__(self, key: str, runner: Runner, load: Callable[[Path], Runner] | None = None) -> None:
        self.key = key
        self.current = (runner, identity(runner))
        self._load = load
        self._users: list[Usage] = []

    @property
    def runner(self) -> Runner:
        """The runner serving now."""
        return self.current[0]

    def version(self) -> str:
        """The version serving now."""
        return str(self.runner.model.spec.version)

    def swap(self, runner: Runner) -> Runner:
        """Serve ``runner`` from the next frame on; returns the one it replaces."""
        old = self.current[0]
        self.current = (runner, identity(runner))
        return old

    def track(self, usage: Usage) -> None:
        """Count a pipeline's frames in :meth:`counters` (called once per pipeline)."""
        self._users.append(usage)

    def counters(self) -> tuple[int, int, float]:
        """(inferred, failed, inference ms) summed over the pipelines using this slot."""
        return (
            sum(u.inferred for u in self._users),
            sum(u.errors for u in self._users),
            sum(u.inference_ms for u in self._users),
        )

    def check_bundle(self, folder: Path) -> None:
        """An extracted update bundle must be a model bundle (model.yaml valid, its files there)."""
        try:
            ref = resolve(folder)
        except InputError as exc:
            raise UpdateError(f"bundle content: {exc}") from exc
        if ref.spec is None:
            raise UpdateError("bundle has no model.yaml")

    def trial(self, folder: Path, *, max_latency_ms: float | None, latency_factor: float) -> Runner:
        """A candidate runner from ``folder`` (a fresh backend with this slot's options) that passed
        its golden vectors and the latency budget; UpdateError with the reason otherwise."""
        load = self._load
        if load is None:
            raise UpdateError(f"model {self.key}: this slot cannot load other versions")

        def candidate() -> Runner:
            runner = load(folder)
            logger.info("model %s: candidate %s", self.key, summary(runner))
            return runner

        return golden.trial(
            candidate,
            self.runner,
            folder,
            label=self.key,
            max_latency_ms=max_latency_ms,
            latency_factor=latency_factor,
        )

    def close(self, runner: Runner) -> None:
        """Release a runner that no longer serves."""
        runner.close()


def summary(runner: Runner) -> str:
    """``NAME vVERSION (backend/accelerator, N stream(s))`` for the log."""
    m = runner.model
    return (
        f"{m.spec.name} v{m.spec.version} ({m.backend.kind}/{m.backend.accelerator}, "
        f"{m.backend.streams} stream(s))"
    )


def load_runner(mc: ModelConfig, cache_dir: Path, path: Path | None = None) -> Runner:
    """The configured model (or the bundle at ``path`` instead) loaded with its config's options."""
    model = load_model(path or mc.path, mc.backend, backend_options(mc, cache_dir))
    return make_runner(model, top_k=mc.top_k, score_threshold=mc.score_threshold)


Installed = Callable[[str], tuple[Path | None, str | None]]
"""A bundle name -> the folder of an update installed for it (or None), and a note for the log."""


def open_slot(key: str, mc: ModelConfig, cache_dir: Path, installed: Installed) -> ModelSlot:
    """The slot for ``models.<key>``: the installed update's folder if there is one and it loads,
    else the config's model (updates address bundles by the name in their model.yaml).

    An installed version that no longer loads (a damaged store, a runtime upgrade that refuses it)
    must not keep the device from running: the configured model serves and the log says why.
    """

    def load(folder: Path) -> Runner:
        return load_runner(mc, cache_dir, folder)

    folder = _installed_folder(key, mc.path, installed)
    if folder is not None and folder != mc.path:
        try:
            return ModelSlot(key, load(folder), load)
        except EdgeRuntimeError as exc:
            logger.error(
                "model %s: installed update at %s does not load (%s); using %s", key, folder, exc, mc.path
            )
    return ModelSlot(key, load_runner(mc, cache_dir), load)


def _installed_folder(key: str, path: Path, installed: Installed) -> Path | None:
    try:
        spec = resolve(path).spec
    except EdgeRuntimeError:
        return None  # loading the configured model says why it does not load
    if spec is None:  # a bare model file: not a bundle an update can replace
        return None
    folder, note = installed(spec.name)
    if note:
        logger.warning("model %s: %s", key, note)
    return folder
