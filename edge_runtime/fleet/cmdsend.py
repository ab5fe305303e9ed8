"""``fleet cmd``: one MQTT v5 request to one device, and its answer (docs/control.md)."""

from __future__ import annotations

import json
import queue
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.control.envelope import CommandDoc, sign
from edge_runtime.fleet.mqttsession import Session
from edge_runtime.mqttclient import Broker

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNED_FOR_S = 60.0  # a signed command expires this long after it is sent (device limit: 300 s)


def request_payload(
    device: str, name: str, args: dict[str, str], key: Ed25519PrivateKey | None, now: float | None = None
) -> bytes:
    """The request body: a signed envelope with ``key``, else ``{"args": ...}``."""
    if key is None:
        return json.dumps({"args": args}).encode()
    now = time.time() if now is None else now
    doc = CommandDoc(
        name=name,
        args=args,
        target=f"device:{device}",
        nonce=secrets.token_hex(16),
        created=now,
        expires=now + SIGNED_FOR_S,
    )
    return sign(doc, key)


def send(
    broker: Broker,
    *,
    prefix: str,
    device: str,
    name: str,
    payload: bytes,
    wait_s: float,
) -> dict[str, Any] | None:
    """Publish the request on ``P/D/cmd/NAME``; the device's answer, or None after ``wait_s``."""
    reply_topic = f"{prefix}/replies/{uuid.uuid4().hex}"
    correlation = uuid.uuid4().bytes
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = reply_topic
    props.CorrelationData = correlation
    with Session(broker, [reply_topic], what="cmd") as session:
        session.publish(f"{prefix}/{device}/cmd/{name}", payload, props=props)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = session.inbox.get(timeout=left)
            except queue.Empty:
                break
            if getattr(message.properties, "CorrelationData", None) != correlation:
                continue
            try:
                answer = json.loads(message.payload)
            except ValueError:
                continue
            if isinstance(answer, dict):
                return answer
    return None
