"""``push``: publish a signed update to a device or a group, serve its chunks, follow the outcome.

The update is published retained (desired state, docs/updates.md): a device that is offline now
finds it when it connects. By chunks (the default) devices pull the bundle: each asks on
``P/updates/<id>/request`` for the chunk indices it lacks and the answer comes on
``P/updates/<id>/chunk/<i>`` (fleet/chunks.py), so reordered, repeated and lost chunks, and devices
that restart mid-way, all end with a complete file. Chunks are served while this command runs and,
for devices that come later, by ``fleet serve``; with ``--url`` the devices fetch the bundle
themselves. ``push --clear`` removes the desired update from the broker.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.commands.broker import broker_from_args
from edge_runtime.errors import EdgeRuntimeError, InputError, UpdateError
from edge_runtime.fleet.chunks import ChunkSender, Offer
from edge_runtime.fleet.desired import clear, update_topic
from edge_runtime.mqttclient import Broker, make_client
from edge_runtime.update.job import MAX_HINTED_CHUNKS
from edge_runtime.update.manifest import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    Manifest,
    read_envelope_file,
    update_id,
)

TERMINAL = ("active", "rejected", "rolled_back")
DISCOVERY_S = 1.5


@dataclass
class _Device:
    state: str | None = None
    version: str | None = None
    reason: str | None = None
    progress: float | None = None
    printed: tuple[Any, ...] = field(default_factory=tuple)


def _load(args: argparse.Namespace) -> tuple[Path, dict[str, Any], Manifest]:
    bundle = Path(args.bundle)
    if not bundle.is_file():
        raise InputError(f"{bundle}: no such bundle file")
    envelope = read_envelope_file(bundle.with_name(bundle.name + ".manifest.json"))
    try:
        manifest = Manifest.model_validate_json(envelope["manifest"])
    except ValueError as exc:
        raise InputError(f"{bundle}.manifest.json: invalid manifest: {exc}") from exc
    # Devices verify everything themselves; these are early warnings for the operator, and the
    # update is still sent (a device's refusal, with its reason, is the authoritative answer).
    data = bundle.read_bytes()
    if len(data) != manifest.size or hashlib.sha256(data).hexdigest() != manifest.sha256:
        print(
            f"warning: {bundle} does not match its signed manifest; devices will reject it", file=sys.stderr
        )
    wanted = f"device:{args.device}" if args.device else f"group:{args.group}"
    if manifest.target is not None and manifest.target != wanted:
        print(f"warning: {bundle} is signed for {manifest.target}, not {wanted}", file=sys.stderr)
    return bundle, envelope, manifest


def _chunk_size(args: argparse.Namespace, m: Manifest) -> int:
    """The signed chunk size (format 2), else ``--chunk-size`` or 64 KiB."""
    if m.chunk_size is None:
        size = int(args.chunk_size or DEFAULT_CHUNK_BYTES)
        if not 0 < size <= MAX_CHUNK_BYTES or -(-m.size // size) > MAX_HINTED_CHUNKS:
            raise InputError(
                f"--chunk-size {size}: between 1 and {MAX_CHUNK_BYTES} bytes, and at most "
                f"{MAX_HINTED_CHUNKS} chunks for this bundle (devices use no smaller chunks)"
            )
        return size
    if args.chunk_size and args.chunk_size != m.chunk_size:
        print(
            f"warning: the manifest signs {m.chunk_size}-byte chunks; --chunk-size {args.chunk_size} ignored",
            file=sys.stderr,
        )
    return m.chunk_size


def _url(args: argparse.Namespace, m: Manifest) -> str | None:
    """Where devices download the bundle: a format 2 manifest must have signed it."""
    if m.format >= 2 and args.url and args.url != m.url:
        signed = f"it signs {m.url}" if m.url else "it signs no URL"
        raise InputError(
            f"--url {args.url}: devices fetch only the URL a format 2 manifest signs ({signed}); "
            "sign the bundle with `bundle sign --url URL`, or leave --url out to serve chunks"
        )
    return str(args.url or m.url) if (args.url or m.url) else None


def cmd_push(args: argparse.Namespace) -> int:
    """Publish, serve chunks, and with ``--wait`` follow every targeted device; or ``--clear``."""
    if args.clear:
        if args.bundle:
            raise InputError("--clear takes no BUNDLE: it removes the desired update of the device or group")
        return _clear(args)
    if not args.bundle:
        raise InputError("a BUNDLE to push (or --clear)")
    bundle, envelope, manifest = _load(args)
    broker = broker_from_args(args)
    pusher = _Pusher(args, broker, bundle, envelope, manifest)
    if args.waves or args.max_failures:
        return _staged(args, broker, pusher)
    return pusher.run()


def _staged(args: argparse.Namespace, broker: Broker, pusher: _Pusher) -> int:
    """``--waves``: a staged rollout (commands/staged.py) that serves the chunks as push does."""
    from edge_runtime.commands.staged import run_staged
    from edge_runtime.fleet.watch import FleetWatcher

    return run_staged(
        args,
        lambda state: FleetWatcher(
            broker,
            state,
            extra=(f"{pusher.base}/request",),
            on_extra=lambda _topic, payload: pusher._serve(payload),
            client=pusher.client,
        ),
        pusher,
    )


def _clear(args: argparse.Namespace) -> int:
    """Publish an empty retained message: the broker forgets the desired update of that topic."""
    topic = update_topic(args.prefix, args.device, args.group)
    clear(broker_from_args(args), topic)
    print(f"cleared the desired update on {topic} (devices keep what they run)")
    return 0


class _Pusher:
    def __init__(
        self, args: argparse.Namespace, broker: Broker, bundle: Path, envelope: dict[str, Any], m: Manifest
    ) -> None:
        self.args, self.broker, self.bundle, self.manifest = args, broker, bundle, m
        self.prefix = args.prefix
        self.uid = update_id(envelope["manifest"])
        self.key_id = str(envelope.get("key_id", "?"))
        self.base = f"{self.prefix}/updates/{self.uid}"
        self.chunk_size = _chunk_size(args, m)
        self.count = (m.size + self.chunk_size - 1) // self.chunk_size
        url = _url(args, m)  # a signed URL is the device's first source; chunks are served too
        transfer = (
            {"type": "url", "url": url}
            if url
            else {"type": "chunks", "topic": self.base, "chunk_size": self.chunk_size, "count": self.count}
        )
        self.payload = json.dumps(
            {
                **{k: envelope[k] for k in ("manifest", "signature", "key_id") if k in envelope},
                "transfer": transfer,
            }
        )
        self.devices: dict[str, _Device] = {}
        if args.device:
            self.devices[args.device] = _Device()
        self.members: set[str] = set()
        self.inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.offer = Offer(self.uid, bundle, m, self.chunk_size, envelope)
        self.sender = ChunkSender(self._publish_chunk, prefix=self.prefix)
        self.client = make_client(broker, f"edge-push-{uuid.uuid4().hex[:8]}")
        c = self.client
        c.on_message = lambda _c, _u, msg: self.inbox.put(msg)
        c.max_inflight_messages_set(64)

    def _topics(self) -> list[str]:
        if self.args.device:
            topics = [f"{self.prefix}/{self.args.device}/model/status"]
        else:
            topics = [f"{self.prefix}/+/model/status", f"{self.prefix}/+/status"]
        return [*topics, f"{self.base}/request"]

    def run(self) -> int:
        b = self.broker
        try:
            self.client.connect(b.host, b.port, keepalive=b.keepalive)
        except (OSError, ValueError) as exc:
            raise EdgeRuntimeError(f"cannot connect to the broker {b}: {exc}") from exc
        self.client.loop_start()
        try:
            for topic in self._topics():
                self.client.subscribe(topic, qos=1)
            self._drain(time.monotonic() + DISCOVERY_S)  # retained births tell who is in the group
            if self.args.group:
                self._announce_group()
            target = update_topic(self.prefix, self.args.device, self.args.group)
            retain = not self.args.no_retain  # desired state: devices that connect later find it
            self.client.publish(target, self.payload, qos=1, retain=retain).wait_for_publish(10)
            print(
                f"published update {self.uid} ({self.manifest.name} {self.manifest.version}, "
                f"{self.manifest.size} bytes{'' if self.args.url else f', {self.count} chunks'}) to {target}"
                f"{'' if retain else ' (once, not retained)'}"
            )
            return self._follow()
        finally:
            self.client.loop_stop()
            self.client.disconnect()

    def _announce_group(self) -> None:
        for device in sorted(self.members):
            self.devices.setdefault(device, _Device())
        if self.devices:
            print(f"group {self.args.group}: {', '.join(sorted(self.devices))} online")
        else:
            print(f"group {self.args.group}: no device of the group is online now", file=sys.stderr)

    def _follow(self) -> int:
        wait = self.args.wait
        serving = self.args.url is None
        if wait is None and not serving:
            return 0
        deadline = time.monotonic() + (wait if wait is not None else self.args.serve_timeout)
        while time.monotonic() < deadline:
            self._drain(min(deadline, time.monotonic() + 0.2))
            states = [d.state for d in self.devices.values()]
            if self.devices and all(s in TERMINAL for s in states):
                break
            if wait is None and self.devices and all(s not in (None, "downloading") for s in states):
                return 0  # every device has its bytes; not asked to wait for the outcome
        return self._summary(wait is not None)

    def _summary(self, waited: bool) -> int:
        ok = bool(self.devices)
        for name, d in sorted(self.devices.items()):
            if d.state is None and waited:
                print(
                    f"{name}: no answer (a device ignores an update it cannot authenticate: "
                    f"is key {self.key_id} in its updates.public_keys? its health counts "
                    "updates.unauthenticated)",
                    file=sys.stderr,
                )
            elif d.state not in TERMINAL:
                print(f"{name}: no final state ({d.state or 'no answer'})", file=sys.stderr)
            ok = ok and d.state == "active" and d.version == self.manifest.version
        if not waited:
            return 0
        return 0 if ok else 1

    def _drain(self, until: float) -> None:
        while True:
            try:
                msg = self.inbox.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                return
            self._handle(msg)
            if time.monotonic() >= until:
                return

    def _handle(self, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == f"{self.base}/request":
            self._serve(bytes(msg.payload))
            return
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if msg.topic.endswith("/model/status"):
            if not msg.retain:  # a retained one is from before this push (an earlier attempt)
                self._status(msg.topic.split("/")[-3], body)
        elif (
            msg.topic.endswith("/status")
            and body.get("state") == "online"
            and self.args.group in (body.get("groups") or [])
        ):
            self.members.add(msg.topic.split("/")[-2])

    def _serve(self, payload: bytes) -> None:
        if self.args.url is not None:
            return
        try:
            self.sender.answer(self.offer, payload)
        except UpdateError:  # not a chunk request: anyone may publish there
            return

    def _publish_chunk(self, topic: str, data: bytes) -> bool:
        return self.client.publish(topic, data, qos=1).rc == mqtt.MQTT_ERR_SUCCESS

    def _status(self, device: str, body: dict[str, Any]) -> None:
        if body.get("update") != self.uid:
            return  # an older update's retained status, or somebody else's
        d = self.devices.setdefault(device, _Device())
        d.state, d.version, d.reason, d.progress = (
            body.get("state"),
            body.get("version"),
            body.get("reason"),
            body.get("progress"),
        )
        bucket = int((d.progress or 0) * 4) if d.state == "downloading" else None
        key = (d.state, bucket, body.get("step"))
        if key != d.printed:
            d.printed = key
            extra = f" {d.progress:.0%}" if d.state == "downloading" and d.progress is not None else ""
            step = f" ({body['step']})" if body.get("step") else ""
            reason = f": {d.reason}" if d.reason else ""
            version = d.version or self.manifest.version  # a refused signature names no version
            print(f"{device}: {d.state}{step}{extra} version {version}{reason}", flush=True)
