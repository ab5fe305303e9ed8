"""Outbox throughput: messages/s committed to SQLite, and messages/s replayed after an outage.

    python scripts/bench/bench_outbox.py [--seconds S] [--rounds R] [--replay N] [--out DIR]

Commit: ``Outbox.put`` (one transaction per message) and ``Outbox.put_many`` (one per batch), with
``synchronous=NORMAL`` (the default) and ``FULL``, on a disk folder under ``--out`` (not /tmp, which
may be RAM). Payloads are a realistic ~450-byte prediction, encoded once; the rate is the store's.

Replay: a child process runs the daemon's own Outbox, MqttLink and Publisher against a port where
no broker listens yet, fills ``N`` messages, then the broker is started and a subscriber (QoS 1)
waits for all of them. Rates are counted from the moment the link connected: until the outbox is
empty (every PUBACK in, rows deleted) and until the subscriber has received the last message.
Rounds alternate and the median is reported. ``scripts/bench/benchmark.py --only outbox`` runs this.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from bench_mqtt import Broker, Subscriber, free_port  # noqa: E402

TOPIC = "bench/outbox/predictions/front"


def sample_payload(seq: int) -> bytes:
    """A prediction as the daemon publishes it (detection of one person)."""
    return json.dumps(
        {
            "id": "5f0c9a3e6b2d4c1e8a7f9b0d2c4e6a81",
            "seq": seq,
            "ts": 1763740000.123,
            "device": "cam-01",
            "pipeline": "front",
            "frame": {"index": seq, "ts": 1763740000.101, "width": 640, "height": 480},
            "model": {"name": "ssdlite_mobilenet_v2_person", "version": "1", "sha256": "c909eb04" * 8},
            "task": "detection",
            "detections": [{"class_id": 0, "label": "person", "score": 0.91, "box": [0.1, 0.2, 0.3, 0.4]}],
            "latency_ms": {"capture": 0.4, "preprocess": 1.1, "inference": 7.0, "postprocess": 0.3},
        },
        separators=(",", ":"),
    ).encode()


def commit_rate(folder: Path, synchronous: str, batch: int, seconds: float) -> dict[str, Any]:
    """Messages/s stored by ``put`` (batch 1) or ``put_many`` (batch > 1) for ``seconds``."""
    from edge_runtime.publish.outbox import Outbox, Outgoing

    path = folder / f"commit-{synchronous}-{batch}.db"
    box = Outbox(path, synchronous=synchronous, max_messages=10_000_000)  # type: ignore[arg-type]
    data = sample_payload(1)
    items = [Outgoing(TOPIC, lambda _seq: data)] * batch
    n, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            if batch == 1:
                box.put(TOPIC, lambda _seq: data)
            else:
                box.put_many(items)
            n += batch
        elapsed = time.perf_counter() - start
    finally:
        box.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"messages": n, "seconds": round(elapsed, 3), "per_s": n / elapsed}


def commit_rates(folder: Path, seconds: float, rounds: int, log: Any = print) -> dict[str, Any]:
    """Every (synchronous, batch) combination, interleaved over ``rounds``; medians."""
    combos = [(s, b) for s in ("normal", "full") for b in (1, 10, 100)]
    runs: dict[str, list[float]] = {f"{s}/{'put' if b == 1 else f'put_many({b})'}": [] for s, b in combos}
    for r in range(rounds):
        for s, b in combos:
            key = f"{s}/{'put' if b == 1 else f'put_many({b})'}"
            rate = commit_rate(folder, s, b, seconds)["per_s"]
            runs[key].append(rate)
            log(f"  outbox commit round {r + 1}/{rounds} {key:22s} {rate:10.0f} msg/s")
    return {k: {"median_per_s": statistics.median(v), "runs_per_s": v} for k, v in runs.items()}


def replay_worker(db: str, port: int, count: int, inflight: int) -> None:
    """Child side: fill the outbox while the broker is down, then publish until it is empty."""
    import logging

    logging.basicConfig(level=logging.ERROR)  # "cannot connect" warnings are the point of an outage
    from edge_runtime.config.sections import MqttConfig
    from edge_runtime.publish.mqtt import MqttLink
    from edge_runtime.publish.outbox import Outbox, Outgoing
    from edge_runtime.publish.publisher import Publisher
    from edge_runtime.publish.topics import Topics

    box = Outbox(Path(db), max_messages=count * 2)
    cfg = MqttConfig(
        host="127.0.0.1",
        port=port,
        keepalive=30,
        reconnect_min_s=1.0,
        reconnect_max_s=1.0,
        max_inflight=inflight,
    )
    link = MqttLink(cfg, Topics("bench", "outbox"), client_id="bench-replay", groups=[], status=dict)
    link.start()  # keeps failing to connect: the broker is down
    publisher = Publisher(box, link, max_inflight=inflight)
    publisher.start()
    for start in range(0, count, 500):
        box.put_many([Outgoing(TOPIC, sample_payload)] * min(500, count - start))
    print(f"FILLED {box.pending}", flush=True)
    link.connected.wait()
    connected = time.time()
    while not publisher.idle():
        time.sleep(0.001)
    drained = time.time()
    print("RESULT " + json.dumps({"connected": connected, "drained": drained}), flush=True)
    publisher.stop()
    link.stop()
    box.close()


def replay_once(folder: Path, count: int, inflight: int) -> dict[str, Any]:
    """One outage: returns the rates (or why the round is void)."""
    port = free_port()
    db = folder / f"replay-{port}.db"
    cmd = [sys.executable, __file__, "--replay-worker", str(db), str(port), str(count), str(inflight)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    broker = subscriber = None
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("FILLED"):
            raise RuntimeError(f"replay worker failed: {line}")
        broker = Broker(folder, port).start()
        subscriber = Subscriber(port, TOPIC, client_id=f"bench-replay-sub-{port}")
        line = child.stdout.readline()
        if not line.startswith("RESULT"):
            raise RuntimeError(f"replay worker failed: {line}")
        times = json.loads(line.split(" ", 1)[1])
        deadline = time.monotonic() + 60
        while subscriber.count() < count and time.monotonic() < deadline:
            time.sleep(0.01)
        child.wait(30)
        got = subscriber.count()
        last = max(t for t, _, _ in subscriber.records) if subscriber.records else float("nan")
        raced = subscriber.subscribed_at is None or subscriber.subscribed_at > times["connected"]
        seqs = {json.loads(p)["seq"] for _, _, p in subscriber.records}
        return {
            "messages": count,
            "received": got,
            "distinct_seq": len(seqs),
            "void": "subscriber subscribed after the link connected" if raced else None,
            "drain_s": round(times["drained"] - times["connected"], 3),
            "receive_s": round(last - times["connected"], 3),
            "drained_per_s": count / (times["drained"] - times["connected"]),
            "received_per_s": got / (last - times["connected"]),
        }
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        if subscriber is not None:
            subscriber.close()
        if broker is not None:
            broker.kill()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)


def replay_rates(folder: Path, count: int, rounds: int, inflight: int, log: Any = print) -> dict[str, Any]:
    """``rounds`` valid outages (a void one is repeated, up to twice as many tries)."""
    runs: list[dict[str, Any]] = []
    tries = 0
    while len(runs) < rounds and tries < 2 * rounds:
        tries += 1
        run = replay_once(folder, count, inflight)
        log(
            f"  outbox replay {len(runs) + 1}/{rounds} (max_inflight {inflight}): {run['received']}/{count} "
            f"received, drained {run['drained_per_s']:.0f} msg/s, received {run['received_per_s']:.0f} msg/s"
            + (f" [void: {run['void']}]" if run["void"] else "")
        )
        if not run["void"]:
            runs.append(run)
    return {
        "messages": count,
        "max_inflight": inflight,
        "median_drained_per_s": statistics.median(r["drained_per_s"] for r in runs) if runs else None,
        "median_received_per_s": statistics.median(r["received_per_s"] for r in runs) if runs else None,
        "all_received": all(r["received"] == count and r["distinct_seq"] == count for r in runs),
        "runs": runs,
    }


def run(
    out: Path, seconds: float, rounds: int, *, replay: int, inflight: list[int], log: Any = print
) -> dict[str, Any]:
    """Commit and replay measurements in a scratch folder under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="outbox-", dir=out))
    try:
        return {
            "payload_bytes": len(sample_payload(1)),
            "folder_filesystem_note": "scratch folder under --out (disk), not /tmp",
            "commit": commit_rates(folder, seconds, rounds, log),
            "replay": [replay_rates(folder, replay, rounds, n, log) for n in inflight],
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    """CLI."""
    if len(sys.argv) > 1 and sys.argv[1] == "--replay-worker":
        db, port, count, inflight = sys.argv[2:6]
        replay_worker(db, int(port), int(count), int(inflight))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per commit measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replay", type=int, default=20_000, help="messages stored during the outage")
    ap.add_argument("--inflight", type=int, nargs="+", default=[100], help="publisher windows to try")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = ap.parse_args()
    print(
        json.dumps(
            run(args.out, args.seconds, args.rounds, replay=args.replay, inflight=args.inflight), indent=1
        )
    )


if __name__ == "__main__":
    main()
