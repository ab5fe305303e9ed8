"""``fleet config CONFIG.yaml (--device D | --group G) --key KEY``: exit 0 only when every targeted
device reports the config applied."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_runtime.commands.broker import broker_from_args
from edge_runtime.errors import InputError
from edge_runtime.fleet import configsend
from edge_runtime.update.manifest import load_private_key


def cmd_fleet_config(args: argparse.Namespace) -> int:
    """Sign, publish retained, follow the reports; print one JSON object per device."""
    if args.wait < 0:
        raise InputError(f"--wait {args.wait}: must be 0 or more")
    target = f"device:{args.device}" if args.device else f"group:{args.group}"
    key = load_private_key(Path(args.key))
    sent = configsend.build(Path(args.config), target, key, version=args.version, expires_s=args.expires_in)
    reports = configsend.publish_and_follow(
        broker_from_args(args),
        prefix=args.prefix,
        device=args.device,
        group=args.group,
        sent=sent,
        wait_s=args.wait,
    )
    summary = {"version": sent.version, "sha256": sent.sha256, "devices": reports}
    print(json.dumps(summary, indent=2))
    if args.wait == 0:
        return 0
    return 0 if reports and all(r.get("state") == "applied" for r in reports.values()) else 1
