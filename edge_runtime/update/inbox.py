"""The update manager's inbox: what the MQTT link hands over, bounded in messages and in bytes.

Update messages and chunks wait in two lanes, each with its own limits, so a flood of one kind
cannot push out the other; the manager takes from the lanes in turn. What does not fit is
dropped and counted: a lost chunk is asked for again, a lost update message must be sent again
(a flood can cost that, never memory).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

MANIFEST, CHUNK = "manifest", "chunk"


@dataclass(slots=True)
class _Lane:
    max_items: int
    max_bytes: int
    items: deque[tuple[str, Any, bytes]] = field(default_factory=deque)
    size: int = 0


class Inbox:
    """Two bounded FIFO lanes (update messages, chunks) read by one consumer; thread-safe."""

    def __init__(
        self,
        *,
        manifests: int = 4096,
        manifest_bytes: int = 16 * 1024 * 1024,
        chunks: int = 4096,
        chunk_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self._lanes = {MANIFEST: _Lane(manifests, manifest_bytes), CHUNK: _Lane(chunks, chunk_bytes)}
        self._order = [MANIFEST, CHUNK]
        self._turn = 0
        self._ready = threading.Condition()

    def put(self, kind: str, key: Any, payload: bytes) -> bool:
        """Queue one message of ``kind`` (MANIFEST or CHUNK); False when its lane is full."""
        lane = self._lanes[kind]
        with self._ready:
            if len(lane.items) >= lane.max_items or lane.size + len(payload) > lane.max_bytes:
                return False
            lane.items.append((kind, key, payload))
            lane.size += len(payload)
            self._ready.notify()
        return True

    def get(self, timeout: float) -> tuple[str, Any, bytes] | None:
        """The next message, lanes in turn; None when nothing came within ``timeout``."""
        with self._ready:
            if not self._ready.wait_for(self._any, timeout):
                return None
            for _ in self._order:
                lane = self._lanes[self._order[self._turn]]
                self._turn = (self._turn + 1) % len(self._order)
                if lane.items:
                    item = lane.items.popleft()
                    lane.size -= len(item[2])
                    return item
        return None

    def empty(self) -> bool:
        """Nothing waits."""
        with self._ready:
            return not self._any()

    def _any(self) -> bool:
        return any(lane.items for lane in self._lanes.values())
