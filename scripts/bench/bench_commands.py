"""What a flood of command requests costs the pipelines: predictions per second without and with it.

    .venv/bin/python scripts/bench/bench_commands.py [--seconds 15] [--flood-rate 2000]

Starts a private mosquitto and the real daemon (the person detector on an unpaced synthetic
source, 1 thread), then measures in turn (quiet, ping, quiet, pause): predictions per second with
no requests; with a flood of unsigned ``ping`` requests (with a response topic) at ``--flood-rate``
a second from another client; and with the same flood of unsigned ``pause`` requests (refused).
Prints each rate, its ratio to the mean of the quiet ones, the daemon's CPU per prediction, the
answers received, and the daemon's control counters. On a shared machine the rates drift with
the neighbours' load; the daemon's CPU per prediction is the steadier number.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from bench_mqtt import Broker, Subscriber  # noqa: E402

from tests.daemon import DaemonProcess, make_config  # noqa: E402

DEVICE = "cam-test"


def flood(port: int, name: str, rate: float, seconds: float, answers: list[int]) -> int:
    """Publish requests on ``P/D/cmd/NAME`` at ``rate`` a second for ``seconds``; how many sent."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{name}", protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe("bench/replies", qos=0)
    client.on_message = lambda *_: answers.append(1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = "bench/replies"
    props.CorrelationData = b"x"
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        if sent < elapsed * rate:
            client.publish(
                f"edge/{DEVICE}/cmd/{name}", b'{"args": {"pipeline": "front"}}', qos=0, properties=props
            )
            sent += 1
        else:
            time.sleep(0.001)
    client.loop_stop()
    client.disconnect()
    return sent


def rate_during(
    sub: Subscriber, proc: psutil.Process, seconds: float, work: Any = None
) -> tuple[float, float]:
    """Predictions per second received while ``work()`` runs (or for ``seconds``), and the
    daemon's CPU milliseconds per prediction meanwhile."""
    sub.clear()
    cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
    if work is None:
        time.sleep(seconds)
    else:
        work()
    count, cpu = sub.count(), sum(proc.cpu_times()[:2]) - cpu0
    return count / (time.monotonic() - t0), 1e3 * cpu / max(1, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--flood-rate", type=float, default=2000.0, help="requests per second in a flood")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(tmp).start()
        source = {"type": "synthetic", "width": 320, "height": 240, "fps": 0}
        config = make_config(
            tmp,
            broker.port,
            tmp / "unused.mp4",
            pipelines=[{"name": "front", "model": "person", "source": source}],
        )
        daemon = DaemonProcess(config, tmp / "daemon.log")
        sub = Subscriber(broker.port, f"edge/{DEVICE}/predictions/#")
        health = Subscriber(broker.port, f"edge/{DEVICE}/health", client_id="bench-health")
        try:
            deadline = time.monotonic() + 60
            while sub.count() < 20 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3)  # warm up
            proc = psutil.Process(daemon.proc.pid)
            rows = []
            for name in ("quiet", "ping", "quiet", "pause"):  # interleaved: drift on a shared machine
                answers: list[int] = []
                box: dict[str, int] = {"sent": 0}

                def work(n: str = name, a: list[int] = answers, b: dict[str, int] = box) -> None:
                    b["sent"] = flood(broker.port, n, args.flood_rate, args.seconds, a)

                rate, cpu = rate_during(sub, proc, args.seconds, None if name == "quiet" else work)
                rows.append(
                    (name if name == "quiet" else f"flood of {name}", rate, cpu, box["sent"], len(answers))
                )
            quiet = (rows[0][1] + rows[2][1]) / 2
            time.sleep(2)
            last = json.loads(health.records[-1][2]) if health.records else {}
            print(
                f"{'phase':<16} {'pred/s':>8} {'ratio':>6} {'cpu ms/pred':>12} {'requests':>9} {'answers':>8}"
            )
            for label, rate, cpu, sent, got in rows:
                print(f"{label:<16} {rate:8.1f} {rate / quiet:6.2f} {cpu:12.1f} {sent:9d} {got:8d}")
            print("control counters:", json.dumps(last.get("control")))
        finally:
            daemon.terminate()
            sub.close()
            health.close()
            broker.kill()


if __name__ == "__main__":
    main()
