"""Desired state: the signed manifests the broker keeps (retained) for this device and its groups.

The operator publishes an update retained on ``P/D/model/update`` or ``P/groups/G/model/update``
(docs/updates.md, Desired state). The broker hands it over again at every (re)connect, so this
module remembers, in ``desired.json`` in the store (written atomically), which authenticated
updates were already decided here: a retained copy of one of them changes nothing and publishes
nothing. Outcomes of updates whose bytes were verified live in ``history.json`` (store.py); this
file holds the refusals decided before any byte (expired, not newer, another target, ...), so
that an expired retained manifest is refused once, not at every reconnect.

It also holds, per desired topic, the latest authenticated manifest that had to wait because
another update was running (``pending``; one per topic, so bounded by the config). When the job
ends, the newest of them is considered as if the broker had just delivered it. An empty
(cleared) retained message is not signed: it changes nothing here (docs/updates.md, Clearing).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from edge_runtime.update.manifest import Envelope, version_key
from edge_runtime.update.store import read_json, write_json_atomic

logger = logging.getLogger(__name__)

DESIRED_FILE = "desired.json"
HANDLED_LIMIT = 200  # decided updates remembered; the oldest are forgotten first


class DesiredState:
    """Which desired updates were decided here (persisted) and which wait for the running job."""

    def __init__(self, root: Path, *, limit: int = HANDLED_LIMIT) -> None:
        self.path, self.limit = root / DESIRED_FILE, limit
        data = read_json(self.path)
        entries = data.get("handled") if isinstance(data, dict) else None
        self._handled: dict[str, dict[str, Any]] = {
            str(e["update"]): e for e in (entries or []) if isinstance(e, dict) and "update" in e
        }
        self.pending: dict[str, Envelope] = {}  # desired topic -> the latest manifest that waits

    def handled(self, update: str) -> dict[str, Any] | None:
        """How update ``update`` was decided here before any byte (outcome, reason), if it was."""
        return self._handled.get(update)

    def mark(self, update: str, outcome: str, reason: str | None) -> None:
        """Remember that ``update`` was decided (atomically; the oldest entries are forgotten).

        The first decision stands: copies refused again (a replay pushed live) write nothing, so
        whoever replays a signed manifest cannot make the device write to its disk.
        """
        if update in self._handled:
            return
        self._handled[update] = {"update": update, "outcome": outcome, "reason": reason, "ts": time.time()}
        while len(self._handled) > self.limit:
            del self._handled[next(iter(self._handled))]
        try:
            write_json_atomic(self.path, {"handled": list(self._handled.values())})
        except OSError as exc:  # the decision stands in memory; a restart may decide it once more
            logger.warning("update: cannot save %s: %s", self.path.name, exc.strerror or exc)

    def hold(self, topic: str, env: Envelope) -> None:
        """``env`` waits for the running job (it replaces what waited from the same topic)."""
        self.pending[topic] = env

    def take(self) -> tuple[str, Envelope] | None:
        """The newest waiting manifest (highest version), removed from the waiting ones."""
        if not self.pending:
            return None
        topic = max(self.pending, key=lambda t: version_key(self.pending[t].manifest.version))
        return topic, self.pending.pop(topic)
