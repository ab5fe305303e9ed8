"""Implementations of the CLI commands (``cmd_<name>(args) -> exit code``)."""

from edge_runtime.commands.bench import cmd_bench
from edge_runtime.commands.bundles import cmd_bundle, cmd_keys
from edge_runtime.commands.daemon import cmd_config_schema, cmd_run, cmd_validate
from edge_runtime.commands.fleet import cmd_fleet
from edge_runtime.commands.fleet_status import cmd_fleet_status
from edge_runtime.commands.fleetcmd import cmd_fleet_cmd
from edge_runtime.commands.fleetconfig import cmd_fleet_config
from edge_runtime.commands.infer import cmd_infer
from edge_runtime.commands.models import cmd_models
from edge_runtime.commands.push import cmd_push

__all__ = [
    "cmd_bench",
    "cmd_bundle",
    "cmd_config_schema",
    "cmd_fleet",
    "cmd_fleet_cmd",
    "cmd_fleet_config",
    "cmd_fleet_status",
    "cmd_infer",
    "cmd_keys",
    "cmd_models",
    "cmd_push",
    "cmd_run",
    "cmd_validate",
]
