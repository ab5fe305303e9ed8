"""Print what a daemon publishes, one readable line per message (a friendlier mosquitto_sub).

python scripts/watch.py [--host localhost] [--port 1883] [--prefix edge] [--seconds S] [--raw]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def describe(topic: str, msg: dict[str, Any]) -> str:
    """A one-line summary of a prediction, health or status message."""
    if "/predictions/" in topic:
        if msg.get("task") == "classification":
            what = ", ".join(f"{c['label']} {c['score']:.2f}" for c in msg.get("classes", [])[:3])
        else:
            what = ", ".join(f"{d['label']} {d['score']:.2f} {d['box']}" for d in msg.get("detections", []))
        lat = msg.get("latency_ms", {})
        return (
            f"{msg['pipeline']:<10} seq {msg['seq']:>5} frame {msg['frame']['index']:>5} "
            f"{lat.get('total', 0):6.1f} ms  {what or '-'}"
        )
    if topic.endswith("/health"):
        return describe_health(msg)
    return f"{topic}: {json.dumps(msg)[:200]}"


def describe_health(msg: dict[str, Any]) -> str:
    """``health  people 15.0 fps, 150 inferred | ... | outbox pending 0 | mqtt connected | rss 170 MB``."""
    parts = []
    for name, p in msg.get("pipelines", {}).items():
        fps = "-" if p.get("fps") is None else f"{p['fps']:.1f}"
        state = p.get("source_state")
        parts.append(
            f"{name} {fps} fps, {p.get('inferred', 0)} inferred"
            + ("" if state == "streaming" else f" (source {state})")
        )
    outbox, mqtt_state = msg.get("outbox", {}), msg.get("mqtt", {})
    dropped = f" dropped {outbox['dropped']}" if outbox.get("dropped") else ""
    link = "connected" if mqtt_state.get("connected") else "disconnected"
    rss = msg.get("system", {}).get("rss_bytes")
    return " | ".join(
        [
            f"health     {parts[0] if parts else 'no pipelines'}",
            *parts[1:],
            f"outbox pending {outbox.get('pending', '?')}{dropped}",
            f"mqtt {link}",
            *([f"rss {rss / 1e6:.0f} MB"] if rss else []),
        ]
    )


def main() -> None:
    """Subscribe to ``PREFIX/#`` and print until interrupted or ``--seconds`` pass."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--prefix", default="edge")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    ap.add_argument("--raw", action="store_true", help="print the JSON payloads")
    args = ap.parse_args()

    def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(m.payload)
        except ValueError:
            print(m.topic, m.payload[:200], flush=True)
            return
        print(f"{m.topic} {m.payload.decode()}" if args.raw else describe(m.topic, body), flush=True)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe(f"{args.prefix}/#", qos=1)
    client.on_message = on_message
    client.connect(args.host, args.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
        client.disconnect()


if __name__ == "__main__":
    main()
