"""The sensor source thread: driver -> samples -> windows -> the pipeline, losslessly.

It owns the reconnect loop: a driver that cannot open, or whose device goes away, is reopened
with exponential backoff while the state says ``reconnecting``. Windowing is not reset by a
reconnect: samples keep their stream positions, and a window spanning the gap shows it in its
timestamps. Malformed lines are skipped and counted (health: ``malformed``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_runtime.backoff import backoff_delays
from edge_runtime.capture.base import SourceThread
from edge_runtime.capture.sensor.drivers import Driver, Reading
from edge_runtime.capture.sensor.windowing import Windower
from edge_runtime.config.sources import Reconnect
from edge_runtime.config.sources import SensorSource as SensorConfig
from edge_runtime.errors import DeviceLostError, DriverUnavailableError, StreamEndedError
from edge_runtime.types import Window

logger = logging.getLogger(__name__)

READ_SLICE_S = 0.2  # longest wait inside a driver: how quickly a stop is noticed
IDLE_GRACE_S = 1.0  # a FIFO without a writer this long is reported as reconnecting


def affine(cfg: SensorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``gain, bias`` with ``(raw * scale + offset - mean) / std == raw * gain + bias``."""
    gain, bias = [], []
    for channel in cfg.channels:
        n = cfg.normalize.get(channel)
        scale, offset, mean, std = (n.scale, n.offset, n.mean, n.std) if n else (1.0, 0.0, 0.0, 1.0)
        gain.append(scale / std)
        bias.append((offset - mean) / std)
    return np.asarray(gain), np.asarray(bias)


class SensorSource(SourceThread):
    """Windows of ``window`` samples every ``hop`` samples from one driver.

    ``driver`` is called once with the source's stop flag and returns the driver to read.
    """

    lossless = True

    def __init__(
        self,
        name: str,
        driver: Callable[[threading.Event], Driver],
        *,
        channels: int,
        window: int,
        hop: int,
        rate_hz: float,
        reconnect: Reconnect,
        gain: np.ndarray | None = None,
        bias: np.ndarray | None = None,
    ) -> None:
        super().__init__(name)
        self.driver = driver(self.stop_event)  # drivers wait on the source's stop flag
        self.rate_hz, self.reconnect = rate_hz, reconnect
        self.windower = Windower(window, hop, channels, gain, bias)
        self.malformed = 0
        self.reconnects = 0
        self._last_ts = 0.0
        self._idle_since: float | None = None

    def stats(self) -> dict[str, Any]:
        """Sensor counters for health."""
        return {
            "samples": self.windower.count,
            "malformed": self.malformed,
            "reconnects": self.reconnects,
        }

    def produce(self) -> None:
        """Open, read and window until the stream ends, the source fails, or stop."""
        delays = backoff_delays(self.reconnect.initial_s, self.reconnect.max_s)
        failures = 0
        while not self.stop_event.is_set():
            try:
                self.driver.open()
            except DriverUnavailableError as exc:
                self.set_state("failed", str(exc))
                return
            except (OSError, DeviceLostError) as exc:
                self.driver.close()
                failures += 1
                if self.reconnect.give_up_after and failures >= self.reconnect.give_up_after:
                    self.set_state("failed", f"{self.driver.describe}: {exc}")
                    return
                self.set_state("reconnecting", f"{self.driver.describe}: {exc}")
                self.stop_event.wait(next(delays))
                continue
            failures = 0
            delays = backoff_delays(self.reconnect.initial_s, self.reconnect.max_s)
            if self.driver.idle_reason is None:
                self.set_state("streaming")
            try:
                self._stream()
                return  # stopped
            except StreamEndedError as exc:
                logger.info("source %s: %s", self.name, exc)
                return
            except (OSError, DeviceLostError) as exc:
                self.reconnects += 1
                self.set_state("reconnecting", f"{self.driver.describe}: {exc}")
            finally:
                self.driver.close()

    def _stream(self) -> None:
        while not self.stop_event.is_set():
            readings = self.driver.read(READ_SLICE_S)
            if not readings:
                self._report_idle()
                continue
            self._idle_since = None
            if self.state != "streaming":
                self.set_state("streaming")
            if not self._window(readings, time.time()):
                return

    def _report_idle(self) -> None:
        """A driver that says why nothing flows (a FIFO without writer) is 'reconnecting' after a grace."""
        reason, now = self.driver.idle_reason, time.monotonic()
        if reason is None:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        elif self.state == "streaming" and now - self._idle_since > IDLE_GRACE_S:
            self.set_state("reconnecting", f"{self.driver.describe}: {reason}")

    def _window(self, readings: list[Reading], arrival: float) -> bool:
        """Window the readings and hand over every completed window; False when stopped."""
        t0, count = time.perf_counter(), len(readings)
        for i, reading in enumerate(readings):
            if reading is None:
                self.malformed += 1
                continue
            if reading.ts is None:
                # placed back from the batch's arrival at the nominal rate (a writer's buffered
                # burst keeps its spacing), never before the previous sample
                ts = max(arrival - (count - 1 - i) / self.rate_hz, self._last_ts)
            else:
                ts = reading.ts
            self._last_ts = ts
            window = self.windower.push(reading.values, ts)
            if window is None:
                continue
            if not self._hand_over(window, (time.perf_counter() - t0) * 1e3):
                return False
            t0 = time.perf_counter()  # the next window's capture time starts after this hand-over
        return True

    def _hand_over(self, window: Window, capture_ms: float) -> bool:
        self.frames += 1
        self.last_frame_at = time.monotonic()
        timed = Window(
            window.index,
            window.start_ts,
            window.end_ts,
            window.data,
            window.first_sample,
            capture_ms,
            time.perf_counter(),
        )
        return self.deliver(timed)
