"""Hostile publishers against real updates: a real broker, real daemons, the real ``push``.

Anyone who may publish on the device's topics sends forged copies of the update being pushed,
deep nesting, chunks out of range, of the wrong size or with other bytes, and replays of the
signed envelope whose unsigned transfer points nowhere: the update still ends ``active`` and
``push --wait`` exits 0. A flood of unsigned manifests costs no status message, no outbox row,
no prediction and only a handful of log lines.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.broker import Broker, wait_for
from tests.daemon import ROOT
from tests.timeouts import scaled
from tests.update.test_updates import Device, RangeHandler, kit, signed, update_id

pytestmark = pytest.mark.slow
__all__ = ["kit"]  # the module-scoped fixture, shared with test_updates.py

DEVICE_TOPIC = "edge/cam-test/model/update"


def _client(port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hostile-{os.urandom(4).hex()}")
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _push(bundle: Path, broker: Broker, *extra: str, wait: float = 120) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "edge_runtime", "push", str(bundle), "--device", "cam-test"),
            *("--broker", f"127.0.0.1:{broker.port}", "--wait", str(wait), *extra),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port that accepts TCP connections into its backlog and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield int(s.getsockname()[1])
    s.close()


def _envelope(bundle: Path, **changes: Any) -> dict[str, Any]:
    return {**json.loads(Path(f"{bundle}.manifest.json").read_text()), **changes}


class Attacker:
    """Publishes hostile messages about one update, round after round, until stopped."""

    def __init__(self, port: int, bundle: Path, dead_url: str) -> None:
        self.client, self.uid = _client(port), update_id(bundle)
        self.envelope, self.dead_url, self.size = _envelope(bundle), dead_url, bundle.stat().st_size
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Attacker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(scaled(10))
        self.client.loop_stop()
        self.client.disconnect()

    def _run(self) -> None:
        chunks = f"edge/updates/{self.uid}/chunk"
        while not self._stop.wait(0.05):
            forged = {**self.envelope, "signature": base64.b64encode(os.urandom(64)).decode()}
            replay = {**self.envelope, "transfer": {"type": "url", "url": self.dead_url}}
            for payload in (
                json.dumps(forged),  # a) the real manifest, a random signature
                b"[" * 30_000 + b"]" * 30_000,  # c) deep nesting under the size limit
                json.dumps(replay),  # d) the signed envelope, an unsigned transfer to nowhere
            ):
                self.client.publish(DEVICE_TOPIC, payload, qos=1)
            self.client.publish(f"{chunks}/999999", b"x", qos=1)  # b) out of range
            index = self.rounds % 8
            self.client.publish(f"{chunks}/{index}", b"short", qos=1)  # the wrong size
            self.client.publish(f"{chunks}/{index}", os.urandom(100_000), qos=1)  # right size, other bytes
            self.rounds += 1


def test_a_hostile_publisher_cannot_end_or_stall_a_real_update(
    tmp_path: Path, broker: Broker, kit: dict[str, Path], dead_port: int
) -> None:
    """Forged copies of the update, deep nesting, replays with a dead transfer and bad chunks all
    the while a real update runs: it goes active, push --wait exits 0, no status names the update
    for what the attacker sent, predictions never stop, and health counts what was refused."""
    dev = Device(tmp_path / "dev", broker, kit, updates={"chunk_window": 4}).start()
    try:
        bundle = signed(kit, tmp_path / "b" / "v2.tar", sign_args=("--chunk-size", "100000"))
        uid = update_id(bundle)
        with Attacker(broker.port, bundle, f"http://127.0.0.1:{dead_port}/b.tar") as attacker:
            pusher = _push(bundle, broker)
            out, _ = pusher.communicate(timeout=scaled(200))
        assert pusher.returncode == 0, out + dev.log()[-3000:]
        assert attacker.rounds > 0
        states = [s["state"] for s in dev.statuses(uid)]
        assert states[-1] == "active" and "rejected" not in states, states
        counted = dev.updates()
        assert counted["unauthenticated"] > 0 and counted["ignored_chunks"] > 0, counted
        assert "internal error" not in dev.log() and "Traceback" not in dev.log()
        mark = time.time()
        assert wait_for(lambda: dev.versions_after(mark) == {"2"}, 20)
        dev.assert_no_gap({"1", "2"})  # predictions never stopped: no seq or frame lost
    finally:
        dev.stop()


def test_a_replayed_envelope_with_a_dead_source_cannot_hold_the_update(
    tmp_path: Path, broker: Broker, kit: dict[str, Path], dead_port: int
) -> None:
    """The signed envelope is replayed first with an unsigned transfer to an address that never
    answers: the device starts the job, but the operator's push (by chunks) still completes it,
    long before the download timeout. The same for a format 1 manifest pushed by URL: the dead
    hint stalls, and the operator's URL from the later copy is tried next."""
    dev = Device(tmp_path / "dev", broker, kit, updates={"download_timeout_s": 300}).start()
    dead = f"http://127.0.0.1:{dead_port}/b.tar"
    attacker = _client(broker.port)
    www = tmp_path / "www"
    handler = lambda *a: RangeHandler(*a, directory=str(www))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for bundle, extra in (
            (signed(kit, tmp_path / "b" / "v2.tar"), ()),
            (
                signed(kit, www / "v3.tar", version="3", sign_args=("--format", "1")),
                ("--url", f"http://127.0.0.1:{server.server_address[1]}/v3.tar"),
            ),
        ):
            uid = update_id(bundle)
            replay = _envelope(bundle, transfer={"type": "url", "url": dead})
            attacker.publish(DEVICE_TOPIC, json.dumps(replay), qos=1).wait_for_publish(5)
            assert wait_for(lambda uid=uid: any(s["state"] == "downloading" for s in dev.statuses(uid)), 30)
            pusher = _push(bundle, broker, *extra, wait=120)
            out, _ = pusher.communicate(timeout=scaled(200))
            assert pusher.returncode == 0, out + dev.log()[-3000:]
            assert dev.final(uid)["state"] == "active"
        mark = time.time()
        assert wait_for(lambda: dev.versions_after(mark) == {"3"}, 30)
    finally:
        server.shutdown()
        attacker.loop_stop()
        attacker.disconnect()
        dev.stop()


def test_a_flood_of_unsigned_manifests_costs_no_prediction(
    tmp_path: Path, broker: Broker, kit: dict[str, Path]
) -> None:
    """Thousands of manifests with random signatures while the pipeline runs, with a small outbox:
    no status message, no outbox row dropped, no gap in the predictions' seq; health counts every
    one; the log gets a handful of lines."""
    dev = Device(tmp_path / "dev", broker, kit, outbox={"max_messages": 200}).start()
    try:
        envelope = _envelope(signed(kit, tmp_path / "b" / "v2.tar"))
        lines = len(dev.log().splitlines())
        flood = 3000
        flooder = _client(broker.port)
        for i in range(flood):
            forged = {**envelope, "signature": base64.b64encode(os.urandom(64)).decode()}
            flooder.publish(DEVICE_TOPIC, json.dumps(forged) if i % 10 else b"{" * 40_000, qos=0)
        assert wait_for(lambda: sum(dev.updates().get(k, 0) for k in ("refused", "dropped")) >= flood, 60), (
            dev.updates()
        )
        flooder.loop_stop()
        flooder.disconnect()
        mark = len(dev.predictions())
        assert wait_for(lambda: len(dev.predictions()) > mark + 5, 30)
        health = [h for h in dev.recorder.on("/health") if isinstance(h, dict)][-1]
        assert health["outbox"]["dropped"] == 0, health["outbox"]
        assert dev.statuses() == []
        seqs = sorted(p["seq"] for p in dev.predictions())
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a prediction was lost"
        assert len(dev.log().splitlines()) - lines <= 15, dev.log()[-3000:]
    finally:
        dev.stop()
