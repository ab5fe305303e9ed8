"""The operator's side of desired state: where a device's or a group's update is kept, and clearing it.

``push`` publishes a signed update retained on :func:`update_topic`; :func:`clear` publishes an
empty retained message there, so the broker forgets it (docs/updates.md, Clearing). Devices ignore
an empty message: nothing is rolled back.
"""

from __future__ import annotations

import uuid

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.mqttclient import Broker, make_client


def update_topic(prefix: str, device: str | None, group: str | None) -> str:
    """``P/D/model/update`` for a device, else ``P/groups/G/model/update``."""
    if device:
        return f"{prefix}/{device}/model/update"
    return f"{prefix}/groups/{group}/model/update"


def clear(broker: Broker, topic: str, timeout: float = 10.0) -> None:
    """Remove the retained update on ``topic`` (an empty retained message, QoS 1, acknowledged)."""
    client = make_client(broker, f"edge-clear-{uuid.uuid4().hex[:8]}")
    try:
        client.connect(broker.host, broker.port, keepalive=broker.keepalive)
    except (OSError, ValueError) as exc:
        raise EdgeRuntimeError(f"cannot connect to the broker {broker}: {exc}") from exc
    client.loop_start()
    try:
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout)
    finally:
        client.loop_stop()
        client.disconnect()
