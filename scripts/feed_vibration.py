#!/usr/bin/env python3
"""Feed simulated machine vibration to a sensor source, one CSV line per sample, at a set rate.

The stream is a healthy machine (``scripts/models/vibration.py``) with an optional fault injected for a
while: the demo for ``configs/sensor-demo.yaml`` and ``models/vibration_anomaly``::

    python scripts/feed_vibration.py --out /tmp/vibration.fifo --seconds 60 \\
        --fault bearing --fault-at 20 --fault-for 10

``--out`` is a FIFO (created when missing; opening it waits for the daemon to read), a regular
file, or ``-`` for stdout (e.g. piped into ``edge-runtime run`` with ``path: "-"``). ``--fast``
writes as fast as the reader takes the lines instead of at ``--rate``. Lines are ``ax,ay,az`` in
g (add ``--timestamps`` for a leading Unix time). The same ``--seed`` gives the same stream.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
import vibration as vib  # sibling script, importable once its folder is on sys.path


def _open(out: str) -> TextIO:
    if out == "-":
        return sys.stdout
    path = Path(out)
    if not path.exists():
        os.mkfifo(path)
    if stat.S_ISFIFO(path.stat().st_mode):
        print(f"waiting for a reader on {path} ...", file=sys.stderr)
    return path.open("w", encoding="ascii", buffering=1)  # line buffered: one write per line


def feed(
    out: TextIO, lines: Sequence[str], rate: float, *, fast: bool, timestamps: bool, chunk: int = 10
) -> None:
    """Write the lines, paced at ``rate`` per second in chunks of ``chunk`` lines."""
    start = time.monotonic()
    t0 = time.time()
    for i in range(0, len(lines), chunk):
        if not fast:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for j, line in enumerate(lines[i : i + chunk], start=i):
            out.write(f"{t0 + j / rate:.4f},{line}\n" if timestamps else f"{line}\n")
        out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the stream and write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="-", help="FIFO, file or - (stdout)")
    parser.add_argument("--rate", type=float, default=vib.FS, help="samples per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the stream")
    parser.add_argument("--seed", type=int, default=1, help="which machine (and noise)")
    parser.add_argument("--fault", choices=vib.FAULTS, help="inject this fault")
    parser.add_argument("--fault-at", type=float, default=10.0, help="seconds into the stream")
    parser.add_argument("--fault-for", type=float, default=5.0, help="seconds")
    parser.add_argument("--severity", type=float, help="0..1 (default: random)")
    parser.add_argument("--fast", action="store_true", help="do not pace; as fast as the reader reads")
    parser.add_argument("--timestamps", action="store_true", help="a leading Unix-time column")
    args = parser.parse_args(argv)
    samples = round(args.seconds * args.rate)
    stream = vib.machine_stream(
        args.seed,
        samples,
        fault=args.fault,
        fault_start=round(args.fault_at * args.rate),
        fault_samples=round(args.fault_for * args.rate),
        severity=args.severity,
        fs=args.rate,
    )
    out = _open(args.out)
    try:
        feed(out, vib.as_csv_lines(stream), args.rate, fast=args.fast, timestamps=args.timestamps)
    except BrokenPipeError:
        print("the reader went away", file=sys.stderr)
        return 1
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
