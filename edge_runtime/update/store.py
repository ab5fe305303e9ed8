"""The versioned model store and the update records, all on disk and all written atomically.

Layout under ``updates.store``::

    <name>/<version>/          an installed bundle (complete: it appears by one rename)
    <name>/active.json         which version serves, the versions before it, committed or not
    .staging/                  downloads (.part) and extractions in progress
    job.json                   the update in progress (its state survives a crash)
    history.json               outcomes of past updates (for replay refusal), newest last

``active.json`` is the single commit point: after a crash the daemon serves what it names, so it
serves either the old model or the new one, never a half-installed one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.durable import fsync_dir
from edge_runtime.update.job import Job

logger = logging.getLogger(__name__)

BASE = "base"  # the model the config's path names (not in the store)
HISTORY_LIMIT = 200


@dataclass
class Active:
    """What serves for one model name."""

    version: str
    previous: list[str] = field(default_factory=list)  # newest first; BASE = the config's model
    committed: bool = True
    update: str | None = None  # update id that installed it
    since: float = field(default_factory=time.time)


def write_json_atomic(path: Path, data: Any) -> None:
    """temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    """Parsed JSON, or None when missing or unreadable (a torn file cannot exist: writes rename)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class ModelStore:
    """Installed model versions and the records of the update manager."""

    def __init__(self, root: Path, *, keep: int = 2) -> None:
        self.root, self.keep = root, keep
        self.staging = root / ".staging"
        self.staging.mkdir(parents=True, exist_ok=True)

    # -- versions --------------------------------------------------------------------------------
    def folder(self, name: str, version: str) -> Path:
        """Where ``version`` of ``name`` is (or would be) installed."""
        return self.root / name / version

    def active(self, name: str) -> Active | None:
        """The active record, or None when the config's own model serves."""
        data = read_json(self.root / name / "active.json")
        if not isinstance(data, dict):
            return None
        try:
            return Active(**data)
        except TypeError:
            return None

    def set_active(self, name: str, record: Active) -> None:
        """The commit point (atomic)."""
        write_json_atomic(self.root / name / "active.json", asdict(record))

    def roll_back(self, name: str, record: Active) -> None:
        """Point ``active.json`` back at the version before ``record`` (or the config's model)."""
        if not record.previous or record.previous[0] == BASE:
            path = self.root / name / "active.json"
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
            return
        previous = Active(version=record.previous[0], previous=record.previous[1:], committed=True)
        self.set_active(name, previous)

    def names(self) -> list[str]:
        """The model names with an ``active.json`` record."""
        return sorted(path.parent.name for path in self.root.glob("*/active.json"))

    def install(self, name: str, version: str, extracted: Path) -> Path:
        """Move a complete, fsynced extraction into place with one rename."""
        final = self.folder(name, version)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # left by an earlier attempt that never became active
            shutil.rmtree(final)
        extracted.replace(final)
        fsync_dir(final.parent)
        return final

    def prune(self, name: str) -> list[str]:
        """Delete versions that are neither active nor among the ``keep`` previous ones."""
        record = self.active(name)
        if record is None:
            return []
        wanted = {record.version, *record.previous[: self.keep]}
        removed = []
        folder = self.root / name
        for child in folder.iterdir():
            if child.is_dir() and child.name not in wanted:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
        return removed

    def remove_unused(self, name: str, version: str) -> None:
        """Delete ``version`` of ``name`` unless it is active or kept as a previous one."""
        record = self.active(name)
        if record is None or (record.version != version and version not in record.previous):
            folder = self.folder(name, version)
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)

    def clean_staging(self, keep: set[str] | None = None) -> None:
        """Remove staged files, except those whose name starts with an id in ``keep``."""
        keep = keep or set()
        for child in self.staging.iterdir():
            if any(child.name.startswith(k) for k in keep):
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    # -- records ----------------------------------------------------------------------------------
    def job(self) -> Job | None:
        """The update in progress; a job.json that holds no job is discarded (with a warning)."""
        data = read_json(self.root / "job.json")
        if not isinstance(data, dict):
            return None
        try:
            return Job.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:  # no update id to report it under
            logger.warning("update: job.json holds no resumable job (%s); discarded", exc)
            self.save_job(None)
            return None

    def save_job(self, job: Job | None) -> None:
        """Persist (or, with None, clear) the update in progress."""
        path = self.root / "job.json"
        if job is None:
            path.unlink(missing_ok=True)
            fsync_dir(self.root)
        else:
            write_json_atomic(path, job.to_json())

    def history(self) -> list[dict[str, Any]]:
        """Past outcomes, oldest first."""
        data = read_json(self.root / "history.json")
        return data if isinstance(data, list) else []

    def record(self, update: str, name: str, version: str, outcome: str, reason: str | None) -> None:
        """Append one outcome (bounded)."""
        entries = self.history()[-(HISTORY_LIMIT - 1) :]
        entries.append(
            {
                "update": update,
                "name": name,
                "version": version,
                "outcome": outcome,
                "reason": reason,
                "ts": round(time.time(), 3),
            }
        )
        write_json_atomic(self.root / "history.json", entries)

    def outcome(self, update: str) -> str | None:
        """How update ``update`` ended, if it did."""
        entry = self.ended(update)
        return None if entry is None else str(entry.get("outcome"))

    def ended(self, update: str) -> dict[str, Any] | None:
        """The history entry of update ``update`` (outcome, reason, ...), if it ended."""
        for entry in reversed(self.history()):
            if isinstance(entry, dict) and entry.get("update") == update:
                return entry
        return None
