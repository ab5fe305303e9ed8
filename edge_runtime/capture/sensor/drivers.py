"""What a sensor driver is, and the stream driver: a regular file, a FIFO, a character device, stdin.

A driver is opened, read in short slices and closed by :class:`~.source.SensorSource`, which owns
the reconnect loop. Drivers signal with exceptions: :class:`DeviceLostError` (unplugged, writer gone
for good, file replaced: reopen with backoff), :class:`StreamEndedError` (a regular file or stdin is
over: the source ends, like a video file), :class:`DriverUnavailableError` (never going to work: the
source fails).

FIFOs are opened non-blocking and polled, so a stop is never stuck in ``open()``. When the last
writer closes, the FIFO is reopened at once (not with backoff): a producer that opens the FIFO for
every line blocks in its own ``open()`` until a reader is back, so no line is lost, and the window
state carries over from one writer to the next.
"""

from __future__ import annotations

import os
import select
import stat
import threading
import time
from pathlib import Path
from typing import BinaryIO, Protocol

from edge_runtime.capture.sensor.samples import LineParser, LineSplitter, Sample
from edge_runtime.errors import DeviceLostError, DriverUnavailableError, MalformedLineError, StreamEndedError

Reading = Sample | None
"""One line's result: a sample, or None for a malformed line (skipped and counted)."""


class Driver(Protocol):
    """A sample source the sensor thread polls."""

    describe: str

    def open(self) -> None:
        """Open the device; OSError or DeviceLostError when it is not there (yet)."""
        ...

    def read(self, timeout: float) -> list[Reading]:
        """Samples that arrived within about ``timeout`` seconds (maybe none)."""
        ...

    @property
    def idle_reason(self) -> str | None:
        """Why no data can flow right now (e.g. a FIFO without a writer), else None."""
        ...

    def close(self) -> None:
        """Release the device (idempotent)."""
        ...


def parse_lines(parser: LineParser, lines: list[bytes | None]) -> list[Reading]:
    """Parse each line; blank lines and headers vanish, malformed (or overlong: None) become None."""
    out: list[Reading] = []
    for line in lines:
        if line is None:
            out.append(None)
            continue
        try:
            sample = parser.parse(line)
        except MalformedLineError:
            out.append(None)
            continue
        if sample is not None:
            out.append(sample)
    return out


class StreamDriver:
    """Line-delimited samples from a path (``-`` = stdin).

    Regular files are replayed at ``rate_hz`` when ``pace`` (else as fast as the pipeline takes
    them); at the end they stop, start again (``loop``) or wait for appended lines (``follow``,
    reopening when the file is rotated or truncated).
    """

    def __init__(
        self,
        path: str,
        parser: LineParser,
        stop: threading.Event,
        *,
        rate_hz: float,
        pace: bool = True,
        loop: bool = False,
        follow: bool = False,
    ) -> None:
        self.path, self.parser, self.stop = path, parser, stop
        self.rate_hz, self.pace, self.loop, self.follow = rate_hz, pace, loop, follow
        self.describe = "stdin" if path == "-" else path
        self._fd: int | None = None
        self._file: BinaryIO | None = None
        self._regular = False
        self._splitter = LineSplitter()
        self._no_writer_since: float | None = None
        self._due = 0.0
        self._then: Exception | None = None  # raised by the next read, after the last lines

    @property
    def idle_reason(self) -> str | None:
        """Set while a FIFO has no writer."""
        return "FIFO has no writer" if self._no_writer_since is not None else None

    def open(self) -> None:
        """Open the file, FIFO or device (FileNotFoundError while it does not exist)."""
        self._splitter = LineSplitter()  # a partial line from before a reconnect is stale
        if self.path == "-":
            fd = os.dup(0)  # our own descriptor: closing it leaves the process's stdin alone
        else:
            mode = Path(self.path).stat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
                raise DriverUnavailableError(f"{self.path}: not a file, FIFO or character device")
            flags = os.O_RDONLY | (0 if stat.S_ISREG(mode) else os.O_NONBLOCK)
            fd = os.open(self.path, flags)
        self._regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if self._regular:
            self._file = os.fdopen(fd, "rb")
            self._due = time.monotonic()
        else:
            os.set_blocking(fd, False)
            self._fd = fd
            if stat.S_ISFIFO(os.fstat(fd).st_mode) and self._no_writer_since is None:
                self._no_writer_since = time.monotonic()  # until the first byte arrives

    def close(self) -> None:
        """Close the descriptor (a pending partial line is kept for the next writer)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, timeout: float) -> list[Reading]:
        """Lines that are due (regular file) or that arrived (anything else)."""
        if self._then is not None:
            then, self._then = self._then, None
            raise then
        if self._file is not None:
            return self._read_file(self._file, timeout)
        if self._fd is None:
            raise DeviceLostError(f"{self.describe}: not open")
        return self._read_stream(self._fd, timeout)

    # -- FIFOs, character devices, stdin ------------------------------------------------------
    def _read_stream(self, fd: int, timeout: float) -> list[Reading]:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            self._check_replaced(fd)
            return []
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return []
        except OSError as exc:  # EIO: a USB serial adapter or a pty was unplugged
            raise DeviceLostError(f"{self.describe}: {exc.strerror or exc}") from exc
        if data:
            self._no_writer_since = None
            return parse_lines(self.parser, self._splitter.feed(data))
        return self._end_of_stream(fd)

    def _end_of_stream(self, fd: int) -> list[Reading]:
        last = parse_lines(self.parser, self._splitter.flush())
        if self.path == "-":
            return self._finish(last, StreamEndedError("stdin closed"))
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return self._finish(last, DeviceLostError(f"{self.describe}: end of device stream"))
        # The last writer left: reopen now and wait for the next one (see the module docstring).
        # The new descriptor is opened before the old one is closed: a writer that opened, wrote
        # and closed in between (it did not block, a reader was there) left its line in the pipe,
        # which lives on only while some reader holds the FIFO open.
        fresh = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.close()
        self._fd = fresh
        self._no_writer_since = time.monotonic()
        return last

    def _check_replaced(self, fd: int) -> None:
        """A FIFO or device node that was deleted or recreated is a new device: reopen it."""
        if self.path == "-":
            return
        try:
            current = Path(self.path).stat()
        except FileNotFoundError as exc:
            raise DeviceLostError(f"{self.path}: removed") from exc
        opened = os.fstat(fd)
        if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            raise DeviceLostError(f"{self.path}: replaced")

    # -- regular files ------------------------------------------------------------------------
    def _read_file(self, file: BinaryIO, timeout: float) -> list[Reading]:
        budget = 4096  # lines per call when not pacing: the caller hands windows over in between
        if self.pace:
            now = time.monotonic()
            if now < self._due:
                self.stop.wait(min(timeout, self._due - now))
                return []
            budget = min(budget, 1 + int((now - self._due) * self.rate_hz))
            self._due = max(self._due + budget / self.rate_hz, now - 1.0 / self.rate_hz)
        lines: list[bytes | None] = []
        limit = self._splitter.max_line + 1  # a huge line without newline is read in pieces
        at_end = False
        while len(lines) < budget and not at_end:
            line = file.readline(limit)
            # a partial last line stays pending: completed by appended bytes or flushed at the end
            lines.extend(self._splitter.feed(line))
            at_end = not line.endswith(b"\n") and len(line) < limit
        if at_end and not lines:
            return self._end_of_file(file, timeout)
        return parse_lines(self.parser, lines)

    def _end_of_file(self, file: BinaryIO, timeout: float) -> list[Reading]:
        if self.follow:
            self._check_rotated(file)
            self.stop.wait(min(timeout, 0.1))
            return []
        last = parse_lines(self.parser, self._splitter.flush())
        if self.loop and file.tell() > 0:
            file.seek(0)
            return last
        return self._finish(last, StreamEndedError(f"{self.describe}: end of file"))

    def _finish(self, last: list[Reading], then: Exception) -> list[Reading]:
        """Hand over the last readings; the next read raises ``then``."""
        if not last:
            raise then
        self._then = then
        return last

    def _check_rotated(self, file: BinaryIO) -> None:
        try:
            current = Path(self.path).stat()
        except FileNotFoundError as exc:
            raise DeviceLostError(f"{self.path}: removed") from exc
        opened = os.fstat(file.fileno())
        if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            raise DeviceLostError(f"{self.path}: rotated")
        if current.st_size < file.tell():
            raise DeviceLostError(f"{self.path}: truncated")
