"""``fleet``: operator commands for a fleet of devices (``fleet serve``; see docs/updates.md).

Each action is one ``_ACTIONS`` entry, ``action(args) -> exit code``.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from edge_runtime.commands.broker import broker_from_args
from edge_runtime.errors import InputError

logger = logging.getLogger(__name__)


def cmd_fleet(args: argparse.Namespace) -> int:
    """Run the ``fleet`` action named on the command line."""
    return _ACTIONS[args.action](args)


def _serve(args: argparse.Namespace) -> int:
    """Serve the chunks of every signed bundle in DIR until SIGTERM or SIGINT (exit 0)."""
    from edge_runtime.fleet.serve import ChunkServer

    folder = Path(args.dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    if args.rescan <= 0 or args.max_rate <= 0:
        raise InputError("--rescan and --max-rate must be positive")
    server = ChunkServer(
        folder,
        broker_from_args(args),
        prefix=args.prefix,
        rescan_s=args.rescan,
        max_bytes_per_s=args.max_rate * 1024 * 1024,
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("fleet serve: %s, stopping", signal.Signals(signum).name)
        server.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.run()
    logger.info("fleet serve: stopped (%d chunk(s) sent)", server.sender.sent)
    return 0


_ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {"serve": _serve}
