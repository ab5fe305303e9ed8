"""The commands a device answers (docs/control.md): what each does, who may ask.

``ping``, ``health``, ``rebirth`` and ``snapshot`` only read (unsigned requests are answered
unless ``control.require_signed`` is ``all``); ``pause``, ``resume`` and ``reload`` change what the
device does and must be signed. Every request gets an answer ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``: unknown commands and bad arguments too, never silence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_runtime.control import envelope
from edge_runtime.control.envelope import CommandDoc
from edge_runtime.control.nonces import Nonces
from edge_runtime.control.ports import Daemon, FrameSource, PipelineView
from edge_runtime.control.requests import MAX_REQUEST_BYTES, Request
from edge_runtime.control.snapshot import encode
from edge_runtime.errors import ControlError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

READ_ONLY = ("ping", "health", "rebirth", "snapshot")
CHANGES = ("pause", "resume", "reload")


class Commands:
    """Turns one request into one answer (called by the ``control`` thread)."""

    def __init__(
        self,
        daemon: Daemon,
        *,
        device: str,
        groups: list[str],
        keys: list[Ed25519PublicKey],
        nonces: Nonces,
        require_signed: str,
        frames: FrameSource,
        snapshot_max_height: int,
        snapshot_quality: int,
        reload: Callable[[], None] | None,
        rebirth: Callable[[], list[str]],
    ) -> None:
        self.daemon, self.device, self.groups, self.keys = daemon, device, groups, keys
        self.nonces, self.require_signed, self.frames = nonces, require_signed, frames
        self.max_height, self.quality = snapshot_max_height, snapshot_quality
        self.reload, self.rebirth = reload, rebirth
        self.refused = 0

    def __call__(self, request: Request) -> dict[str, Any]:
        """The answer to ``request``."""
        try:
            name = request.name
            if name not in READ_ONLY + CHANGES:
                known = ", ".join(READ_ONLY + CHANGES)
                raise ControlError(f"unknown command {name[:64]!r} (known: {known})")
            args, signed_by = self._arguments(request)
            if signed_by is None and (name in CHANGES or self.require_signed == "all"):
                self.refused += 1
                why = (
                    "it changes what the device does" if name in CHANGES else "control.require_signed is all"
                )
                return {
                    "ok": False,
                    "refused": True,
                    "error": f"{name} must be signed by a key in updates.public_keys "
                    f"({why}; fleet cmd --key)",
                }
            result = getattr(self, f"_{name}")(args)
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "result": result}

    def _arguments(self, request: Request) -> tuple[dict[str, str], str | None]:
        """The request's arguments and the id of the key that signed it (None: unsigned)."""
        if not request.payload.strip():
            return {}, None
        message = envelope.read_json(request.payload, max_bytes=MAX_REQUEST_BYTES, what="the request")
        if envelope.is_envelope(message):
            signed = envelope.authenticate(message, self.keys)
            doc = envelope.open_document(signed, CommandDoc)
            if doc.name != request.name:
                raise ControlError(f"signed for command {doc.name!r}, sent on {request.name!r}")
            doc.check_target(self.device, self.groups)
            self.nonces.admit(doc.nonce, doc.expires)
            return dict(doc.args), signed.key_id
        args = message.get("args", {}) if isinstance(message, dict) else None
        if not isinstance(args, dict) or len(args) > 16:
            raise ControlError('an unsigned request is {"args": {NAME: "value", ...}} (at most 16)')
        if not all(isinstance(k, str) and isinstance(v, str) and len(v) <= 256 for k, v in args.items()):
            raise ControlError("arguments are strings")
        return args, None

    # -- the commands (each returns its result or raises ControlError) --------------------------
    def _ping(self, args: dict[str, str]) -> dict[str, Any]:
        _no_args(args)
        return {"pong": True, "device": self.device, "ts": round(time.time(), 3)}

    def _health(self, args: dict[str, str]) -> dict[str, Any]:
        _no_args(args)
        self.daemon.publish_health()
        return self.daemon.health()

    def _rebirth(self, args: dict[str, str]) -> dict[str, Any]:
        _no_args(args)
        return {"republished": self.rebirth()}

    def _pause(self, args: dict[str, str]) -> dict[str, Any]:
        return self._set_paused(args, True)

    def _resume(self, args: dict[str, str]) -> dict[str, Any]:
        return self._set_paused(args, False)

    def _set_paused(self, args: dict[str, str], paused: bool) -> dict[str, Any]:
        pipeline = self._pipeline(args, {"pipeline"})
        if paused:
            pipeline.paused.set()
        else:
            pipeline.paused.clear()
        return {"pipeline": pipeline.name, "paused": paused}

    def _reload(self, args: dict[str, str]) -> dict[str, Any]:
        _no_args(args)
        if self.reload is None:
            raise ControlError("reload works only under `edge-runtime run`")
        self.reload()
        return {"reloading": True}

    def _snapshot(self, args: dict[str, str]) -> dict[str, Any]:
        pipeline = self._pipeline(args, {"pipeline", "max_height", "quality"})
        max_height = _int(args, "max_height", self.max_height, 16, self.max_height)
        quality = _int(args, "quality", self.quality, 10, 100)
        image = self.frames(pipeline.name)
        if image is None:
            raise ControlError(f"pipeline {pipeline.name} has no frame yet")
        return {"pipeline": pipeline.name, **encode(image, max_height=max_height, quality=quality)}

    def _pipeline(self, args: dict[str, str], allowed: set[str]) -> PipelineView:
        """The pipeline ``args`` names (may be left out when there is one)."""
        _no_args({k: v for k, v in args.items() if k not in allowed})
        pipelines = {p.name: p for p in self.daemon.pipelines}
        name = args.get("pipeline")
        if name is None and len(pipelines) == 1:
            name = next(iter(pipelines))
        if name not in pipelines:
            known = ", ".join(sorted(pipelines)) or "none"
            said = "no pipeline=NAME given" if name is None else f"no pipeline {name[:64]!r} runs"
            raise ControlError(f"{said} (running: {known})")
        return pipelines[name]


def _no_args(args: dict[str, str]) -> None:
    if args:
        raise ControlError(f"unexpected argument(s): {', '.join(sorted(k[:64] for k in args))}")


def _int(args: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    text = args.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ControlError(f"{key}={text[:32]!r}: expected a whole number") from None
    if not low <= value <= high:
        raise ControlError(f"{key}={value}: expected {low}..{high}")
    return value
