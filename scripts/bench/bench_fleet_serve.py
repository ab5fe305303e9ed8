#!/usr/bin/env python3
"""How fast ``fleet serve`` gets one bundle to N downloading devices, and what it costs.

A private mosquitto, a random signed bundle, the real ``edge-runtime fleet serve`` in a child
process, and N MQTT clients that download it the way a device does: a window of chunk indices
on ``P/updates/<id>/request``, asked again after a second of silence. Prints, side by side for
each N: the time until every client has every chunk, the bytes delivered per second to all
clients together, the copies the server sent per chunk (one copy per second reaches every
client that asked), and the server's peak RSS.

    .venv/bin/python scripts/bench/bench_fleet_serve.py [--devices 1 10 50] [--mib 4]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mqtt import Broker  # noqa: E402

from edge_runtime.update.manifest import (  # noqa: E402
    Manifest,
    chunk_digests,
    generate_keys,
    load_private_key,
    sign,
    update_id,
)

CHUNK = 64 * 1024
WINDOW = 16


def make_bundle(folder: Path, size: int) -> tuple[str, int]:
    data = os.urandom(size)
    key = generate_keys(folder / "keys")[0]
    m = Manifest(
        name="m",
        version="2",
        sha256=hashlib.sha256(data).hexdigest(),
        size=size,
        created=time.time(),
        chunk_size=CHUNK,
        chunk_digests=base64.b64encode(chunk_digests(data, CHUNK)).decode(),
    )
    (folder / "bundles").mkdir()
    (folder / "bundles" / "b.tar").write_bytes(data)
    envelope = sign(m, load_private_key(key))
    (folder / "bundles" / "b.tar.manifest.json").write_text(json.dumps(envelope))
    return update_id(envelope["manifest"]), -(-size // CHUNK)


class Downloader:
    """One simulated device: asks for a window, again after a second of silence, until complete."""

    def __init__(self, port: int, name: str, uid: str, count: int) -> None:
        self.uid, self.count, self.name = uid, count, name
        self.have: set[int] = set()
        self.done = threading.Event()
        self.last = time.monotonic()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"edge/updates/{uid}/chunk/+", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.have.add(int(msg.topic.rsplit("/", 1)[1]))
        self.last = time.monotonic()
        if len(self.have) == self.count:
            self.done.set()
        elif len(self.have) % WINDOW == 0:
            self.ask()

    def ask(self) -> None:
        missing = [i for i in range(self.count) if i not in self.have][:WINDOW]
        body = json.dumps({"device": self.name, "chunks": missing})
        self.client.publish(f"edge/updates/{self.uid}/request", body, qos=0)
        self.last = time.monotonic()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run(n: int, size: int, rate: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Broker(folder).start()
        uid, count = make_bundle(folder, size)
        log = (folder / "serve.log").open("wb")
        args = ["--broker", f"127.0.0.1:{broker.port}", "--max-rate", str(rate)]
        serve = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "fleet", "serve", str(folder / "bundles"), *args],
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        proc = psutil.Process(serve.pid)
        while "connected to" not in (folder / "serve.log").read_text():
            time.sleep(0.05)
        devices = [Downloader(broker.port, f"bench-{i}", uid, count) for i in range(n)]
        peak, start = 0, time.monotonic()
        for d in devices:
            d.ask()
        while not all(d.done.is_set() for d in devices):
            time.sleep(0.05)
            peak = max(peak, proc.memory_info().rss)
            for d in devices:
                if not d.done.is_set() and time.monotonic() - d.last > 1.0:
                    d.ask()
        wall = time.monotonic() - start
        for d in devices:
            d.close()
        serve.terminate()
        serve.wait(10)
        broker.kill()
        sent = (folder / "serve.log").read_text().rsplit("stopped (", 1)[-1].split(" ")[0]
        return {
            "wall_s": wall,
            "mib_s": n * size / wall / 2**20,
            "copies": int(sent) / count,
            "rss_mib": peak / 2**20,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--mib", type=float, default=4.0, help="bundle size")
    parser.add_argument("--rate", type=float, default=8.0, help="fleet serve --max-rate (MiB/s)")
    args = parser.parse_args()
    size = int(args.mib * 2**20)
    print(f"bundle {args.mib} MiB in {CHUNK // 1024} KiB chunks, fleet serve --max-rate {args.rate}")
    print(
        f"{'devices':>8} {'all done s':>11} {'MiB/s to all':>13} {'copies/chunk':>13} {'serve RSS MiB':>14}"
    )
    for n in args.devices:
        r = run(n, size, args.rate)
        print(f"{n:>8} {r['wall_s']:>11.2f} {r['mib_s']:>13.1f} {r['copies']:>13.2f} {r['rss_mib']:>14.1f}")


if __name__ == "__main__":
    main()
