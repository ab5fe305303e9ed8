"""A serial port (USB CDC, UART) sending line-delimited samples, through pyserial.

pyserial is an optional extra (``edge-runtime[serial]``), imported only when a serial source
opens. pyserial puts the port in raw mode (no echo, no line editing), which also suits a pty.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from edge_runtime.capture.sensor.drivers import Reading, parse_lines
from edge_runtime.capture.sensor.samples import LineParser, LineSplitter
from edge_runtime.errors import DeviceLostError, DriverUnavailableError


def _import_serial() -> Any:
    try:
        serial = importlib.import_module("serial")  # untyped, optional: kept out of mypy's sight
    except ImportError as exc:
        raise DriverUnavailableError(
            "driver serial needs pyserial: install edge-runtime[serial] (pip install pyserial)"
        ) from exc
    return serial


class SerialDriver:
    """Lines from ``port`` at ``baudrate``; an unplugged adapter raises DeviceLostError."""

    def __init__(self, port: str, baudrate: int, parser: LineParser) -> None:
        self.port, self.baudrate, self.parser = port, baudrate, parser
        self.describe = f"serial {port}"
        self._serial: Any = None
        self._splitter = LineSplitter()

    @property
    def idle_reason(self) -> str | None:
        """Always None: an open port is connected."""
        return None

    def open(self) -> None:
        """Open the port (SerialException/OSError when it is not there)."""
        serial = _import_serial()
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=0.2)
        except serial.SerialException as exc:
            raise DeviceLostError(f"{self.port}: {exc}") from exc
        self._splitter = LineSplitter()

    def read(self, timeout: float) -> list[Reading]:
        """Whatever arrived within ``timeout``, as complete lines."""
        serial = _import_serial()
        port = self._serial
        if port is None:
            raise DeviceLostError(f"{self.port}: not open")
        try:
            port.timeout = timeout
            data = port.read(port.in_waiting or 1)
            if data and port.in_waiting:
                data += port.read(port.in_waiting)
        except (serial.SerialException, OSError) as exc:
            raise DeviceLostError(f"{self.port}: {exc}") from exc
        return parse_lines(self.parser, self._splitter.feed(data)) if data else []

    def close(self) -> None:
        """Close the port."""
        if self._serial is not None:
            serial = _import_serial()
            with contextlib.suppress(serial.SerialException, OSError):  # the device may be gone
                self._serial.close()
            self._serial = None
