"""``edge-runtime run | validate | config-schema``."""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import sys
from pathlib import Path

from edge_runtime.config.files import Disk
from edge_runtime.config.loader import collect_problems, load_config
from edge_runtime.config.sections import Config
from edge_runtime.errors import InputError
from edge_runtime.health.logformat import send_fault_dumps_to_journal
from edge_runtime.health.notify import Notifier, watchdog_interval
from edge_runtime.service import Service, leave

logger = logging.getLogger(__name__)


def cmd_validate(args: argparse.Namespace) -> int:
    """Exit 0 when valid; else one ``FILE:LINE: key: message`` line per problem and exit 2.

    The files the config names are checked as the service will find them; outside the unit, its
    systemd credentials are looked up where systemd will look (:class:`Disk`).
    """
    root = Path(args.root or "/")
    if args.root is not None and not root.is_dir():
        raise InputError(f"--root {root}: not a directory")
    config = Path(args.config)
    if args.root is not None and config.is_absolute() and not config.is_relative_to(root):
        config = root / config.relative_to("/")  # a path on the target
    _, problems = collect_problems(config, Disk.for_validate(root))
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    print(f"{config}: ok")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the config file: title and top-level keys first, ``$defs`` last."""
    del args
    schema = Config.model_json_schema()
    first = ("title", "description", "type", "properties", "required")
    ordered = {key: schema[key] for key in first if key in schema}
    ordered |= {key: value for key, value in schema.items() if key not in ordered and key != "$defs"}
    if "$defs" in schema:
        ordered["$defs"] = schema["$defs"]
    print(json.dumps(ordered, indent=2))
    return 0


def _limit_malloc_arenas() -> None:
    """Two glibc malloc arenas, as ``MALLOC_ARENA_MAX=2`` would set (unless the environment does).

    glibc gives threads arenas of their own, up to 8 per core; the daemon's dozen threads then
    keep several MB of half-empty arenas. Measured: peak RSS 153 -> 149 MB with the classifier.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX (glibc's malloc.h)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        logger.debug("mallopt not available")


def _single_thread_opencv() -> None:
    """OpenCV's own thread pool off: the pipelines already run frames in parallel.

    Resizing a 640x480 frame to 300x300 took 0.25 ms of wall time either way, but 0.47 ms of CPU
    with OpenCV's two pool threads against 0.26 ms with one; on a small board that CPU is what
    inference needs.
    """
    import cv2

    cv2.setNumThreads(1)


def _quiet_native_video_logs(verbose: bool) -> None:
    """Turn off what OpenCV and FFmpeg print to stderr themselves, unless asked for.

    Both write from C, in their own format and without a priority, on every failed open: two
    lines per reconnect attempt of a camera that is away (``[tcp @ 0x...] Connection to ...
    refused``, ``[ WARN:0@...] global cap.cpp:... open VIDEOIO(FFMPEG) ...``). The source says
    why itself, once, in our format (``source NAME: reconnecting (...)``). Measured with
    opencv-python-headless 5.1: OpenCV reads ``OPENCV_LOG_LEVEL`` only when it is imported
    (already done here), so its level is set through ``cv2.utils.logging``; FFmpeg's level
    (``OPENCV_FFMPEG_LOGLEVEL``, an ``AV_LOG_*`` number: -8 is quiet) is read when FFmpeg is
    first used, which is after this. OpenCV keeps its errors (rare, and each one a reason).
    A variable already in the environment, or ``-v``, leaves that library as it is (debugging).
    """
    import cv2

    if verbose:
        return
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    if "OPENCV_FFMPEG_LOGLEVEL" not in os.environ and "OPENCV_FFMPEG_DEBUG" not in os.environ:
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"  # AV_LOG_QUIET


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; SIGHUP reloads the config.

    Under systemd (``Type=notify``) it reports readiness, status and watchdog pings; the stall
    limit of the watchdog is its interval (``WatchdogSec=``).
    """
    _limit_malloc_arenas()
    _single_thread_opencv()
    _quiet_native_video_logs(bool(args.verbose))
    if send_fault_dumps_to_journal():
        logger.debug("fault handler dumps go to the journal at priority err")
    path = Path(args.config)
    cfg = load_config(path)
    interval = watchdog_interval()
    service = Service(
        path,
        cfg,
        Notifier.from_env(),
        watchdog_s=interval,
        stall_limit_s=interval,
        keep_log_level=bool(args.verbose or args.quiet),
    )
    return leave(service.run())
