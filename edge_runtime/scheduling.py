"""CPU scheduling of the daemon's own threads: inference first, the threads around it yield.

The threads that feed and drain inference (capture, preprocessing, results, publishing, the MQTT
network loop) wake up several times per frame. Under the default policy a woken thread may preempt
the inference thread on its core, and the two then ping-pong. Under ``SCHED_BATCH`` the same threads
still get their fair share of CPU, but waking one never preempts a running thread: it waits for the
scheduler's next decision. Measured on the classifier at ``fps: 0`` on 2 cores (docs/performance.md):
about 12% less CPU per frame in those threads (fewer context switches) and, with one inference
thread, slightly more frames per second.

Linux only; elsewhere, or where the call is refused (a seccomp filter without ``@resources``, as in
the hardened unit), the thread keeps the default policy. Nothing here needs privileges: moving a
thread from ``SCHED_OTHER`` to ``SCHED_BATCH`` lowers nothing but its own claim.
"""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)


def yield_to_inference() -> bool:
    """Put the calling thread under ``SCHED_BATCH``; True when it took effect."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))  # 0: the calling thread
    except OSError as exc:
        logger.debug("thread %s keeps the default CPU policy: %s", threading.current_thread().name, exc)
        return False
    return True
