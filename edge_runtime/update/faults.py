"""Test aid, never part of a normal run: SIGKILL the daemon at a named step of an update.

``EDGE_RUNTIME_FAULT=update:<point>`` in the daemon's environment makes ``from_environment``
return a checkpoint hook that kills the process when the update manager reaches ``<point>``
(accepted, downloading, downloaded, extracted, installed, tested, swapped, watching, committed).
The crash-safety tests use it to prove that a restart serves the old model or the new one.
Without the variable there is no hook at all and the manager's checkpoints do nothing.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

FAULT_ENV = "EDGE_RUNTIME_FAULT"
PREFIX = "update:"


def from_environment(environ: Mapping[str, str] | None = None) -> Callable[[str], None] | None:
    """The SIGKILL hook that ``EDGE_RUNTIME_FAULT`` asks for, or None when it asks for none."""
    wanted = (os.environ if environ is None else environ).get(FAULT_ENV, "")
    if not wanted.startswith(PREFIX):
        return None
    point = wanted.removeprefix(PREFIX)
    logger.warning("update: fault injection armed at %s (%s is set)", point, FAULT_ENV)

    def kill_at(reached: str) -> None:
        if reached == point:
            logger.warning("update: fault injection at %s: SIGKILL", reached)
            os.kill(os.getpid(), signal.SIGKILL)

    return kill_at
