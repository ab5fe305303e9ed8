"""The control parts at their seams: signed envelopes, nonces, and the answer to each request."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.control.commands import Commands
from edge_runtime.control.envelope import CommandDoc, ConfigDoc, authenticate, load_keys, open_document, sign
from edge_runtime.control.nonces import Nonces
from edge_runtime.control.requests import Request
from edge_runtime.errors import ControlError
from edge_runtime.fleet.cmdsend import request_payload
from edge_runtime.update.manifest import generate_keys, load_private_key


class _Pipeline:
    def __init__(self, name: str) -> None:
        self.name, self.paused = name, threading.Event()


class _Daemon:
    def __init__(self) -> None:
        self.pipelines = [_Pipeline("front")]
        self.health_published = 0

    def health(self) -> dict[str, Any]:
        return {"device": "d1"}

    def publish_health(self) -> None:
        self.health_published += 1

    def rebirth(self) -> list[str]:
        return ["edge/d1/status"]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    private, public = generate_keys(tmp_path / "k")
    foreign, _ = generate_keys(tmp_path / "f")
    return {
        "key": load_private_key(private),
        "pub": load_keys([public]),
        "foreign": load_private_key(foreign),
    }


def _commands(tmp_path: Path, keys: dict[str, Any], require_signed: str = "changes") -> Commands:
    return Commands(
        _Daemon(),
        device="d1",
        groups=["g"],
        keys=keys["pub"],
        nonces=Nonces(tmp_path / "nonces.json", max_age_s=300),
        require_signed=require_signed,
        frames=lambda name: np.zeros((120, 160, 3), np.uint8) if name == "front" else None,
        snapshot_max_height=480,
        snapshot_quality=80,
        reload=None,
        rebirth=lambda: ["edge/d1/status"],
    )


def _ask(commands: Commands, name: str, payload: bytes = b"") -> dict[str, Any]:
    return commands(Request(name, payload, "r", b"c"))


def test_require_signed_all_refuses_even_a_ping(tmp_path: Path, keys: dict[str, Any]) -> None:
    strict = _commands(tmp_path, keys, "all")
    refused = _ask(strict, "ping")
    assert (
        refused["ok"] is False and refused["refused"] is True and "require_signed is all" in refused["error"]
    )
    assert _ask(strict, "ping", request_payload("d1", "ping", {}, keys["key"]))["ok"] is True
    assert _ask(_commands(tmp_path / "b", keys), "ping")["ok"] is True


def test_signed_commands_for_another_device_or_expired_are_refused(
    tmp_path: Path, keys: dict[str, Any]
) -> None:
    commands = _commands(tmp_path, keys)
    other = _ask(commands, "pause", request_payload("d2", "pause", {"pipeline": "front"}, keys["key"]))
    assert other["ok"] is False and "signed for device:d2" in other["error"]
    old = request_payload("d1", "pause", {"pipeline": "front"}, keys["key"], now=time.time() - 3600)
    assert "expired" in _ask(commands, "pause", old)["error"]
    assert not commands.daemon.pipelines[0].paused.is_set()  # type: ignore[attr-defined]


def test_a_tampered_document_does_not_verify(keys: dict[str, Any]) -> None:
    envelope = json.loads(request_payload("d1", "pause", {"pipeline": "front"}, keys["key"]))
    envelope["document"] = envelope["document"].replace("front", "back!")
    with pytest.raises(ControlError, match="does not verify"):
        authenticate(envelope, keys["pub"])


def test_a_signed_command_is_never_taken_for_a_config(keys: dict[str, Any]) -> None:
    envelope = json.loads(request_payload("d1", "ping", {}, keys["key"]))
    with pytest.raises(ControlError, match="kind"):
        open_document(authenticate(envelope, keys["pub"]), ConfigDoc)
    doc = ConfigDoc(version=3, target="group:g", created=time.time(), config="x: 1\n")
    opened = open_document(authenticate(json.loads(sign(doc, keys["key"])), keys["pub"]), ConfigDoc)
    assert opened.version == 3
    with pytest.raises(ControlError, match="kind"):
        open_document(authenticate(json.loads(sign(doc, keys["key"])), keys["pub"]), CommandDoc)


def test_nonces_survive_a_restart_and_refuse_long_lived_commands(tmp_path: Path) -> None:
    now = [1000.0]
    nonces = Nonces(tmp_path / "n.json", max_age_s=300, clock=lambda: now[0])
    nonces.admit("a" * 16, 1100)
    again = Nonces(tmp_path / "n.json", max_age_s=300, clock=lambda: now[0])
    with pytest.raises(ControlError, match="replayed"):
        again.admit("a" * 16, 1100)
    with pytest.raises(ControlError, match="max_command_age_s"):
        again.admit("b" * 16, 1000 + 301)
    now[0] = 1200.0  # the first one expired: forgotten, and refused by its expiry anyway
    again.admit("c" * 16, 1250)
    assert list(json.loads((tmp_path / "n.json").read_text())) == ["c" * 16]


def test_a_damaged_nonce_file_refuses_signed_commands_for_a_while(tmp_path: Path) -> None:
    (tmp_path / "n.json").write_text("{not json")
    now = [0.0]
    nonces = Nonces(tmp_path / "n.json", max_age_s=300, clock=lambda: now[0])
    with pytest.raises(ControlError, match="damaged"):
        nonces.admit("a" * 16, 100)
    now[0] = 301.0
    nonces.admit("a" * 16, 400)


def test_bad_requests_get_reasons(tmp_path: Path, keys: dict[str, Any]) -> None:
    commands = _commands(tmp_path, keys)
    assert "not JSON" in _ask(commands, "ping", b"{nope")["error"]
    assert "arguments are strings" in _ask(commands, "snapshot", b'{"args": {"quality": 7}}')["error"]
    assert "expected 10..100" in _ask(commands, "snapshot", b'{"args": {"quality": "7"}}')["error"]
    assert _ask(commands, "reload", request_payload("d1", "reload", {}, keys["key"]))["error"].startswith(
        "reload works only"
    )
    deep = b'{"args": ' + b"[" * 50 + b"]" * 50 + b"}"
    assert "nests deeper" in _ask(commands, "ping", deep)["error"]
