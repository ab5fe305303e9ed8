"""One scale for every wait in the tests: ``EDGE_RUNTIME_TEST_TIMEOUT_SCALE`` (default 1).

Every budget a test waits with is a limit, never an expectation: a slow machine (an emulated
arm64 root runs the daemon 5-100 times slower, scripts/arm64.sh sets 8) only makes the waits
longer, never makes a test fail. ``wait_for``, ``DaemonProcess`` and ``cli`` scale their limits
themselves; other waits call :func:`scaled`.
"""

from __future__ import annotations

import os

_RAW = os.environ.get("EDGE_RUNTIME_TEST_TIMEOUT_SCALE", "").strip()
SCALE = float(_RAW) if _RAW else 1.0
if SCALE < 1.0:
    raise ValueError(f"EDGE_RUNTIME_TEST_TIMEOUT_SCALE={_RAW}: must be >= 1 (a limit only grows)")
EMULATED = os.environ.get("EDGE_RUNTIME_EMULATED", "")  # e.g. "qemu-aarch64" (scripts/arm64.sh)


def scaled(seconds: float) -> float:
    """``seconds`` times the scale: the limit for a wait that takes ``seconds`` at most natively."""
    return seconds * SCALE
