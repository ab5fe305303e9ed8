"""What a restart means for updates: which installed version serves, how a saved job goes on.

An uncommitted ``active.json`` record means the daemon died inside a health window: the new
model never proved itself, so the previous one serves (like an A/B boot that was never
confirmed). ``settle`` writes those rollbacks once, before any model loads; ``installed_folder``
then only reads. ``resumed_ending`` tells the update manager whether the job saved in
``job.json`` ends at once or goes on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edge_runtime.update.bundle import MODEL_YAML
from edge_runtime.update.job import Job, JobState
from edge_runtime.update.store import BASE, ModelStore

logger = logging.getLogger(__name__)


def settle(store: ModelStore) -> list[str]:
    """Roll back every uncommitted record in the store; one note per rollback (also logged)."""
    notes = []
    for name in store.names():
        record = store.active(name)
        if record is None or record.committed:
            continue
        store.roll_back(name, record)
        note = f"model {name}: version {record.version} was not committed before the restart; rolled back"
        logger.warning("%s", note)
        notes.append(note)
    return notes


def installed_folder(store: ModelStore, name: str) -> tuple[Path | None, str | None]:
    """The committed installed folder of model ``name``, or None (the configured model serves),
    and why when that is not the plain answer. Reads only: ``settle`` has run before."""
    record = store.active(name)
    if record is None:
        return None, None
    version, note = record.version, None
    if not record.committed:  # not settled: what the rollback would serve
        note = f"version {record.version} is not committed; the previous one serves"
        if not record.previous or record.previous[0] == BASE:
            return None, note
        version = record.previous[0]
    folder = store.folder(name, version)
    if not (folder / MODEL_YAML).is_file():
        return None, f"installed version {version} is missing; using the configured model"
    return folder, note


def resumed_ending(store: ModelStore, job: Job) -> tuple[str, str | None] | None:
    """How a job saved before the restart ends at once, as (outcome, reason); None: it goes on.

    A job that was watching ends: active when its commit reached ``active.json`` (older versions
    are pruned now), else rolled_back (``settle`` rolled it back before the models loaded). A
    download past its deadline is rejected.
    """
    if job.state == JobState.WATCHING:
        record = store.active(job.name)
        if record is not None and record.version == job.version and record.committed:
            store.prune(job.name)  # it was committed just before the restart
            return "active", None
        return "rolled_back", "the daemon restarted before the health window ended"
    if job.state == JobState.DOWNLOADING and time.time() > job.deadline:
        return "rejected", "download timed out (daemon restarted)"
    return None
