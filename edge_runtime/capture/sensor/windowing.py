"""Samples -> windows: ``window`` samples every ``hop`` samples, exactly.

A stream of N samples gives ``floor((N - window) / hop) + 1`` windows (none while N < window).
Window k holds samples ``k*hop .. k*hop + window - 1``: with ``hop < window`` windows overlap,
with ``hop > window`` the samples between two windows belong to none. Samples live in a ring
buffer of ``window`` rows, so memory does not depend on the hop or the stream length.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_runtime.types import Window


class Windower:
    """Cuts one stream of samples into :class:`Window` objects.

    ``gain``/``bias`` (per channel) are applied to every window: ``data = raw * gain + bias``.
    """

    def __init__(
        self,
        window: int,
        hop: int,
        channels: int,
        gain: npt.ArrayLike | None = None,
        bias: npt.ArrayLike | None = None,
    ) -> None:
        if window < 1 or hop < 1 or channels < 1:
            raise ValueError(f"window, hop and channels must be >= 1, got {window}, {hop}, {channels}")
        self.window, self.hop = window, hop
        self._values = np.zeros((window, channels), np.float64)
        self._ts = np.zeros(window, np.float64)
        self._gain = np.ones(channels) if gain is None else np.asarray(gain, np.float64)
        self._bias = np.zeros(channels) if bias is None else np.asarray(bias, np.float64)
        self.count = 0  # samples pushed so far
        self.windows = 0  # windows cut so far
        self._next_start = 0  # stream position where the next window starts

    def push(self, values: tuple[float, ...] | npt.NDArray[np.float64], ts: float) -> Window | None:
        """Add one sample; the window it completes, if any."""
        slot = self.count % self.window
        self._values[slot] = values
        self._ts[slot] = ts
        self.count += 1
        if self.count != self._next_start + self.window:
            return None
        oldest = self.count % self.window  # the ring's oldest row is the window's first sample
        data = np.roll(self._values, -oldest, axis=0) * self._gain + self._bias
        ts_ring = np.roll(self._ts, -oldest)
        window = Window(
            index=self.windows,
            start_ts=float(ts_ring[0]),
            end_ts=float(ts_ring[-1]),
            data=data.astype(np.float32),
            first_sample=self._next_start,
        )
        self.windows += 1
        self._next_start += self.hop
        return window


def expected_windows(samples: int, window: int, hop: int) -> int:
    """How many windows ``samples`` samples give: ``floor((samples - window) / hop) + 1``, or 0."""
    return 0 if samples < window else (samples - window) // hop + 1
