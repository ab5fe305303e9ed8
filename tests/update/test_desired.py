"""Desired state on the device, part by part: retained manifests the broker sends again at every
connect change nothing once decided (also after a restart), an update that must wait for the
running job waits and then runs, and an empty (cleared) message is nobody's update.
End to end with real daemons, ``push`` and ``fleet serve``: tests/fleet/test_fleet_updates.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from edge_runtime.update.desired import DesiredState
from edge_runtime.update.manifest import load_private_key, sign, update_id
from tests.broker import wait_for
from tests.update.test_hostile_parts import (  # noqa: F401 (fixtures)
    Device,
    _signed_manifest,
    device,
    key_files,
)

DEVICE_TOPIC, GROUP_TOPIC = "p/d/model/update", "p/groups/g/model/update"


def _envelope(key_file: Path, data: bytes, **manifest: Any) -> dict[str, Any]:
    envelope = sign(_signed_manifest(data, 4096, **manifest), load_private_key(key_file))
    return {**envelope, "transfer": {"type": "chunks", "chunk_size": 4096}}


def _pub(keys: tuple[Path, Path]) -> list[Path]:
    return [keys[0].parent / "signing.pub"]


def test_a_retained_refusal_is_published_once_even_across_restarts(
    tmp_path: Path,
    key_files: tuple[Path, Path],  # noqa: F811
) -> None:
    """An expired manifest kept by the broker is refused with its reason once; the broker's copies
    at later connects and after a restart publish nothing; a live copy (pushed again) is answered."""
    expired = json.dumps(_envelope(key_files[0], os.urandom(100), expires=time.time() - 5)).encode()
    uid = update_id(json.loads(expired)["manifest"])
    dev = Device(tmp_path, _pub(key_files))
    try:
        for _ in range(3):
            dev.manager.submit(expired, DEVICE_TOPIC, True)
        assert wait_for(lambda: dev.settled() and dev.statuses, 10)
        time.sleep(0.3)
        assert [(s["state"], s["update"], s["reason"][:15]) for s in dev.statuses] == [
            ("rejected", uid, "manifest expire")
        ]
    finally:
        dev.manager.stop()
    assert DesiredState(tmp_path / "store").handled(uid) is not None  # persisted
    again = Device(tmp_path, _pub(key_files))  # a restart: the broker sends its copy again
    try:
        again.manager.submit(expired, DEVICE_TOPIC, True)
        assert wait_for(again.settled, 10)
        time.sleep(0.3)
        assert again.statuses == []
        again.manager.submit(expired, DEVICE_TOPIC, False)  # pushed again while connected
        assert wait_for(lambda: len(again.statuses) == 1, 10)
        assert again.statuses[0]["state"] == "rejected"
    finally:
        again.manager.stop()


def test_a_desired_version_already_met_is_silent_and_a_live_one_is_answered(
    device: Device,  # noqa: F811
    key_files: tuple[Path, Path],  # noqa: F811
) -> None:
    """A retained manifest for the version that serves (a group's older desired state) is met:
    nothing published. Pushed live, the same kind of manifest is refused as a downgrade."""
    device.manager.submit(
        json.dumps(_envelope(key_files[0], os.urandom(50), version="1")).encode(), GROUP_TOPIC, True
    )
    assert wait_for(device.settled, 10)
    time.sleep(0.3)
    assert device.statuses == []
    device.manager.submit(
        json.dumps(_envelope(key_files[0], os.urandom(60), version="1")).encode(), DEVICE_TOPIC
    )
    assert wait_for(lambda: len(device.statuses) == 1, 10)
    assert device.statuses[0]["reason"].startswith("downgrade")


def test_a_desired_update_waits_for_the_running_job_then_runs(
    tmp_path: Path,
    key_files: tuple[Path, Path],  # noqa: F811
) -> None:
    """While version 2 downloads, the group's version 2 (another bundle) cannot supersede it: it
    waits without a refusal, and starts once the running job has ended (here: timed out)."""
    dev = Device(tmp_path, _pub(key_files), download_timeout_s=2)
    try:
        first = _envelope(key_files[0], os.urandom(5000))
        second = _envelope(key_files[0], os.urandom(6000))
        dev.manager.submit(json.dumps(first).encode(), DEVICE_TOPIC, True)
        assert wait_for(lambda: dev.manager.job is not None, 10)
        dev.manager.submit(json.dumps(second).encode(), GROUP_TOPIC, True)
        second_id = update_id(second["manifest"])
        assert wait_for(lambda: any(s["update"] == second_id for s in dev.statuses), 20)
        states = [(s["update"] == second_id, s["state"]) for s in dev.statuses]
        assert (False, "rejected") in states and (True, "downloading") in states, states
        assert (True, "rejected") not in states
    finally:
        dev.manager.stop()


def test_an_empty_message_clears_nothing_on_the_device(
    device: Device,  # noqa: F811
    key_files: tuple[Path, Path],  # noqa: F811
) -> None:
    """A cleared desired update (an empty retained message, which nobody signs) neither counts as
    a refusal nor stops the update in progress."""
    real = _envelope(key_files[0], os.urandom(5000))
    device.manager.submit(json.dumps(real).encode(), DEVICE_TOPIC, True)
    assert wait_for(lambda: device.manager.job is not None, 10)
    for retained in (True, False):
        device.manager.submit(b"", DEVICE_TOPIC, retained)
    time.sleep(0.3)
    assert device.manager.counters()["refused"] == 0
    assert device.manager.job is not None and device.manager.job.update == update_id(real["manifest"])


def test_once_the_signed_url_stalled_chunks_keep_coming_while_it_is_tried_again(tmp_path: Path) -> None:
    """A device offered the signed URL (format 2) and chunks: after the URL stalls, chunks are
    asked for from then on, also while the URL is tried again, so a dead web server slows a
    download down once, not at every retry. The bytes complete from the chunks alone."""
    import socket

    from edge_runtime.update.job import Job, Transfer
    from tests.update.test_hostile_parts import _download

    data = os.urandom(40 * 4096)
    dead = socket.socket()  # accepts connections into its backlog, never answers
    dead.bind(("127.0.0.1", 0))
    dead.listen(8)
    url = f"http://127.0.0.1:{dead.getsockname()[1]}/b"
    try:
        job = Job.begin(
            "u1", _signed_manifest(data, 4096, url=url), Transfer("url", url=url), download_timeout_s=60
        )
        sent: list[tuple[str, bytes]] = []
        download = _download(tmp_path, job, sent, source_stall_s=0.5, chunk_retry_s=0.2)
        asked_while_url_live = 0
        deadline = time.monotonic() + 30
        while not download.step() and time.monotonic() < deadline:
            live = download._fetch is not None
            for _topic, body in sent:
                for i in json.loads(body)["chunks"][:4]:  # a slow server: four chunks per request
                    download.on_chunk("p/updates/u1", i, data[i * 4096 : (i + 1) * 4096])
            asked_while_url_live += bool(sent) and live
            sent.clear()
            time.sleep(0.02)
        assert (tmp_path / "u1.part").read_bytes() == data
        assert asked_while_url_live > 0
        download.close()
    finally:
        dead.close()


def test_a_decision_is_written_once(tmp_path: Path) -> None:
    """Refusing the same update again (a replay pushed live) writes nothing more to the disk, and
    the oldest decisions are forgotten beyond the limit."""
    state = DesiredState(tmp_path, limit=3)
    state.mark("a", "rejected", "manifest expired 1 s ago")
    written = (tmp_path / "desired.json").stat().st_mtime_ns
    state.mark("a", "rejected", "manifest expired 9 s ago")
    assert (tmp_path / "desired.json").stat().st_mtime_ns == written
    for update in "bcd":
        state.mark(update, "rejected", "downgrade")
    again = DesiredState(tmp_path, limit=3)
    assert again.handled("a") is None and again.handled("d") is not None
    assert (again.handled("b") or {}).get("reason") == "downgrade"


def test_a_rolled_back_update_is_not_tried_again_when_the_broker_sends_it_again(
    device: Device,  # noqa: F811
    key_files: tuple[Path, Path],  # noqa: F811
) -> None:
    """An update that rolled back here (its outcome in history.json) is neither tried again nor
    reported again for the broker's retained copy; pushed again live, its outcome is told."""
    envelope = _envelope(key_files[0], os.urandom(3000), version="3")
    uid = update_id(envelope["manifest"])
    device.manager.store.record(uid, "m", "3", "rolled_back", "health window: 3 failed frames")
    for _ in range(3):
        device.manager.submit(json.dumps(envelope).encode(), GROUP_TOPIC, True)
    assert wait_for(device.settled, 10)
    time.sleep(0.3)
    assert device.statuses == [] and device.manager.job is None
    device.manager.submit(json.dumps(envelope).encode(), GROUP_TOPIC, False)
    assert wait_for(lambda: len(device.statuses) == 1, 10)
    assert device.statuses[0]["state"] == "rolled_back" and device.manager.job is None
