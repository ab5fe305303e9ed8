"""The nonces of signed commands seen so far, kept on disk until they expire: no replay, ever.

A signed command is accepted once: its nonce is written here (atomically, fsynced) before the
command runs, and kept until the command's own expiry, after which the expiry refuses it anyway.
Signed commands must expire within ``max_age_s`` of arriving, so the file holds only the last
few minutes' nonces; at most ``max_entries`` of them: beyond that, new signed commands are refused
(only holders of a trusted key can fill it, and forgetting a live nonce would allow a replay).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge_runtime.durable import fsync_dir
from edge_runtime.errors import ControlError

logger = logging.getLogger(__name__)


class Nonces:
    """Persisted set of (nonce, expiry); thread-safe."""

    def __init__(
        self,
        path: Path,
        *,
        max_age_s: float,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path, self.max_age_s, self.max_entries, self.clock = path, max_age_s, max_entries, clock
        self._lock = threading.Lock()
        self._seen = self._load()

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
            return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # a damaged file: forgetting nonces could allow a replay, so refuse until it expires
            logger.error(
                "control: %s is unreadable (%s); signed commands wait %.0f s", self.path, exc, self.max_age_s
            )
            return {"": self.clock() + self.max_age_s}

    def admit(self, nonce: str, expires: float) -> None:
        """Record ``nonce`` (valid until ``expires``) or raise ControlError: replayed, too far in the
        future, or no room; the record is on disk before this returns."""
        now = self.clock()
        if expires - now > self.max_age_s:
            raise ControlError(
                f"the command is valid for {expires - now:.0f} s; at most {self.max_age_s:.0f} s "
                "(control.max_command_age_s)"
            )
        with self._lock:
            self._seen = {n: t for n, t in self._seen.items() if t >= now}
            if "" in self._seen:
                raise ControlError("the nonce store was damaged; signed commands are refused for a while")
            if nonce in self._seen:
                raise ControlError("this command was accepted before (replayed nonce)")
            if len(self._seen) >= self.max_entries:
                raise ControlError(f"{self.max_entries} signed commands are live already; try later")
            self._seen[nonce] = expires
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as fh:
            json.dump(self._seen, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)
        fsync_dir(self.path.parent)
