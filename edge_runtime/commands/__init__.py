"""Implementations of the CLI commands (``cmd_<name>(args) -> exit code``)."""

from edge_runtime.commands.bench import cmd_bench
from edge_runtime.commands.daemon import cmd_config_schema, cmd_run, cmd_validate
from edge_runtime.commands.infer import cmd_infer
from edge_runtime.commands.models import cmd_models

__all__ = ["cmd_bench", "cmd_config_schema", "cmd_infer", "cmd_models", "cmd_run", "cmd_validate"]
