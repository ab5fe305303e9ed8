"""Which installed model version serves when the daemon starts.

An uncommitted ``active.json`` record means the daemon died inside a health window: the new
model never proved itself, so the previous one serves (like an A/B boot that was never
confirmed). ``settle`` writes those rollbacks once, before any model loads; ``installed_folder``
then only reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge_runtime.update.bundle import MODEL_YAML
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
