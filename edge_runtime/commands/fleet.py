"""``fleet ACTION``: each action is ``cmd_fleet_<action>`` in a module of its own."""

from __future__ import annotations

import argparse
import importlib


def cmd_fleet(args: argparse.Namespace) -> int:
    """Run ``fleet <action>`` (commands/fleet<action>.py ``cmd_fleet_<action>``)."""
    action = args.action.replace("-", "_")
    module = importlib.import_module(f"edge_runtime.commands.fleet{action}")
    return int(getattr(module, f"cmd_fleet_{action}")(args))
