"""What the fleet says about itself, read from the broker: one bounded record per device.

Devices publish a retained ``P/D/status`` (birth, will, clean stop), a retained
``P/D/model/status`` and, every ``health.interval_s``, a non-retained ``P/D/health``
(docs/mqtt.md). Anyone allowed on the broker may publish there too, so every message is hostile
until proven otherwise: its size and nesting are checked before it is parsed, only the fields we
show are kept (strings cut short, lists and maps capped), the number of devices is capped, and
everything skipped is counted by reason instead of raising or logging.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.errors import UpdateError
from edge_runtime.update.inbound import parse_json

MAX_TEXT = 200  # characters kept of a reason or an error a device (or anyone) sent
MAX_NAME = 64  # characters kept of a name, version, id or state
MAX_ITEMS = 16  # groups, models, pipelines kept per device (with the limits above: a few KB each)
MAX_DEPTH = 8  # health nests 5 levels (pipelines.<p>.latency_ms.<stage>.p50)
KINDS = ("status", "model", "health")


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """``value`` as printable text of at most ``limit`` characters (None stays None).

    Control characters are replaced: a device id or a reason could carry terminal escapes.
    """
    if value is None:
        return None
    s = value if isinstance(value, str) else str(value) if isinstance(value, (int, float, bool)) else "?"
    s = "".join(c if c.isprintable() else "?" for c in s[: limit + 1])
    return s if len(s) <= limit else s[: limit - 1] + "…"


def number(value: Any) -> float | None:
    """A finite JSON number, else None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def name(value: Any) -> str | None:
    """A name, version, id or state: :func:`text` of at most MAX_NAME characters."""
    return text(value, MAX_NAME)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[tuple[str, Any]]:
    """The first MAX_ITEMS entries of a JSON object, keys as text."""
    return [(text(k, MAX_NAME) or "?", v) for k, v in list(_dict(value).items())[:MAX_ITEMS]]


@dataclass
class Update:
    """The device's retained ``model/status``: the last update it worked on."""

    state: str | None
    id: str | None
    name: str | None
    version: str | None
    active_version: str | None
    step: str | None
    progress: float | None
    reason: str | None
    ts: float | None
    retained: bool  # arrived as a retained message (from before we subscribed)


@dataclass
class Health:
    """The last ``P/D/health`` seen: per-pipeline fps and state, the outbox backlog, errors."""

    ts: float | None
    fps: dict[str, float | None]
    source_state: dict[str, str | None]
    errors: list[str]
    outbox_pending: int | None


@dataclass
class Device:
    """Everything known about one device (each part None until its message arrived)."""

    id: str
    online: bool | None = None
    since: float | None = None  # the status message's ts (docs/mqtt.md: birth, will, clean stop)
    reason: str | None = None  # why offline
    session: str | None = None
    runtime: str | None = None  # the edge-runtime version (birth only)
    groups: list[str] = field(default_factory=list)
    models: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # key -> name, version
    update: Update | None = None
    health: Health | None = None


class FleetState:
    """Devices by id, fed one MQTT message at a time; bounded whatever arrives.

    ``max_devices`` caps the records (messages for further ids are counted, not stored);
    ``max_bytes`` caps the size of a message that is parsed.
    """

    def __init__(self, prefix: str, *, max_devices: int = 10_000, max_bytes: int = 256 * 1024) -> None:
        self.prefix, self.max_devices, self.max_bytes = prefix, max_devices, max_bytes
        self.devices: dict[str, Device] = {}
        self.skipped: Counter[str] = Counter()  # reason -> messages not used

    def topics(self) -> list[str]:
        """The subscriptions that feed this state."""
        p = self.prefix
        return [f"{p}/+/status", f"{p}/+/model/status", f"{p}/+/health"]

    def classify(self, topic: str) -> tuple[str, str] | None:
        """``(device id, kind)`` for a topic this state reads, else None."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        kinds = {("status",): "status", ("model", "status"): "model", ("health",): "health"}
        kind = kinds.get(tuple(parts[1:]))
        return (parts[0], kind) if kind and parts[0] else None

    def feed(self, topic: str, payload: bytes, retained: bool = False) -> str | None:
        """Take one message; the device id it updated, or None (counted in ``skipped``)."""
        parsed = self._parse(topic, payload)
        if isinstance(parsed, str):
            self.skipped[parsed] += 1
            return None
        device_id, kind, body = parsed
        device = self.devices.get(device_id)
        if device is None:
            if len(self.devices) >= self.max_devices:
                self.skipped["over the device limit"] += 1
                return None
            device = self.devices[device_id] = Device(device_id)
        {"status": _status, "model": _model, "health": _health}[kind](device, body, retained)
        return device_id

    def _parse(self, topic: str, payload: bytes) -> tuple[str, str, dict[str, Any]] | str:
        """``(device id, kind, body)``, or why the message is not used."""
        where = self.classify(topic)
        if where is None:
            return "other topic"
        device_id, kind = where
        if len(device_id) > MAX_TEXT or not device_id.isprintable():
            return "bad device id"
        if not payload:
            return "empty (cleared)"
        try:
            body = parse_json(payload, max_bytes=self.max_bytes, max_depth=MAX_DEPTH, what=kind)
        except UpdateError as exc:
            return "too big" if "bytes (limit" in str(exc) else "not JSON or too deep"
        if not isinstance(body, dict):
            return "not a JSON object"
        return device_id, kind, body


def _status(d: Device, body: dict[str, Any], _retained: bool) -> None:
    state = body.get("state")
    d.online = True if state == "online" else False if state == "offline" else None
    d.since = number(body.get("ts"))
    d.reason = text(body.get("reason"))
    d.session = name(body.get("session"))
    if state == "online":
        d.runtime = name(body.get("version"))
    # a will or clean stop names the groups and models too (devices before that version did not:
    # keep what the birth said)
    if isinstance(body.get("groups"), list):
        d.groups = sorted({g for g in (name(x) for x in body["groups"][:MAX_ITEMS]) if g})
    if isinstance(body.get("models"), dict):
        models = _items(body["models"])
        d.models = {key: (name(_dict(m).get("name")), name(_dict(m).get("version"))) for key, m in models}


def _model(d: Device, body: dict[str, Any], retained: bool) -> None:
    d.update = Update(
        state=name(body.get("state")),
        id=name(body.get("update")),
        name=name(body.get("name")),
        version=name(body.get("version")),
        active_version=name(body.get("active_version")),
        step=name(body.get("step")),
        progress=number(body.get("progress")),
        reason=text(body.get("reason")),
        ts=number(body.get("ts")),
        retained=retained,
    )


def _health(d: Device, body: dict[str, Any], _retained: bool) -> None:
    pipes = _items(body.get("pipelines"))
    errors = [f"{n}: {text(_dict(p).get('source_error'))}" for n, p in pipes if _dict(p).get("source_error")]
    outbox = _dict(body.get("outbox"))
    if outbox.get("error"):
        errors.append(f"outbox: {text(outbox['error'])}")
    pending = number(outbox.get("pending"))
    d.health = Health(
        ts=number(body.get("ts")),
        fps={n: number(_dict(p).get("fps")) for n, p in pipes},
        source_state={n: name(_dict(p).get("source_state")) for n, p in pipes},
        errors=errors[:MAX_ITEMS],
        outbox_pending=None if pending is None else int(pending),
    )
