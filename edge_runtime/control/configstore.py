"""Remote configs on disk: the accepted ones (the last few, for rollback and audit) and the state.

``STATE_DIR/configs/v<version>-<sha12>.yaml`` holds each accepted document's YAML text;
``STATE_DIR/config-state.json`` says which one runs (``active``), which one is being tried
(``trial``: present at start means the daemon died while trying it), the highest version ever
accepted (versions never go back, even once the local file took over again), the documents
already handled (a retained document read again at reconnect does nothing), and the last report.
Every write is atomic and fsynced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from edge_runtime.durable import fsync_dir

logger = logging.getLogger(__name__)

MAX_SEEN = 64  # digests of handled documents remembered (a few per version is plenty)


def file_digest(path: Path) -> str | None:
    """sha256 of a file's bytes (None when it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class ConfigStore:
    """The state folder of remote configs (not thread-safe: one owner, the ``config`` thread,
    and the service's main thread only before that thread starts)."""

    def __init__(self, folder: Path, *, keep: int) -> None:
        self.folder, self.keep = folder, keep
        self.configs = folder / "configs"
        self.state_file = folder / "config-state.json"
        self.state: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        empty: dict[str, Any] = {"active": None, "trial": None, "max_version": 0, "seen": [], "report": None}
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return empty
        except (OSError, ValueError) as exc:  # damaged: start from the local file, say why
            logger.error(
                "remote config: %s is unreadable (%s); using the local config file", self.state_file, exc
            )
            return empty
        return {**empty, **data} if isinstance(data, dict) else empty

    @property
    def active(self) -> dict[str, Any] | None:
        """The remote config in use: {version, sha256, file, base} (base: the local file's digest
        when it was applied)."""
        return self.state.get("active")

    @property
    def trial(self) -> dict[str, Any] | None:
        """The remote config being tried, if any."""
        return self.state.get("trial")

    def path(self, entry: dict[str, Any]) -> Path:
        """Where an entry's YAML is."""
        return self.configs / str(entry["file"])

    def seen(self, digest: str) -> bool:
        """This document was handled already."""
        return digest in self.state["seen"]

    def remember(self, digest: str) -> None:
        """Mark a document handled (the oldest digests are forgotten)."""
        self.state["seen"] = [*self.state["seen"], digest][-MAX_SEEN:]
        self.save()

    def write(self, version: int, sha256: str, text: str) -> str:
        """Store an accepted document's YAML; its file name."""
        self.configs.mkdir(parents=True, exist_ok=True)
        name = f"v{version}-{sha256[:12]}.yaml"
        _atomic(self.configs / name, text.encode())
        return name

    def save(self) -> None:
        """Write the state (atomically)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic(self.state_file, json.dumps(self.state, indent=1).encode())

    def trim(self) -> None:
        """Keep the ``keep`` newest stored configs, and whatever is active or on trial."""
        if not self.configs.is_dir():
            return
        wanted = {str(e["file"]) for e in (self.active, self.trial) if e}
        files = sorted(self.configs.glob("v*.yaml"), key=_version_of, reverse=True)
        for old in files[self.keep :]:
            if old.name not in wanted:
                old.unlink(missing_ok=True)


def _version_of(path: Path) -> int:
    head = path.name[1:].split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)
