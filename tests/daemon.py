"""Run the real daemon as a child process from a config built by ``make_config``."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from tests.timeouts import scaled

ROOT = Path(__file__).resolve().parents[1]


def make_video(path: Path, frames: int, size: tuple[int, int] = (320, 240)) -> Path:
    """A small deterministic video: the astronaut photo panning (a person in every frame)."""
    photo = cv2.imread(str(ROOT / "tests" / "data" / "astronaut.jpg"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 15, size)
    for i in range(frames):
        shift = np.float32([[1, 0, (i % 20) - 10], [0, 1, 0]])
        writer.write(cv2.resize(cv2.warpAffine(photo, shift, photo.shape[1::-1]), size))
    writer.release()
    return path


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def make_config(tmp: Path, port: int, video: Path, **overrides: Any) -> Path:
    """A daemon config file (docs/config.md); nested ``overrides`` are merged in."""
    base = {
        "device": {"id": "cam-test"},
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "topic_prefix": "edge",
            "keepalive": 5,
            "reconnect_min_s": 2,
            "reconnect_max_s": 2,
        },
        "outbox": {"path": str(tmp / "state" / "outbox.db")},
        "health": {"interval_s": 1},
        "models": {"person": {"path": str(ROOT / "models" / "ssdlite_mobilenet_v2_person"), "threads": 1}},
        "pipelines": [
            {
                "name": "front",
                "model": "person",
                "source": {"type": "video", "path": str(video), "fps": 0, "loop": False},
            }
        ],
        "updates": {"store": str(tmp / "state" / "models")},
        "control": {"state_dir": str(tmp / "state" / "control")},  # never the machine's own
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(_merge(base, overrides), sort_keys=False))
    return path


def synthetic_config(tmp_path: Path, port: int, name: str = "front", **overrides: Any) -> Path:
    """A config with one endless synthetic pipeline at 5 fps."""
    source = {"type": "synthetic", "width": 160, "height": 120, "fps": 5}
    pipelines = [{"name": name, "model": "person", "source": source}]
    return make_config(tmp_path, port, tmp_path / "unused.mp4", pipelines=pipelines, **overrides)


def paced_config(tmp_path: Path, port: int, frames: int, fps: float) -> Path:
    """A config whose video of ``frames`` frames plays at ``fps`` (long enough to inject faults)."""
    video = make_video(tmp_path / "v.mp4", frames)
    source = {"type": "video", "path": str(video), "fps": fps}
    return make_config(
        tmp_path, port, video, pipelines=[{"name": "front", "model": "person", "source": source}]
    )


def cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process (operator commands: keys, bundle, push)."""
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        cwd=ROOT,
        check=False,
    )


class DaemonProcess:
    """``python -m edge_runtime run CONFIG`` with its log in a file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str | None] | None = None) -> None:
        """``env`` is merged into this process's environment; a None value unsets that name."""
        self.config, self.log_path = config, log
        child_env = dict(os.environ, PYTHONUNBUFFERED="1")
        for name, value in (env or {}).items():
            if value is None:
                child_env.pop(name, None)
            else:
                child_env[name] = value
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_runtime", "run", str(config)],
                stdout=fh,
                stderr=fh,
                env=child_env,
                cwd=ROOT,
            )

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait (``timeout`` scaled: tests/timeouts.py); the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(scaled(timeout))

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        self.proc.kill()
        self.proc.wait(scaled(10))

    def log(self) -> str:
        """What it logged so far."""
        return self.log_path.read_text(errors="replace")
