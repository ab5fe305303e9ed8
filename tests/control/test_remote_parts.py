"""RemoteConfig at its seams: what a start uses, and a config that crashed the daemon at start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from edge_runtime.config.loader import load_config
from edge_runtime.control.configstore import ConfigStore, file_digest
from edge_runtime.control.remote import RemoteConfig
from tests.daemon import synthetic_config


class _Supervisor:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def swap(self, cfg: Any) -> str | None:
        return None

    def problems(self) -> str | None:
        return None

    def report(self, topic: str, payload: bytes) -> bool:
        self.sent.append((topic, json.loads(payload)))
        return True

    def reload(self) -> None:
        pass


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    config = synthetic_config(tmp_path, 1883, control={"state_dir": str(tmp_path / "control")})
    remote = yaml.safe_load(config.read_text())
    remote["pipelines"][0]["every_n_frames"] = 7
    store = ConfigStore(tmp_path / "control", keep=3)
    name = store.write(4, "ab" * 32, yaml.safe_dump(remote))
    store.state["active"] = {"version": 4, "sha256": "ab" * 32, "file": name, "base": file_digest(config)}
    store.save()
    return config, tmp_path / "control"


def test_a_start_uses_the_applied_remote_config_until_the_local_file_changes(tmp_path: Path) -> None:
    config, _ = _setup(tmp_path)
    remote = RemoteConfig(load_config(config), config)
    assert remote.startup(load_config(config)).pipelines[0].every_n_frames == 7
    config.write_text(config.read_text() + "\n# edited on the device\n")
    edited = RemoteConfig(load_config(config), config)
    assert edited.startup(load_config(config)).pipelines[0].every_n_frames == 1
    supervisor = _Supervisor()
    edited.start(supervisor)
    edited.close()
    (topic, body) = supervisor.sent[-1]
    assert topic == "edge/cam-test/config/reported" and body["state"] == "rolled_back"
    assert "changed since it was applied: the file wins" in body["reason"]


def test_a_config_on_trial_at_start_is_rolled_back_and_reported(tmp_path: Path) -> None:
    """The daemon died while trying v5 (e.g. it crashed at start): the next start runs v4."""
    config, folder = _setup(tmp_path)
    store = ConfigStore(folder, keep=3)
    store.state["trial"] = {
        "version": 5,
        "sha256": "cd" * 32,
        "file": "v5-x.yaml",
        "base": file_digest(config),
    }
    store.save()
    remote = RemoteConfig(load_config(config), config)
    assert remote.startup(load_config(config)).pipelines[0].every_n_frames == 7  # v4, the last that worked
    supervisor = _Supervisor()
    remote.start(supervisor)
    remote.close()
    body = supervisor.sent[-1][1]
    assert (body["state"], body["version"], body["running_version"]) == ("rolled_back", 5, 4)
    assert "stopped while trying it" in body["reason"]
    assert ConfigStore(folder, keep=3).trial is None


def test_a_remote_config_that_no_longer_loads_is_dropped_for_the_local_file(tmp_path: Path) -> None:
    config, folder = _setup(tmp_path)
    store = ConfigStore(folder, keep=3)
    assert store.active is not None
    store.path(store.active).write_text("pipelines: [\n")  # damaged on disk
    remote = RemoteConfig(load_config(config), config)
    assert remote.startup(load_config(config)).pipelines[0].every_n_frames == 1
    supervisor = _Supervisor()
    remote.start(supervisor)
    remote.close()
    body = supervisor.sent[-1][1]
    assert body["state"] == "rolled_back" and "no longer loads" in body["reason"]
    assert ConfigStore(folder, keep=3).active is None
