"""The broker link keeps the order of what the publisher hands it, whatever its own thread does."""

from __future__ import annotations

import json
from pathlib import Path

from edge_runtime.config.sections import MqttConfig
from edge_runtime.publish.mqtt import MqttLink
from edge_runtime.publish.outbox import Outbox
from edge_runtime.publish.publisher import Publisher
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


def test_a_row_committed_while_nothing_is_in_flight_is_sent_by_the_committing_thread(
    broker: Broker, recorder: Recorder, tmp_path: Path
) -> None:
    """At a low rate a result leaves on the thread that committed it, without waiting for the
    publisher thread to wake; while a message is in flight, new rows wait for its PUBACK, which
    the publisher thread handles (here it is started only later)."""
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="t")
    link = MqttLink(cfg, Topics("t", "dev"), client_id="dev", groups=[], status=dict)
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = Publisher(outbox, link)  # its thread is not started yet
    link.start()
    try:
        assert link.connected.wait(10)
        outbox.put("t/fast", lambda seq: json.dumps({"seq": seq}).encode())
        assert wait_for(lambda: len(recorder.on("/fast")) == 1, 10), "not sent by the committing thread"
        outbox.put("t/fast", lambda seq: json.dumps({"seq": seq}).encode())
        assert not wait_for(lambda: len(recorder.on("/fast")) > 1, 0.5), "sent while one was in flight"
        publisher.start()
        assert wait_for(lambda: len(recorder.on("/fast")) == 2 and publisher.idle(), 10)
    finally:
        publisher.stop()
        link.stop()
        outbox.close()
    assert [m["seq"] for m in recorder.on("/fast")] == [1, 2]
    assert publisher.published == 2
