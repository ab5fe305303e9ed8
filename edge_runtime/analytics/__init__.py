"""Video analytics: motion gating, tracking, zones and lines, events (pure per-frame state machines).

Imports no other stage: pipeline.py feeds it frames and detections and commits what it returns.
"""

from __future__ import annotations

from edge_runtime.analytics.session import Analytics, Message, Seen

__all__ = ["Analytics", "Message", "Seen"]
