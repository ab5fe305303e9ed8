"""Log line formats: human (with timestamps) on a terminal or in a file; journald under systemd.

journald stamps every line itself and reads a kernel-style priority prefix (``<3>`` error,
``<4>`` warning, ``<6>`` info, ``<7>`` debug) at the start of each line it receives on a
service's stderr. So under systemd a line is ``<N>logger: message``, with the prefix repeated on
every line of a multi-line record (a traceback stays one priority in ``journalctl -p``).

Detection (``auto``): systemd sets ``JOURNAL_STREAM=DEV:INODE`` when it connects a service's
stdout or stderr to the journal; the journal format is used when that matches *our* stderr
(a child whose stderr was redirected elsewhere inherits the variable but not the stream).
Without ``JOURNAL_STREAM``, ``INVOCATION_ID`` (set for every unit) with a stderr that is not a
terminal also counts. ``logging.format`` in the config overrides the guess.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Literal, TextIO

LogFormat = Literal["auto", "human", "journal"]

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (2 crit, 3 err, 4 warning, 6 info, 7 debug)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


class JournalFormatter(logging.Formatter):
    """``<N>logger: message`` without a timestamp, the prefix on every line of the record."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The record as journald wants it."""
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def under_journald(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` goes to the journal (see the module docstring)."""
    env = os.environ if env is None else env
    try:
        fd = stream.fileno()
        st = os.fstat(fd)
        tty = os.isatty(fd)
    except (OSError, ValueError):  # e.g. a StringIO, or a closed stream
        return False
    value = env.get("JOURNAL_STREAM", "")
    if value:
        return value.strip() == f"{st.st_dev}:{st.st_ino}"
    return bool(env.get("INVOCATION_ID")) and not tty


def make_formatter(
    style: LogFormat, stream: TextIO, env: Mapping[str, str] | None = None
) -> logging.Formatter:
    """The formatter for ``style``; ``auto`` picks journal or human for ``stream``."""
    if style == "journal" or (style == "auto" and under_journald(stream, env)):
        return JournalFormatter()
    return logging.Formatter(HUMAN_FORMAT)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The entry point's handler (a class of its own so its format can be changed later)."""


def configure_logging(level: int | str, style: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Log to stderr in the right format (a no-op, as ``basicConfig``, if logging is set up)."""
    stream = sys.stderr if stream is None else stream
    handler = StderrHandler(stream)
    handler.setFormatter(make_formatter(style, stream))
    logging.basicConfig(level=level, handlers=[handler])


def set_format(style: LogFormat) -> None:
    """Switch the entry point's handler to ``style`` (e.g. from the config's ``logging.format``)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, StderrHandler):
            handler.setFormatter(make_formatter(style, handler.stream))
