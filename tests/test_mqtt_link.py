"""The broker link keeps the order of what the publisher hands it, whatever its own thread does."""

from __future__ import annotations

import json

from edge_runtime.config.sections import MqttConfig
from edge_runtime.publish.mqtt import MqttLink
from edge_runtime.publish.topics import Topics

from .broker import Broker, Recorder, wait_for

COUNT = 5000


def test_messages_published_from_another_thread_arrive_in_order(broker: Broker, recorder: Recorder) -> None:
    """The publisher thread publishes while the mqtt thread reads PUBACKs and writes its own
    packets; two threads writing one socket reordered packets (seq 2 before seq 1) until all
    writes were left to the mqtt thread."""
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="t", max_inflight=1000)
    link = MqttLink(cfg, Topics("t", "dev"), client_id="dev", groups=[], status=dict)
    link.start()
    try:
        assert link.connected.wait(10)
        sent = 0
        while sent < COUNT:
            if link.publish("t/order", json.dumps({"seq": sent}).encode(), 1) is not None:
                sent += 1
        assert wait_for(lambda: len(recorder.on("/order")) >= COUNT, 60), len(recorder.on("/order"))
    finally:
        link.stop()
    seqs = [m["seq"] for m in recorder.on("/order")]
    assert seqs == list(range(COUNT))
