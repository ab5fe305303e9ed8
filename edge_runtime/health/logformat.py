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

What bypasses logging gets its priority here too: the CLI's fatal error (:func:`print_error`,
``<3>``), and the stack dump that Python's fault handler writes from C when systemd's watchdog
aborts a hung daemon (:func:`send_fault_dumps_to_journal`: a stream of its own at priority err,
as ``systemd-cat -p err`` opens). Native libraries' own lines (OpenCV, FFmpeg) are turned off at
start by ``commands/daemon.py``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Literal, TextIO

LogFormat = Literal["auto", "human", "journal"]

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"
JOURNAL_STDOUT = "/run/systemd/journal/stdout"  # journald's socket for stdout/stderr streams


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
    """Log to stderr in the right format (a no-op, as ``basicConfig``, if logging is set up).

    Python's own last-resort reports go through it too (unless something else has hooked them):
    an exception that ends a thread, and one that cannot be raised (``Exception ignored in:
    ...``, e.g. from a library's ``__del__``), which Python prints to stderr without a priority.
    """
    stream = sys.stderr if stream is None else stream
    handler = StderrHandler(stream)
    handler.setFormatter(make_formatter(style, stream))
    logging.basicConfig(level=level, handlers=[handler])
    if threading.excepthook is threading.__excepthook__:  # not when a test runner has its own
        threading.excepthook = _log_thread_exception
    if sys.unraisablehook is sys.__unraisablehook__:
        sys.unraisablehook = _log_unraisable


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: the traceback as one ERROR record."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
    logging.getLogger("edge_runtime").error("thread %s ended by an exception", name, exc_info=exc_info)


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """``sys.unraisablehook``: ``Exception ignored in: OBJECT`` as one WARNING record."""
    what = unraisable.err_msg or "Exception ignored in"
    exc = unraisable.exc_value
    exc_info = (unraisable.exc_type, exc, unraisable.exc_traceback) if exc is not None else None
    logging.getLogger("edge_runtime").warning("%s: %r", what, unraisable.object, exc_info=exc_info)


def set_format(style: LogFormat) -> None:
    """Switch the entry point's handler to ``style`` (e.g. from the config's ``logging.format``)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, StderrHandler):
            handler.setFormatter(make_formatter(style, handler.stream))


def journal_active(stream: TextIO | None = None) -> bool:
    """True when the entry point's handler writes journal lines.

    Before logging is set up: when ``stream`` (by default stderr) is the journal.
    """
    for handler in logging.getLogger().handlers:
        if isinstance(handler, StderrHandler):
            return isinstance(handler.formatter, JournalFormatter)
    return under_journald(sys.stderr if stream is None else stream)


def print_error(message: str, stream: TextIO | None = None) -> None:
    """Print the CLI's fatal error, ``edge-runtime: error: MESSAGE``; ``<3>`` on each line under journald.

    Printed, not logged: on a terminal it is exactly that line, without a timestamp.
    """
    stream = sys.stderr if stream is None else stream
    prefix = f"<{syslog_priority(logging.ERROR)}>" if journal_active(stream) else ""
    text = f"edge-runtime: error: {message}"
    print("\n".join(prefix + line for line in text.split("\n")), file=stream, flush=True)


def journal_stream(identifier: str, priority: int, path: str = JOURNAL_STDOUT) -> socket.socket | None:
    """A new connection to journald on which every line is logged at ``priority`` (None: no journald).

    journald's stdout protocol: after a header of seven lines (identifier, unit, priority,
    level prefix, and forwarding to syslog, kmsg and console), each line is one entry. journald
    files it under the unit of the process at the other end, like the service's own stderr.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
        sock.shutdown(socket.SHUT_RD)
        sock.sendall(f"{identifier}\n\n{priority}\n0\n0\n0\n0\n".encode())
    except OSError:
        sock.close()
        return None
    return sock


_fault_stream: list[socket.socket] = []  # the stream faulthandler writes to, kept open


def send_fault_dumps_to_journal(identifier: str = "edge-runtime", path: str = JOURNAL_STDOUT) -> bool:
    """Under journald, let the fault handler write its dumps to a stream at priority err.

    The fault handler (``PYTHONFAULTHANDLER=1`` in the unit) prints every thread's stack when
    the process gets SIGABRT (systemd's watchdog), SIGSEGV, SIGBUS, SIGFPE or SIGILL: from C, in
    the signal handler, so no prefix can be added and on stderr journald would file each line at
    info. A stream of its own has the priority in its header. Only when the fault handler is on
    and stderr is the journal; otherwise, or when journald cannot be reached, nothing changes.
    True when the dumps now go to the journal at err.
    """
    if not faulthandler.is_enabled() or not under_journald(sys.stderr):
        return False
    sock = journal_stream(identifier, syslog_priority(logging.ERROR), path)
    if sock is None:
        return False
    faulthandler.enable(file=sock.fileno(), all_threads=True)
    for old in _fault_stream:
        old.close()
    _fault_stream[:] = [sock]
    return True
