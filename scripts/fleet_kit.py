"""The parts of a simulated fleet (scripts/fleet_sim.py): signed bundles and N real daemons.

Each daemon: its own config and state folder, device id ``sim-NNN`` in group ``sim``, the
vibration detector on a recorded stream of a healthy machine replayed at ``RATE_HZ`` (one window
every ~10 s, so a 2-core machine holds many), health every 10 s, a 2 s health window.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "models"))
import vibration as vib  # noqa: E402  (the project's simulator, found once its folder is on sys.path)

MODEL = ROOT / "models" / "vibration_anomaly"
GROUP = "sim"
RATE_HZ = 25  # one 256-sample window every ~10 s: 0.6-0.9 % of a core per idle daemon (100 Hz: 1.7 %)
WINDOW = 256


def cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process."""
    cmd = [sys.executable, "-m", "edge_runtime", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(done.args)}: {done.stderr[-2000:]}")


@dataclass(frozen=True)
class Kit:
    """The public key and the signed bundles: v2 and v3 good, v4 with wrong golden vectors."""

    pub: Path
    bundles: Path
    v2: Path
    v3: Path
    v4: Path

    @staticmethod
    def uid(bundle: Path) -> str:
        """The update id of a signed bundle (first 16 hex digits of its manifest's sha256)."""
        text = json.loads(Path(f"{bundle}.manifest.json").read_text())["manifest"]
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as src:
        return {m.name: src.extractfile(m).read() for m in src.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _write(out: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(out, "w") as dst:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


def _variant(files: dict[str, bytes], version: str, *, wrong_golden: bool = False) -> dict[str, bytes]:
    """The bundle at another version; with ``wrong_golden`` its golden outputs are changed, so
    the device's acceptance gate refuses it."""
    out = dict(files)
    meta = yaml.safe_load(out["model.yaml"])
    meta["version"] = version
    out["model.yaml"] = yaml.safe_dump(meta, sort_keys=False).encode()
    for name in [n for n in out if wrong_golden and n.startswith("golden/") and n.endswith(".npz")]:
        arrays = dict(np.load(io.BytesIO(out[name])))
        for key in [k for k in arrays if "_out" in k]:
            arrays[key] = (arrays[key].astype(np.float64) * -1 + 7).astype(arrays[key].dtype)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        out[name] = buf.getvalue()
    return out


def make_kit(folder: Path) -> Kit:
    """Keys, then the bundles signed for group ``sim`` in ``folder/bundles`` (what fleet serve reads)."""
    bundles = folder / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    _ok(cli("keys", "generate", "--out", folder / "keys", "--force"))
    made = folder / "made-2.tar"  # one `bundle create` (golden vectors); the versions are copies
    _ok(cli("bundle", "create", MODEL, "--version", "2", "--out", made))
    files = _members(made)
    paths = {v: bundles / f"vibration-{v}.tar" for v in ("2", "3", "4")}
    for version, path in paths.items():
        _write(path, _variant(files, version, wrong_golden=version == "4"))
        key = folder / "keys" / "signing.key"
        _ok(cli("bundle", "sign", path, "--key", key, "--target", f"group:{GROUP}"))
    return Kit(folder / "keys" / "signing.pub", bundles, paths["2"], paths["3"], paths["4"])


def samples_file(folder: Path) -> Path:
    """One minute of a healthy machine's vibration, as CSV lines (shared by every device)."""
    path = folder / "samples.csv"
    if not path.exists():
        path.write_text("\n".join(vib.as_csv_lines(vib.machine_stream(7, 60 * RATE_HZ))) + "\n")
    return path


class Fleet:
    """N daemons as child processes, started and stopped by device id."""

    def __init__(self, folder: Path, n: int, port: int, pub: Path) -> None:
        self.folder, self.port, self.pub = folder, port, pub
        folder.mkdir(parents=True, exist_ok=True)
        self.samples = samples_file(folder)
        self.ids = [f"sim-{i:03d}" for i in range(n)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def config(self, device: str) -> Path:
        """The device's config file (written once)."""
        state = self.folder / device
        state.mkdir(exist_ok=True)
        source = {
            "type": "sensor",
            "driver": "stream",
            "path": str(self.samples),
            "format": "csv",
            "channels": list(vib.CHANNELS),
            "rate_hz": RATE_HZ,
            "window": WINDOW,
            "loop": True,
        }
        cfg = {
            "device": {"id": device, "groups": [GROUP]},
            "mqtt": {"host": "127.0.0.1", "port": self.port, "reconnect_min_s": 1, "reconnect_max_s": 5},
            "outbox": {"path": str(state / "outbox.db")},
            "health": {"interval_s": 10},
            "models": {"vibration": {"path": str(MODEL), "threads": 1}},
            "pipelines": [{"name": "pump", "model": "vibration", "source": source}],
            "updates": {
                "store": str(state / "models"),
                "public_keys": [str(self.pub)],
                "health_window_s": 2,
                "chunk_retry_s": 1,
            },
        }
        path = state / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def start(self, ids: list[str]) -> None:
        """Start these devices (their logs go to ``<device>/daemon.log``)."""
        for device in ids:
            config = self.config(device)
            with (config.parent / "daemon.log").open("ab") as log:
                self.procs[device] = subprocess.Popen(
                    [sys.executable, "-m", "edge_runtime", "run", str(config)],
                    stdout=log,
                    stderr=log,
                    cwd=ROOT,
                    env=dict(os.environ, PYTHONUNBUFFERED="1"),
                )

    def stop(self, ids: list[str]) -> None:
        """SIGTERM these devices (a clean stop: retained offline status), and wait for them."""
        procs = [self.procs.pop(d) for d in ids if d in self.procs]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def memory(self) -> list[tuple[int, int]]:
        """Memory of each running daemon: resident (RSS, counting shared libraries in each) and
        unique (USS: what stopping it would free), in bytes."""
        out = []
        for p in self.procs.values():
            try:
                info = psutil.Process(p.pid).memory_full_info()
            except psutil.NoSuchProcess:
                continue
            out.append((info.rss, info.uss))
        return out

    def close(self) -> None:
        """Stop every device."""
        self.stop(list(self.procs))


def serve(work: Path, bundles: Path, port: int) -> subprocess.Popen[bytes]:
    """``edge-runtime fleet serve`` on the bundles (the update server), log in ``work/serve.log``."""
    with (work / "serve.log").open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_runtime",
                "fleet",
                "serve",
                str(bundles),
                "--broker",
                f"127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
