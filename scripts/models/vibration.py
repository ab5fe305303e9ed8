"""Synthetic machine vibration: a 3-axis accelerometer on a rotating machine, with faults.

Shared by ``make_vibration_model.py`` (training and held-out data), ``feed_vibration.py`` (the
demo stream) and the tests. numpy only; every stream is determined by its seed.

The physics, simplified:

* The shaft turns at ``f0`` (15-40 Hz, i.e. 900-2400 rpm; the speed wanders by about 0.5%).
  Radial axes (x, y) see the running-speed harmonics 1x, 2x, 3x with a 90 degree phase lag
  between x and y (the shaft's orbit); the axial axis (z) sees less. z carries gravity (1 g).
* Broadband noise (0.01-0.03 g) plus a weak structural resonance (noise through a 120-350 Hz
  resonator) that depends on the mounting.
* Faults (``FAULTS``):
  - ``imbalance``: a rotating force at 1x adds 0.15-0.4 g radially;
  - ``misalignment``: strong 2x (and 3x) radially and axially;
  - ``looseness``: many harmonics (up to 9x) and the half-order 0.5x, with the waveform clipped
    on one side (a foot that lifts);
  - ``bearing``: an outer-race defect: an impulse each time a rolling element passes it
    (BPFO = 3-5.5x the shaft speed), each ringing a 150-400 Hz resonance that decays in a few
    milliseconds.

Units are g; the default sample rate is 1000 Hz.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

FS = 1000.0
CHANNELS = ("ax", "ay", "az")
FAULTS = ("imbalance", "misalignment", "looseness", "bearing")


@dataclass
class Machine:
    """One machine on one mounting: its running speed and vibration signature."""

    f0: float
    harmonics: np.ndarray  # [3 axes, 3 orders] amplitudes in g
    phases: np.ndarray  # [3 axes, 3 orders] radians
    noise: float
    offsets: np.ndarray  # [3] g (gravity on z)
    resonance_hz: float
    resonance_gain: float
    wobble_hz: float
    fault: str | None = None
    severity: float = 0.0
    fault_params: dict[str, float] = field(default_factory=dict)


def random_machine(rng: np.random.Generator, fault: str | None = None) -> Machine:
    """A machine drawn from the normal population, with ``fault`` (or healthy)."""
    radial = rng.uniform(0.04, 0.10)
    orders = np.array([1.0, rng.uniform(0.25, 0.5), rng.uniform(0.08, 0.2)])
    axis_gain = np.array([1.0, rng.uniform(0.8, 1.2), rng.uniform(0.3, 0.6)])
    harmonics = radial * axis_gain[:, None] * orders[None, :]
    phases = rng.uniform(0, 2 * np.pi, size=(3, 3))
    phases[1] = phases[0] - np.pi / 2  # y lags x by 90 degrees: the shaft's orbit
    machine = Machine(
        f0=rng.uniform(15.0, 40.0),
        harmonics=harmonics,
        phases=phases,
        noise=rng.uniform(0.01, 0.03),
        offsets=np.array([rng.normal(0, 0.02), rng.normal(0, 0.02), 1.0 + rng.normal(0, 0.02)]),
        resonance_hz=rng.uniform(120.0, 350.0),
        resonance_gain=rng.uniform(0.005, 0.02),
        wobble_hz=rng.uniform(0.1, 0.5),
    )
    if fault is not None:
        add_fault(machine, fault, rng)
    return machine


def add_fault(machine: Machine, fault: str, rng: np.random.Generator, severity: float | None = None) -> None:
    """Give ``machine`` a fault of ``severity`` 0..1 (random when None), in place."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
    machine.fault = fault
    machine.severity = rng.uniform(0.0, 1.0) if severity is None else severity
    s = machine.severity
    if fault == "imbalance":
        machine.fault_params = {"extra": 0.15 + 0.25 * s}
    elif fault == "misalignment":
        machine.fault_params = {"order2": 0.12 + 0.2 * s, "axial": rng.uniform(0.8, 1.5)}
    elif fault == "looseness":
        machine.fault_params = {"level": 0.05 + 0.08 * s, "clip": 0.7 - 0.3 * s}
    else:
        machine.fault_params = {
            "bpfo": machine.f0 * rng.uniform(3.0, 5.5),
            "amplitude": 0.15 + 0.5 * s,
            "ring_hz": rng.uniform(150.0, 400.0),
            "decay": rng.uniform(150.0, 400.0),
            "axis": float(rng.integers(0, 2)),
        }


def _phase(machine: Machine, t: np.ndarray) -> np.ndarray:
    """Shaft angle (radians) at times ``t``, with the slow speed wobble."""
    wobble = 0.005 * machine.f0 / (2 * np.pi * machine.wobble_hz)
    return 2 * np.pi * machine.f0 * t - wobble * np.cos(2 * np.pi * machine.wobble_hz * t)


def _resonance(noise: np.ndarray, hz: float, fs: float) -> np.ndarray:
    """White noise through a two-pole resonator (a structural mode)."""
    r, w = 0.97, 2 * np.pi * hz / fs
    a1, a2 = 2 * r * np.cos(w), -r * r
    out = np.zeros_like(noise)
    y1 = y2 = 0.0
    for i, x in enumerate(noise):
        y = x + a1 * y1 + a2 * y2
        out[i], y2, y1 = y, y1, y
    return out * (1 - r)


def signal(machine: Machine, start: int, n: int, rng: np.random.Generator, fs: float = FS) -> np.ndarray:
    """Samples ``start .. start+n-1`` of the machine's stream, ``[n, 3]`` in g.

    The deterministic part depends only on the sample index, so consecutive calls join up; the
    noise comes from ``rng``.
    """
    t = (start + np.arange(n)) / fs
    theta = _phase(machine, t)
    amps = machine.harmonics.copy()
    params = machine.fault_params
    if machine.fault == "imbalance":
        amps[:2, 0] += params["extra"]
    elif machine.fault == "misalignment":
        amps[:2, 1] += params["order2"]
        amps[2, 1] += params["order2"] * params["axial"]
        amps[:, 2] += params["order2"] * 0.4
    x = np.zeros((n, 3))
    for order in range(3):
        x += amps[:, order][None, :] * np.sin(
            (order + 1) * theta[:, None] + machine.phases[:, order][None, :]
        )
    if machine.fault == "looseness":
        level = params["level"]
        for k in range(4, 10):
            x[:, :2] += level / (k - 2) * np.sin(k * theta[:, None] + k)
        x[:, :2] += level * np.sin(0.5 * theta[:, None] + 0.3)
        peak = np.abs(x[:, :2]).max(axis=0) * params["clip"]
        x[:, :2] = np.minimum(x[:, :2], peak)  # one-sided clipping: the loose foot hits its stop
    if machine.fault == "bearing":
        x[:, int(params["axis"])] += _impulses(machine, t)
    x += rng.normal(0.0, machine.noise, size=(n, 3))
    ring = _resonance(rng.normal(0.0, 1.0, size=n + 200), machine.resonance_hz, fs)[200:]
    x[:, :2] += machine.resonance_gain * 30 * ring[:, None]
    return x + machine.offsets[None, :]


def _impulses(machine: Machine, t: np.ndarray) -> np.ndarray:
    """Decaying rings started at each pass of a rolling element over the defect."""
    p = machine.fault_params
    period = 1.0 / p["bpfo"]
    out = np.zeros_like(t)
    first = np.floor((t[0] - 0.05) / period)
    for k in np.arange(first, np.ceil(t[-1] / period) + 1):
        t0 = k * period
        dt = t - t0
        mask = dt >= 0
        out[mask] += (
            p["amplitude"] * np.exp(-p["decay"] * dt[mask]) * np.sin(2 * np.pi * p["ring_hz"] * dt[mask])
        )
    return out


def windows(machine: Machine, count: int, size: int, rng: np.random.Generator, fs: float = FS) -> np.ndarray:
    """``count`` windows of ``size`` samples at random offsets of the machine's stream: [count, size, 3]."""
    starts = rng.integers(0, 10_000_000, size=count)
    return np.stack([signal(machine, int(s), size, rng, fs) for s in starts]).astype(np.float32)


def as_csv_lines(samples: np.ndarray, decimals: int = 5) -> list[str]:
    """One ``ax,ay,az`` line per sample."""
    return [",".join(f"{v:.{decimals}f}" for v in row) for row in samples]


def machine_stream(
    seed: int,
    samples: int,
    *,
    fault: str | None = None,
    fault_start: int = 0,
    fault_samples: int = 0,
    severity: float | None = None,
    fs: float = FS,
) -> np.ndarray:
    """A healthy machine's stream of ``samples`` samples [samples, 3]; with ``fault``, samples
    ``fault_start .. fault_start + fault_samples - 1`` come from the same machine with that fault
    (``severity`` 0..1, random when None)."""
    rng = np.random.default_rng(seed)
    machine = random_machine(rng)
    out = signal(machine, 0, samples, rng, fs)
    if fault is not None and fault_samples > 0:
        faulty = copy.deepcopy(machine)
        add_fault(faulty, fault, rng, severity)
        end = min(samples, fault_start + fault_samples)
        out[fault_start:end] = signal(faulty, fault_start, end - fault_start, rng, fs)
    return out
