"""``fleet status``: one row per device from what the devices keep on the broker.

The retained ``P/D/status`` and ``P/D/model/status`` arrive as soon as we subscribe. Health is
not retained: each online device sends it every ``health.interval_s`` (10 s by default), so the
command waits up to ``--wait`` seconds for one health message from every online device (it stops
as soon as it has them all). ``--watch`` goes on and prints the table again whenever it changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from edge_runtime.commands.broker import broker_from_args
from edge_runtime.errors import InputError
from edge_runtime.fleet.records import FleetState
from edge_runtime.fleet.view import row, table
from edge_runtime.fleet.watch import FleetWatcher

RETAINED_QUIET_S = 0.5  # retained messages come in one burst after the SUBACK
RETAINED_MAX_S = 30.0  # ... which a broker holding many thousands may take a while to send


def rows(state: FleetState, group: str | None) -> list[dict[str, Any]]:
    """Every device (of ``group``), by id."""
    return [row(d) for _, d in sorted(state.devices.items()) if group is None or group in d.groups]


def _waiting_for_health(state: FleetState, group: str | None) -> bool:
    return any(
        d.online and d.health is None for d in state.devices.values() if group is None or group in d.groups
    )


def _show(args: argparse.Namespace, state: FleetState, watcher: FleetWatcher) -> None:
    found = rows(state, args.group)
    if args.json:
        print(json.dumps(found), flush=True)
    else:
        online = sum(1 for r in found if r["online"])
        print(table(found))
        print(f"{len(found)} device(s), {online} online", flush=True)
    skipped = dict(state.skipped)
    if watcher.dropped:
        skipped["inbox full"] = watcher.dropped
    if skipped:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        print(f"skipped messages: {detail}", file=sys.stderr, flush=True)


def cmd_fleet_status(args: argparse.Namespace) -> int:
    """Print the fleet once (or again on every change with ``--watch``)."""
    if args.wait < 0 or args.interval <= 0 or args.max_devices < 1:
        raise InputError("--wait must be >= 0, --interval > 0 and --max-devices >= 1")
    state = FleetState(args.prefix, max_devices=args.max_devices)
    watcher = FleetWatcher(broker_from_args(args), state, client_prefix="edge-fleet-status")
    watcher.start()
    try:
        start = time.monotonic()
        deadline = start + args.wait
        watcher.drain(start + RETAINED_MAX_S, quiet=RETAINED_QUIET_S)
        while time.monotonic() < deadline and _waiting_for_health(state, args.group):
            watcher.drain(min(deadline, time.monotonic() + 0.2))
        _show(args, state, watcher)
        while args.watch:
            if watcher.drain(time.monotonic() + args.interval):
                _show(args, state, watcher)
    except KeyboardInterrupt:
        return 0
    finally:
        watcher.close()
    return 0
