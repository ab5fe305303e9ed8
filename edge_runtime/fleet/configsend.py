"""``fleet config``: sign a config file, publish it retained as the desired config of a device or a
group, and follow what each device reports (docs/control.md)."""

from __future__ import annotations

import hashlib
import json
import queue
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edge_runtime.control.envelope import MAX_CONFIG_BYTES, ConfigDoc, sign
from edge_runtime.errors import InputError
from edge_runtime.fleet.mqttsession import Session
from edge_runtime.mqttclient import Broker

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DISCOVERY_S = 1.5  # retained births say which devices are in a group
TERMINAL = ("applied", "rejected", "rolled_back")


@dataclass(frozen=True, slots=True)
class Sent:
    """What was published: the envelope, the signed document's version and sha256."""

    payload: bytes
    version: int
    sha256: str


def build(path: Path, target: str, key: Ed25519PrivateKey, *, version: int | None, expires_s: float) -> Sent:
    """The signed document for the config file at ``path`` (InputError when it cannot travel)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
    if len(text) > MAX_CONFIG_BYTES:
        raise InputError(f"{path}: {len(text)} bytes; a config document carries at most {MAX_CONFIG_BYTES}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not YAML: {exc}") from exc
    mqtt = data.get("mqtt") if isinstance(data, dict) else None
    if isinstance(mqtt, dict) and mqtt.get("password") is not None:
        raise InputError(
            f"{path}: mqtt.password: secrets never travel in config documents (use password_file)"
        )
    now = time.time()
    doc = ConfigDoc(
        version=version if version is not None else int(now * 1000),  # newer than any sent before
        target=target,
        created=now,
        expires=now + expires_s if expires_s > 0 else None,
        config=text,
    )
    payload = sign(doc, key)
    document = json.loads(payload)["document"]
    return Sent(payload, doc.version, hashlib.sha256(document.encode()).hexdigest())


def publish_and_follow(
    broker: Broker, *, prefix: str, device: str | None, group: str | None, sent: Sent, wait_s: float
) -> dict[str, dict[str, Any]]:
    """Publish retained; then each targeted device's report on this document (a device that
    reported nothing within ``wait_s`` is absent, or ``{"state": None}`` for a known member)."""
    topic = f"{prefix}/{device}/config/desired" if device else f"{prefix}/groups/{group}/config/desired"
    with Session(broker, [f"{prefix}/+/status", f"{prefix}/+/config/reported"], what="config") as session:
        members: set[str] = {device} if device else set()
        if group:
            members |= _discover(session, prefix, group)
        session.publish(topic, sent.payload, retain=True)
        reports: dict[str, dict[str, Any]] = {m: {"state": None} for m in members}
        deadline = time.monotonic() + wait_s
        while wait_s > 0 and (left := deadline - time.monotonic()) > 0:
            if members and all(reports[m].get("state") in TERMINAL for m in members):
                break
            try:
                message = session.inbox.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            body = _json(message.payload)
            parts = message.topic.split("/")
            online = body.get("state") == "online"
            if message.topic.endswith("/status") and group and online and group in (body.get("groups") or []):
                members.add(parts[-2])
                reports.setdefault(parts[-2], {"state": None})
            elif message.topic.endswith("/config/reported") and body.get("sha256") == sent.sha256:
                who = parts[-3]
                if who in members:
                    reports[who] = body
                    _line(who, body)
    return reports


def _discover(session: Session, prefix: str, group: str) -> set[str]:
    """The group's online members (an offline one gets the retained document when it connects)."""
    members: set[str] = set()
    offline: set[str] = set()
    until = time.monotonic() + DISCOVERY_S
    while (left := until - time.monotonic()) > 0:
        try:
            message = session.inbox.get(timeout=left)
        except queue.Empty:
            break
        body = _json(message.payload)
        if message.topic.endswith("/status") and group in (body.get("groups") or []):
            who = message.topic.split("/")[-2]
            (members if body.get("state") == "online" else offline).add(who)
    for who in sorted(offline - members):
        print(f"{who}: offline; it takes the config when it connects (not waited for)", file=sys.stderr)
    return members


def _json(data: bytes | bytearray) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _line(device: str, body: dict[str, Any]) -> None:
    reason = f": {body['reason']}" if body.get("reason") else ""
    print(f"{device}: {body.get('state')} v{body.get('version')}{reason}", file=sys.stderr)
