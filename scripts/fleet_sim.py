#!/usr/bin/env python3
"""A fleet on one machine: N real daemons on one mosquitto, three rollouts, timings and memory.

Every device is a real ``edge-runtime run`` with its own state folder, serving the small
vibration detector on a recorded sensor stream replayed at a low rate (one window every ~10 s),
in group ``sim``. Then:

1. **rollout to all**: ``push --group sim --waves 1,10%,50%,100% --max-failures 10%`` of version
   2; the time until every device is ``active``;
2. **20% away**: devices ``sim-xx4`` and ``sim-xx9`` are stopped as the push of version 3 starts
   (``--waves 50%,100%``); the push ends with them ``pending``; then ``fleet serve`` runs (no
   push) and they are started again: the time until they are all ``active``, and ``fleet status
   --json`` lists every device online on version 3;
3. **a bad model**: version 4 whose golden vectors are wrong, pushed with ``--waves
   1,10%,50%,100% --max-failures 0``: the first device refuses it and the rollout stops there;
   every other device never hears of it and serves version 3.

Prints N, the times, the broker's and the daemons' resident memory (sum and mean), and a last
line ``RESULT {json}``::

    python scripts/fleet_sim.py --n 20 [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))
import fleet_kit as kit  # noqa: E402 - sibling: keys, bundles and the device fleet
from bench_mqtt import Broker  # noqa: E402

from edge_runtime.fleet.records import Device, FleetState  # noqa: E402
from edge_runtime.fleet.view import serving  # noqa: E402
from edge_runtime.fleet.watch import FleetWatcher  # noqa: E402
from edge_runtime.mqttclient import Broker as Endpoint  # noqa: E402
from edge_runtime.update.manifest import update_id  # noqa: E402

WAVES_ALL, WAVES_AWAY, WAVES_BAD = "1,10%,50%,100%", "50%,100%", "1,10%,50%,100%"
FAILED = ("rejected", "rolled_back")


class Observer:
    """Watches the fleet's retained status and model status (the operator's view)."""

    def __init__(self, port: int) -> None:
        self.state = FleetState("edge")
        self.watcher = FleetWatcher(Endpoint("127.0.0.1", port), self.state, client_prefix="sim-observer")
        self.watcher.start()

    def count(self, ids: list[str], test: Any) -> int:
        return sum(1 for i in ids if i in self.state.devices and test(self.state.devices[i]))

    def wait(self, ids: list[str], test: Any, timeout: float) -> float | None:
        """Seconds until ``test`` holds for every device in ``ids`` (None: not within timeout)."""
        start = time.monotonic()
        while self.count(ids, test) < len(ids):
            if time.monotonic() - start > timeout:
                return None
            self.watcher.drain(time.monotonic() + 0.2)
        return round(time.monotonic() - start, 2)

    def close(self) -> None:
        self.watcher.close()


def active_on(uid: str) -> Any:
    return lambda d: d.online and d.update is not None and d.update.id == uid and d.update.state == "active"


def version_of(d: Device) -> str | None:
    models = list(serving(d).values())
    return models[0]["version"] if models else None


def push(port: int, bundle: Path, waves: str, *flags: str, timeout: float = 900) -> subprocess.Popen[str]:
    args = ["push", str(bundle), "--group", kit.GROUP, "--broker", f"127.0.0.1:{port}", "--waves", waves]
    return subprocess.Popen(
        [sys.executable, "-m", "edge_runtime", *args, *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def scenario_all(fleet: kit.Fleet, obs: Observer, k: kit.Kit, port: int) -> dict[str, Any]:
    start = time.monotonic()
    rc, out = finish(push(port, k.v2, WAVES_ALL, "--max-failures", "10%", "--wave-timeout", "300"), 1800)
    waited = obs.wait(fleet.ids, active_on(k.uid(k.v2)), 60)
    return {
        "exit": rc,
        "seconds_to_all_active": round(time.monotonic() - start, 2) if waited is not None else None,
        "active": obs.count(fleet.ids, active_on(k.uid(k.v2))),
        "output": out,
    }


def scenario_away(
    fleet: kit.Fleet, obs: Observer, k: kit.Kit, port: int, work: Path, *, wave_timeout: float
) -> dict[str, Any]:
    away = [i for n, i in enumerate(fleet.ids) if n % 5 == 4] or fleet.ids[-1:]
    proc = push(port, k.v3, WAVES_AWAY, "--wave-timeout", str(wave_timeout))
    fleet.stop(away)  # while the push discovers the group and starts its first wave
    rc, out = finish(proc, 1800)
    uid = k.uid(k.v3)
    here = [i for i in fleet.ids if i not in away]
    before = obs.count(away, lambda d: d.update is not None and d.update.id == uid)
    server = kit.serve(work, k.bundles, port)
    try:
        fleet.start(away)
        waited = obs.wait(fleet.ids, active_on(uid), 600)
        status = kit.cli("fleet", "status", "--broker", f"127.0.0.1:{port}", "--json", "--wait", "15")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    rows = json.loads(status.stdout) if status.returncode == 0 else []
    listed = {r["device"]: r for r in rows}
    right = [i for i in fleet.ids if listed.get(i, {}).get("online") and _version(listed[i]) == "3"]
    return {
        "exit": rc,
        "away": away,
        "updated_while_away": before,
        "active_before_return": obs.count(here, active_on(uid)),
        "seconds_after_return_to_all_active": waited,
        "status_rows": len(rows),
        "status_online_on_3": len(right),
        "output": out,
    }


def _version(r: dict[str, Any]) -> str | None:
    return next((m["version"] for m in r["models"].values()), None)


def retained_updates(port: int) -> dict[str, str]:
    """device -> update id of the manifest retained on its ``model/update`` topic (cleared: absent)."""
    found: dict[str, str] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sim-retained", protocol=mqtt.MQTTv5)

    def take(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain and msg.payload:
            found[msg.topic.split("/")[1]] = update_id(json.loads(msg.payload)["manifest"])

    client.on_message = take
    client.connect("127.0.0.1", port)
    client.subscribe("edge/+/model/update", qos=1)
    client.loop_start()
    time.sleep(1.5)  # retained messages come at once after the subscription
    client.loop_stop()
    client.disconnect()
    return found


def scenario_bad(fleet: kit.Fleet, obs: Observer, k: kit.Kit, port: int) -> dict[str, Any]:
    uid = k.uid(k.v4)
    start = time.monotonic()
    rc, out = finish(push(port, k.v4, WAVES_BAD, "--max-failures", "0", "--wave-timeout", "300"), 1800)
    seconds = round(time.monotonic() - start, 2)
    obs.watcher.drain(time.monotonic() + 2)
    tried = [i for i in fleet.ids if obs.count([i], lambda d: d.update is not None and d.update.id == uid)]
    failed = obs.count(
        fleet.ids, lambda d: d.update is not None and d.update.id == uid and d.update.state in FAILED
    )
    on_3 = obs.count(fleet.ids, lambda d: version_of(d) == "3")
    return {
        "exit": rc,
        "seconds": seconds,
        "tried": tried,
        "failed": failed,
        "serving_3": on_3,
        "retained_bad": [d for d, u in retained_updates(port).items() if u == uid],
        "output": out,
    }


def measure_memory(fleet: kit.Fleet, broker: Broker) -> dict[str, Any]:
    mem = fleet.memory()
    assert broker.proc is not None
    rss, uss = sum(m[0] for m in mem) / 2**20, sum(m[1] for m in mem) / 2**20
    return {
        "daemons": len(mem),
        "broker_rss_mb": round(psutil.Process(broker.proc.pid).memory_info().rss / 2**20, 1),
        "daemons_rss_mb_sum": round(rss, 1),
        "daemons_rss_mb_mean": round(rss / max(1, len(mem)), 1),
        "daemons_uss_mb_sum": round(uss, 1),
        "daemons_uss_mb_mean": round(uss / max(1, len(mem)), 1),
        "machine_available_mb": round(psutil.virtual_memory().available / 2**20),
    }


def measure_cpu(fleet: kit.Fleet, broker: Broker, seconds: float = 10) -> dict[str, Any]:
    """CPU use over ``seconds`` of the idle fleet: the daemons together and the broker, in
    percent of one core, and the machine's (all cores = 100)."""
    assert broker.proc is not None
    procs = [psutil.Process(p.pid) for p in fleet.procs.values()]
    mosquitto = psutil.Process(broker.proc.pid)
    for p in [*procs, mosquitto]:
        p.cpu_percent(None)
    psutil.cpu_percent(None)
    time.sleep(seconds)
    daemons = sum(p.cpu_percent(None) for p in procs if p.is_running())
    return {
        "daemons_cpu_percent_of_a_core": round(daemons, 1),
        "per_daemon_cpu_percent": round(daemons / max(1, len(procs)), 2),
        "broker_cpu_percent_of_a_core": round(mosquitto.cpu_percent(None), 1),
        "machine_cpu_percent": round(psutil.cpu_percent(None), 1),
    }


def run(n: int, work: Path, away_timeout: float = 30, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """All three scenarios with ``n`` devices; the measurements, also written into ``result``
    as they come (so a failure later leaves the earlier ones). ``away_timeout``: the waves'
    time in scenario 2 (each wave with a stopped device waits that long for it), at least 1.2 s
    per device (the online devices of a wave must finish within it on 2 shared cores)."""
    work.mkdir(parents=True, exist_ok=True)
    k = kit.make_kit(work / "kit")
    broker = Broker(work).start()
    fleet = kit.Fleet(work / "devices", n, broker.port, k.pub)
    obs = Observer(broker.port)
    result = {} if result is None else result
    result["n"] = n
    try:
        start = time.monotonic()
        fleet.start(fleet.ids)
        result["seconds_to_all_online"] = obs.wait(fleet.ids, lambda d: d.online, 60 + 5 * n)
        print(f"{n} daemons online after {result['seconds_to_all_online']} s", flush=True)
        result["memory_idle"] = measure_memory(fleet, broker)
        result["cpu_idle"] = measure_cpu(fleet, broker)
        result["all"] = scenario_all(fleet, obs, k, broker.port)
        print(f"scenario all done: exit {result['all']['exit']}", flush=True)
        result["memory_after_rollout"] = measure_memory(fleet, broker)
        result["away"] = scenario_away(
            fleet, obs, k, broker.port, work, wave_timeout=max(away_timeout, 1.2 * n)
        )
        print(f"scenario away done: exit {result['away']['exit']}", flush=True)
        result["bad"] = scenario_bad(fleet, obs, k, broker.port)
        print(f"scenario bad done: exit {result['bad']['exit']}", flush=True)
        result["total_seconds"] = round(time.monotonic() - start, 1)
    finally:
        obs.close()
        fleet.close()
        broker.kill()
    return result


def report(r: dict[str, Any]) -> None:
    """The measurements as lines, then ``RESULT {json}`` (without the push outputs)."""
    print(f"N = {r['n']} daemons; all online after {r['seconds_to_all_online']} s")
    for label, key in (("idle", "memory_idle"), ("after rollout", "memory_after_rollout")):
        m = r[key]
        print(
            f"memory {label}: broker {m['broker_rss_mb']} MiB RSS; {m['daemons']} daemons "
            f"{m['daemons_rss_mb_sum']} MiB RSS in all ({m['daemons_rss_mb_mean']} each), "
            f"{m['daemons_uss_mb_sum']} MiB unique ({m['daemons_uss_mb_mean']} each)"
        )
    c = r["cpu_idle"]
    print(
        f"cpu, fleet idle: daemons {c['daemons_cpu_percent_of_a_core']}% of a core "
        f"({c['per_daemon_cpu_percent']}% each), broker {c['broker_cpu_percent_of_a_core']}%, "
        f"machine {c['machine_cpu_percent']}% of all cores"
    )
    a, w, b = r["all"], r["away"], r["bad"]
    print(
        f"1. rollout to all ({WAVES_ALL}): {a['active']}/{r['n']} active in "
        f"{a['seconds_to_all_active']} s, exit {a['exit']}"
    )
    print(
        f"2. {len(w['away'])} away during the push: push exit {w['exit']}; after their return, "
        f"all active in {w['seconds_after_return_to_all_active']} s with only fleet serve running; "
        f"fleet status: {w['status_online_on_3']}/{w['status_rows']} online on version 3"
    )
    print(
        f"3. bad model ({WAVES_BAD}, --max-failures 0): tried on {len(b['tried'])} device(s), "
        f"{b['failed']} failed, stopped in {b['seconds']} s (exit {b['exit']}); "
        f"{b['serving_3']}/{r['n']} still on version 3"
    )
    slim = {k: _without_output(v) for k, v in r.items()}
    print("RESULT " + json.dumps(slim), flush=True)


def _without_output(v: Any) -> Any:
    return {k: x for k, x in v.items() if k != "output"} if isinstance(v, dict) else v


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--n", type=int, default=10, help="daemons (default 10)")
    p.add_argument(
        "--workdir", type=Path, default=None, help="where state and logs go (default: a temp folder)"
    )
    args = p.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fleet-sim-"))
    print(f"working in {work}", flush=True)
    result: dict[str, Any] = {}
    try:
        run(args.n, work, result=result)
    except Exception:
        print("PARTIAL " + json.dumps({k: _without_output(v) for k, v in result.items()}), flush=True)
        raise
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
