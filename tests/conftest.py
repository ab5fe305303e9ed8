"""Shared fixtures: real images, bundled models, a CLI runner, a private broker and a subscriber."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.cli import main
from tests.broker import Broker, Recorder
from tests.timeouts import scaled

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
MODELS = ROOT / "models"
CLASSIFIER = MODELS / "efficientnet_lite0"
DETECTOR = MODELS / "ssdlite_mobilenet_v2_person"


@dataclass
class CliResult:
    """Exit code and captured streams of one CLI call."""

    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        """stdout parsed as JSON lines."""
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def run_cli(*args: str | Path) -> CliResult:
    """Run ``edge-runtime ARGS`` in-process (fast) and capture its output."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli_process(*args: str | Path) -> CliResult:
    """Run ``python -m edge_runtime ARGS`` in a child process (real stderr, real exit code)."""
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
        cwd=ROOT,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli() -> Any:
    """The in-process CLI runner."""
    return run_cli


def image(name: str) -> Path:
    """Path of a test image under tests/data."""
    return DATA / f"{name}.jpg"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto of the test's own on a free 127.0.0.1 port, killed by PID afterwards."""
    b = Broker(tmp_path).start()
    yield b
    b.kill()


@pytest.fixture
def recorder(broker: Broker) -> Iterator[Recorder]:
    """A subscriber on every topic of ``broker``."""
    r = Recorder(broker.port)
    yield r
    r.close()
