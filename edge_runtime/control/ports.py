"""What control/ needs from the daemon and the MQTT link (app.py passes the real ones).

Nothing in control/ imports another stage: the daemon (app.py ``Daemon``), its pipelines
(pipeline.py ``Pipeline``) and the link (publish/mqtt.py ``MqttLink``) satisfy these protocols.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

Handler = Callable[[str, bytes], None]
RequestHandler = Callable[[str, bytes, "str | None", "bytes | None"], None]
# The snapshot seam: a pipeline's name -> the image to send (BGR), None before its first frame
FrameSource = Callable[[str], "np.ndarray | None"]


class Link(Protocol):
    """The MQTT link: inbound routes, answers to requests, the birth message."""

    connected: threading.Event

    def route(self, topic_filter: str, handler: Handler | None) -> None:
        """Give messages on ``topic_filter`` to ``handler(topic, payload)`` (on paho's thread)."""

    def route_requests(self, topic_filter: str, handler: RequestHandler) -> None:
        """Give MQTT v5 requests on ``topic_filter`` to ``handler`` (on paho's thread)."""

    def respond(self, topic: str, payload: bytes, correlation: bytes | None) -> bool:
        """Answer a request; False when not connected."""


class PipelineView(Protocol):
    """One running pipeline, as commands see it."""

    name: str
    paused: threading.Event  # set: frames are read and counted, nothing is inferred or published


class Daemon(Protocol):
    """The running daemon."""

    @property
    def pipelines(self) -> Sequence[PipelineView]:
        """The pipelines that run."""

    def health(self) -> dict[str, Any]:
        """The health payload body now."""

    def publish_health(self) -> None:
        """Send a health message now."""

    def rebirth(self) -> list[str]:
        """Publish the birth message and the retained states the daemon owns again; their topics."""


class Supervisor(Protocol):
    """The service that runs the daemon (service.py ``Service``): remote configs go through it."""

    def swap(self, cfg: Any) -> str | None:
        """Run ``cfg`` (a Config) instead of the running daemon, as a reload does; blocks until done.
        None, or why it did not start (the previous config runs again then)."""

    def problems(self) -> str | None:
        """Why the running daemon is not healthy now (no result yet from a pipeline, a model
        that failed to load, the broker not connected); None when it is."""

    def report(self, topic: str, payload: bytes) -> bool:
        """Commit a retained message to the running daemon's outbox; False when there is none."""

    def reload(self) -> None:
        """Re-read the config file as SIGHUP does (from any thread)."""


class Remote(Protocol):
    """What a daemon's control side hands remote configs to (control/remote.py ``RemoteConfig``)."""

    desired_topics: list[str]

    def offer(self, topic: str, payload: bytes) -> None:
        """A message on a desired-config topic (paho's thread: enqueue only)."""

    def reload(self) -> None:
        """The ``reload`` command."""

    def republish(self) -> list[str]:
        """Publish the retained report again (``rebirth``); its topic, if any."""
