"""The broker link keeps the order of what the publisher hands it, whatever its own thread does."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from edge_runtime.config.sections import MqttConfig
from edge_runtime.publish.mqtt import MqttLink
from edge_runtime.publish.outbox import Outbox
from edge_runtime.publish.publisher import Publisher
from edge_runtime.publish.topics import Topics
from tests.timeouts import scaled

from ..broker import Broker, Recorder, wait_for

COUNT = 5000


def test_messages_published_from_another_thread_arrive_in_order(broker: Broker, recorder: Recorder) -> None:
    """The publisher thread publishes while the mqtt thread reads PUBACKs and writes its own
    packets; two threads writing one socket reordered packets (seq 2 before seq 1) until all
    writes were left to the mqtt thread."""
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="t", max_inflight=1000)
    link = MqttLink(cfg, Topics("t", "dev"), client_id="dev", groups=[], status=dict)
    link.start()
    try:
        assert link.connected.wait(scaled(10))
        sent = 0
        while sent < COUNT:
            if link.publish("t/order", json.dumps({"seq": sent}).encode(), 1) is not None:
                sent += 1
        assert wait_for(lambda: len(recorder.on("/order")) >= COUNT, 60), len(recorder.on("/order"))
    finally:
        link.stop()
    seqs = [m["seq"] for m in recorder.on("/order")]
    assert seqs == list(range(COUNT))


def test_the_committing_thread_sends_its_rows_and_takes_the_acks_that_came_meanwhile(
    broker: Broker, recorder: Recorder, tmp_path: Path
) -> None:
    """At a low rate a result leaves on the thread that committed it, without waiting for the
    publisher thread to wake; that thread also takes the PUBACKs that came since (no wake-up per
    ack). Delivered rows are deleted in batches by the publisher thread (here started only later).
    While the broker is paused a row waits behind the one in flight, and goes after its PUBACK."""
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="t")
    link = MqttLink(cfg, Topics("t", "dev"), client_id="dev", groups=[], status=dict)
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = Publisher(outbox, link)  # its thread is not started yet
    link.start()

    def put() -> None:
        outbox.put("t/fast", lambda seq: json.dumps({"seq": seq}).encode())

    try:
        assert link.connected.wait(scaled(10))
        assert wait_for(lambda: link.acks.qsize() == 1, 10), "no PUBACK for the link's own status"
        put()  # takes that ack from the queue, then sends
        assert wait_for(lambda: len(recorder.on("/fast")) == 1, 10), "not sent by the committing thread"
        assert wait_for(lambda: link.acks.qsize() == 1, 10), "no PUBACK"
        put()
        assert wait_for(lambda: len(recorder.on("/fast")) == 2, 10), "not sent after the PUBACK came"
        assert publisher.published == 1 and outbox.pending == 1
        assert outbox.delivered_waiting[0] == 1  # delivered, deleted by the next commit or later
        publisher.start()
        assert wait_for(lambda: outbox.pending == 0 and publisher.idle(), 10), "delivered rows not deleted"
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            put()  # in flight: no PUBACK while the broker is paused
            put()
            assert not wait_for(publisher.idle, 0.5)
            assert outbox.pending == 2
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        assert wait_for(lambda: len(recorder.on("/fast")) == 4 and publisher.idle(), 10)
    finally:
        publisher.stop()
        link.stop()
        outbox.close()
    assert [m["seq"] for m in recorder.on("/fast")] == [1, 2, 3, 4]
    assert publisher.published == 4 and outbox.pending == 0


def test_a_failing_handler_never_ends_the_link_and_a_dropped_route_delivers_nothing(
    broker: Broker, recorder: Recorder
) -> None:
    """Anyone may publish on a routed topic: a handler that raises on a hostile message is logged
    and the link goes on receiving and publishing. A route that is dropped is unsubscribed."""
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="t")
    link = MqttLink(cfg, Topics("t", "dev"), client_id="dev", groups=[], status=dict)
    got: list[tuple[str, bytes]] = []

    def real(messages: list[tuple[str, bytes]]) -> list[bytes]:
        return [payload for _topic, payload in messages if payload != b"probe"]

    def handler(topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise ValueError("hostile payload")
        got.append((topic, payload))

    link.route("t/x/chunk/+", handler)
    link.start()
    try:
        assert link.connected.wait(scaled(10))
        assert recorder.subscribed.wait(scaled(10))
        # the link's SUBSCRIBE and the recorder's PUBLISH race at the broker: probe until routed
        assert wait_for(
            lambda: bool(recorder.client.publish("t/x/chunk/0", b"probe", qos=1)) and bool(got), 10
        )
        got.clear()
        for payload in (b"boom", "²".encode(), b"ok"):
            recorder.client.publish("t/x/chunk/1", payload, qos=1)
        assert wait_for(lambda: len(real(got)) == 2, 10), got
        assert link.connected.is_set()
        assert link.publish("t/alive", b"{}", 1) is not None
        assert wait_for(lambda: len(recorder.on("/alive")) == 1, 10), "the link stopped publishing"
        link.route("t/x/chunk/+", None)
        recorder.client.publish("t/x/chunk/2", b"late", qos=1)
        recorder.client.publish("t/x/chunk/3", b"later", qos=1)
        assert wait_for(lambda: len(recorder.on("/chunk/3")) == 1, 10)
        assert link.publish("t/alive", b"{}", 1) is not None
        assert wait_for(lambda: len(recorder.on("/alive")) == 2, 10)
    finally:
        link.stop()
    assert [p for _t, p in got if p != b"probe"] == ["²".encode(), b"ok"], (
        "nothing after the route was dropped"
    )


def test_answers_waiting_for_their_puback_are_bounded(broker: Broker, recorder: Recorder) -> None:
    """While the broker takes nothing (paused: a slow uplink), at most ``max_answers`` answers
    wait in paho's memory; the rest are refused, not queued. Once acknowledged, answers go again."""
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="t")
    link = MqttLink(cfg, Topics("t", "dev"), client_id="dev", groups=[], status=dict, max_answers=3)
    link.start()
    try:
        assert link.connected.wait(scaled(10))
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            sent = [link.respond("r/answers", b"x" * 1000, b"c") for _ in range(20)]
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        assert sent.count(True) == 3 and sent[:3] == [True] * 3, sent
        assert wait_for(lambda: len(recorder.on("r/answers")) == 3, 20)
        assert wait_for(lambda: link.respond("r/answers", b"again", None), 20)
    finally:
        link.stop()
