"""``edge-runtime run | validate | config-schema``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from edge_runtime.app import Daemon
from edge_runtime.config.loader import collect_problems, load_config
from edge_runtime.config.sections import Config

logger = logging.getLogger(__name__)


def cmd_validate(args: argparse.Namespace) -> int:
    """Exit 0 when valid; else one ``FILE:LINE: key: message`` line per problem and exit 2."""
    _, problems = collect_problems(Path(args.config))
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    print(f"{args.config}: ok")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the config file."""
    del args
    print(json.dumps(Config.model_json_schema(), indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT."""
    cfg = load_config(Path(args.config))
    if not args.verbose and not args.quiet:
        logging.getLogger().setLevel(cfg.logging.level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon = Daemon(cfg)
    try:
        daemon.start()
        logger.info("edge-runtime running: device %s, %d pipeline(s)", cfg.device.id, len(daemon.pipelines))
        while not stop.wait(0.5):
            pass
    finally:
        daemon.stop()
    logger.info("stopped cleanly")
    return 0
