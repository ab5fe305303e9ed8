"""RemoteConfig at its seams: what a start uses, and a config that crashed the daemon at start."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_runtime.config.loader import load_config
from edge_runtime.control.configstore import ConfigStore, file_digest
from edge_runtime.control.envelope import ConfigDoc, sign
from edge_runtime.control.remote import RemoteConfig
from edge_runtime.update.manifest import generate_keys, load_private_key
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


def test_unsigned_junk_neither_writes_per_message_nor_evicts_handled_documents(tmp_path: Path) -> None:
    """A flood of distinct unsigned documents: the handled list (bounded) keeps the real
    document's digest, so its retained copy read again at the next connect still does nothing."""
    config, folder = _setup(tmp_path)
    store = ConfigStore(folder, keep=3)
    store.remember("ee" * 32)  # the digest of the real (retained) document, handled before
    remote = RemoteConfig(load_config(config), config)
    remote.startup(load_config(config))
    supervisor = _Supervisor()
    remote.supervisor = supervisor
    state = folder / "config-state.json"
    for i in range(200):
        remote._handle(json.dumps({"document": f"junk {i}", "signature": ""}).encode())
    assert remote.store.seen("ee" * 32)
    assert "ee" * 32 in json.loads(state.read_text())["seen"]
    assert len(supervisor.sent) == 1  # the refusals: reported once (at most once per 10 s)
    assert supervisor.sent[0][1]["state"] == "rejected"


def test_replayed_signed_documents_for_others_are_reported_at_a_bounded_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every device's signed documents are on the broker: anyone can replay 200 of them (more
    than the remembered list holds). At most 10 a minute are logged, reported and remembered;
    the real document's digest stays remembered."""
    private, public = generate_keys(tmp_path / "keys")
    config = synthetic_config(
        tmp_path,
        1883,
        control={"state_dir": str(tmp_path / "control")},
        updates={"store": str(tmp_path / "models"), "public_keys": [str(public)]},
    )
    ConfigStore(tmp_path / "control", keep=3).remember("ee" * 32)
    remote = RemoteConfig(load_config(config), config)
    supervisor = _Supervisor()
    remote.supervisor = supervisor
    key = load_private_key(private)
    caplog.set_level("WARNING")
    for i in range(200):
        doc = ConfigDoc(target=f"device:other-{i}", created=time.time(), version=i + 1, config="x: 1")
        remote._handle(sign(doc, key))
    assert len(supervisor.sent) == 10
    assert all("signed for device:other-" in body["reason"] for _, body in supervisor.sent)
    assert len(caplog.records) <= 16, [r.getMessage() for r in caplog.records]
    assert remote.store.seen("ee" * 32)
