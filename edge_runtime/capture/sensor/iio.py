"""Linux IIO devices through sysfs: ``/sys/bus/iio/devices/iio:deviceN/in_<channel>_raw``.

Each poll reads every channel once: ``value = (raw + offset) * scale`` (the IIO ABI), where
``scale``/``offset`` come from ``in_<channel>_scale`` or the type-wide ``in_<type>_scale`` (e.g.
``in_accel_scale`` for ``accel_x``), defaulting to 1 and 0. A channel with ``in_<channel>_input``
(already processed) and no ``_raw`` is read as is. Polling sysfs suits slow and medium rates (up
to a few hundred Hz); faster devices need the buffered interface (``/dev/iio:deviceN``).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from edge_runtime.capture.sensor.drivers import Reading
from edge_runtime.capture.sensor.samples import Sample
from edge_runtime.errors import DeviceLostError


def _attribute_names(channel: str, suffix: str) -> list[str]:
    """``in_accel_x_scale``, then the shared ``in_accel_scale`` (modifier or index dropped)."""
    names = [f"in_{channel}_{suffix}"]
    shared = re.sub(r"(_[a-z0-9]+|\d+)$", "", channel)
    if shared and shared != channel:
        names.append(f"in_{shared}_{suffix}")
    return names


def _read_number(path: Path) -> float:
    return float(path.read_text(encoding="ascii").strip())


class IioDriver:
    """Polls the channels of one IIO device folder at ``rate_hz``."""

    def __init__(self, folder: str, channels: list[str], rate_hz: float, stop: threading.Event) -> None:
        self.folder, self.channels, self.rate_hz, self.stop = Path(folder), channels, rate_hz, stop
        self.describe = f"iio {folder}"
        self._files: list[Path] = []
        self._scale: list[float] = []
        self._offset: list[float] = []
        self._due = 0.0

    @property
    def idle_reason(self) -> str | None:
        """Always None: a present device always has a value."""
        return None

    def _attribute(self, channel: str, suffix: str, default: float) -> float:
        for name in _attribute_names(channel, suffix):
            path = self.folder / name
            if path.is_file():
                return _read_number(path)
        return default

    def open(self) -> None:
        """Find each channel's value file and read its scale and offset."""
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: no such IIO device")
        files, scale, offset = [], [], []
        for channel in self.channels:
            raw, processed = self.folder / f"in_{channel}_raw", self.folder / f"in_{channel}_input"
            if raw.is_file():
                files.append(raw)
                scale.append(self._attribute(channel, "scale", 1.0))
                offset.append(self._attribute(channel, "offset", 0.0))
            elif processed.is_file():
                files.append(processed)
                scale.append(1.0)
                offset.append(0.0)
            else:
                raise DeviceLostError(f"{self.folder}: no in_{channel}_raw or in_{channel}_input")
        self._files, self._scale, self._offset = files, scale, offset
        self._due = time.monotonic()

    def read(self, timeout: float) -> list[Reading]:
        """One sample when the next poll is due (waits for it, at most ``timeout``)."""
        delay = self._due - time.monotonic()
        if delay > 0:
            if delay > timeout:
                self.stop.wait(timeout)
                return []
            self.stop.wait(delay)
        now = time.monotonic()
        self._due = max(self._due + 1.0 / self.rate_hz, now - 1.0 / self.rate_hz)
        ts = time.time()
        try:
            raws = [f.read_text(encoding="ascii") for f in self._files]
        except OSError as exc:  # ENODEV/ENOENT: the device was unbound or unplugged
            raise DeviceLostError(f"{self.folder}: {exc.strerror or exc}") from exc
        try:
            values = tuple(
                (float(r.strip()) + o) * s for r, s, o in zip(raws, self._scale, self._offset, strict=True)
            )
        except ValueError:
            return [None]
        return [Sample(values, ts)]

    def close(self) -> None:
        """Nothing is held open between polls."""
        self._files = []
