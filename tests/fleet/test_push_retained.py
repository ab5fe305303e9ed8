"""``push`` and the broker's desired state, without a device: the update is retained unless
``--no-retain``, and ``push --clear`` removes it (a real mosquitto, the real CLI)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from edge_runtime.update.manifest import Manifest, generate_keys, load_private_key, sign
from tests.broker import Broker, Recorder, wait_for
from tests.daemon import cli

pytestmark = pytest.mark.slow  # four real push runs (~15 s)

TOPIC = "edge/groups/lab/model/update"


def _bundle(tmp_path: Path) -> Path:
    data = os.urandom(3000)
    key = generate_keys(tmp_path / "keys")[0]
    m = Manifest(
        name="m",
        version="2",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        created=time.time(),
        format=1,
    )
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(data)
    (tmp_path / "b.tar.manifest.json").write_text(json.dumps(sign(m, load_private_key(key))))
    return bundle


def _retained(port: int) -> list[object]:
    """What a subscriber that comes now gets on the group's update topic (the retained message):
    the broker sends retained messages right after SUBACK, so all of them precede a probe
    published after the subscription."""
    r = Recorder(port, "edge/#")
    try:
        r.client.publish("edge/probe", b"{}", qos=1)
        assert wait_for(lambda: r.on("edge/probe"), 10)
        return r.on(TOPIC)
    finally:
        r.close()


def test_push_retains_the_update_and_clear_removes_it(tmp_path: Path, broker: Broker) -> None:
    bundle = _bundle(tmp_path)
    flags = ("--group", "lab", "--broker", f"127.0.0.1:{broker.port}", "--serve-timeout", "0.5")
    once = cli("push", bundle, *flags, "--no-retain")
    assert once.returncode == 0 and "(once, not retained)" in once.stdout, once.stdout + once.stderr
    assert _retained(broker.port) == []
    done = cli("push", bundle, *flags)
    assert done.returncode == 0, done.stdout + done.stderr
    assert wait_for(
        lambda: (
            [e["manifest"] for e in _retained(broker.port)]
            == [  # type: ignore[index]
                json.loads((tmp_path / "b.tar.manifest.json").read_text())["manifest"]
            ]
        ),
        10,
    )
    cleared = cli("push", "--clear", "--group", "lab", "--broker", f"127.0.0.1:{broker.port}")
    assert cleared.returncode == 0 and f"cleared the desired update on {TOPIC}" in cleared.stdout
    assert _retained(broker.port) == []
    wrong = cli("push", bundle, "--clear", "--group", "lab", "--broker", f"127.0.0.1:{broker.port}")
    assert wrong.returncode == 2 and "--clear takes no BUNDLE" in wrong.stderr
