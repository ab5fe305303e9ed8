"""Device side of remote management: commands on ``P/D/cmd/<name>`` (request/response) and remote
configuration (docs/control.md). app.py starts it with :func:`start` and closes it first at stop.
"""

from __future__ import annotations

from typing import Any

from edge_runtime.config.sections import Config
from edge_runtime.control.commands import Commands
from edge_runtime.control.envelope import load_keys
from edge_runtime.control.nonces import Nonces
from edge_runtime.control.ports import Daemon, FrameSource, Link, Remote
from edge_runtime.control.remote import RemoteConfig
from edge_runtime.control.requests import Requests


class Control:
    """The running control side of one daemon."""

    def __init__(self, requests: Requests, commands: Commands) -> None:
        self.requests, self.commands = requests, commands

    def counters(self) -> dict[str, Any]:
        """For health: requests received, dropped, answered, refused; the paused pipelines."""
        paused = sorted(p.name for p in self.commands.daemon.pipelines if p.paused.is_set())
        return {**self.requests.counters, "refused": self.commands.refused, "paused": paused}

    def close(self) -> None:
        """Stop taking commands."""
        self.requests.close()


def start(
    cfg: Config,
    daemon: Daemon,
    link: Link,
    *,
    commands_topic: str,
    frames: FrameSource,
    remote: Remote | None,
) -> Control:
    """Route ``commands_topic`` (``P/D/cmd/+``) to a new ``control`` thread and start it, and the
    desired-config topics to ``remote`` (the service's, which outlives daemons; None outside it).

    Call before the link connects, so nothing that arrives at connect is missed. ``frames`` is
    the snapshot seam (a pipeline name -> the image to send).
    """
    c = cfg.control
    commands = Commands(
        daemon,
        device=cfg.device.id,
        groups=list(cfg.device.groups),
        keys=load_keys(list(cfg.updates.public_keys)),
        nonces=Nonces(c.state_dir / "nonces.json", max_age_s=c.max_command_age_s),
        require_signed=c.require_signed,
        frames=frames,
        snapshot_max_height=c.snapshot_max_height,
        snapshot_quality=c.snapshot_quality,
        reload=None if remote is None else remote.reload,
        rebirth=lambda: daemon.rebirth() + (remote.republish() if remote is not None else []),
    )
    requests = Requests(commands, link, per_s=c.commands_per_s, max_pending=c.max_pending)
    link.route_requests(commands_topic, requests.offer)
    if remote is not None:
        for topic in remote.desired_topics:
            link.route(topic, remote.offer)
    requests.start()
    return Control(requests, commands)


__all__ = ["Control", "RemoteConfig", "start"]
