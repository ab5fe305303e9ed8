"""The ``fleet serve`` systemd unit: it verifies clean and stays as sandboxed as measured
(``systemd-analyze`` with ``--root``, as tests/test_systemd.py checks the daemon's unit)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT_NAME = "edge-runtime-fleet-serve.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
# `systemd-analyze security --offline=true` (systemd 252) measured "Overall exposure level: 1.1 OK":
# what is left is the network to the broker. --threshold= takes the level times ten.
SECURITY_THRESHOLD = 11


def _root(tmp_path: Path, unit_text: str | None = None) -> Path:
    """A target tree with the unit and a stub edge-runtime where ExecStart= names it."""
    root = tmp_path / "root"
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    (units / UNIT_NAME).write_text(unit_text or (REPO / "systemd" / UNIT_NAME).read_text())
    binary = root / "opt" / "edge-runtime" / "venv" / "bin" / "edge-runtime"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return root


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], check=False, capture_output=True, text=True, timeout=60)


@needs_analyze
def test_fleet_serve_unit_verifies_and_stays_sandboxed(tmp_path: Path) -> None:
    root = _root(tmp_path)
    done = _analyze("verify", "--recursive-errors=no", f"--root={root}", UNIT_NAME)
    assert done.returncode == 0, done.stdout + done.stderr
    done = _analyze(
        "security", "--offline=true", f"--threshold={SECURITY_THRESHOLD}", f"--root={root}", UNIT_NAME
    )
    assert done.returncode == 0, done.stdout[-3000:]


@needs_analyze
def test_a_weakened_fleet_serve_unit_is_caught(tmp_path: Path) -> None:
    """The threshold is tight enough to notice a sandboxing line removed."""
    text = (REPO / "systemd" / UNIT_NAME).read_text().replace("DynamicUser=yes\n", "")
    done = _analyze(
        "security",
        "--offline=true",
        f"--threshold={SECURITY_THRESHOLD}",
        f"--root={_root(tmp_path, text)}",
        UNIT_NAME,
    )
    assert done.returncode != 0, done.stdout[-2000:]


def test_fleet_serve_unit_runs_fleet_serve_and_never_restarts_on_bad_input() -> None:
    text = (REPO / "systemd" / UNIT_NAME).read_text()
    assert "bin/edge-runtime fleet serve ${BUNDLES} --broker ${BROKER}" in text
    assert "RestartPreventExitStatus=2" in text and "StateDirectory=edge-runtime-fleet" in text
