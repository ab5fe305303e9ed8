"""``fleet cmd D NAME [key=value ...]``: ask one device, print its answer, exit 0 when it is ok."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_runtime.commands.broker import broker_from_args
from edge_runtime.errors import InputError
from edge_runtime.fleet import cmdsend
from edge_runtime.update.manifest import load_private_key


def parse_args_list(items: list[str]) -> dict[str, str]:
    """``["pipeline=front", "quality=70"]`` -> ``{"pipeline": "front", "quality": "70"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"argument {item!r}: expected key=value")
        out[key] = value
    return out


def cmd_fleet_cmd(args: argparse.Namespace) -> int:
    """Send the command (signed with ``--key`` when given); print the answer as JSON."""
    if args.wait <= 0:
        raise InputError(f"--wait {args.wait}: must be positive")
    key = load_private_key(Path(args.key)) if args.key else None
    payload = cmdsend.request_payload(args.device_id, args.name, parse_args_list(args.args), key)
    answer = cmdsend.send(
        broker_from_args(args),
        prefix=args.prefix,
        device=args.device_id,
        name=args.name,
        payload=payload,
        wait_s=args.wait,
    )
    if answer is None:
        print(f"no answer from {args.device_id} within {args.wait:g} s", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0 if answer.get("ok") is True else 1
