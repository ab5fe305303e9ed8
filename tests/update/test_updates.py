"""Signed model updates end to end: real daemons, a real broker, the real CLI pushing.

The daemon serves the person detector on a paced looping video; updates carry the same detector
as version 2 (golden vectors from the astronaut photo). Every test checks what a subscriber sees:
the states on the retained ``model/status``, the model version in the predictions, and that the
predictions never stop for long while an update is checked, swapped in or refused.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.broker import Broker, Recorder, wait_for
from tests.daemon import ROOT, DaemonProcess, cli, make_config, make_video
from tests.timeouts import scaled

pytestmark = pytest.mark.slow

PERSON = ROOT / "models" / "ssdlite_mobilenet_v2_person"
FPS = 10


# -- bundles ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keys (trusted and foreign) and the version 2 bundle, made once for the module."""
    d = tmp_path_factory.mktemp("kit")
    for name in ("keys", "foreign"):
        assert cli("keys", "generate", "--out", d / name).returncode == 0
    bundle = d / "person-2.tar"
    made = cli(
        "bundle",
        "create",
        PERSON,
        "--version",
        "2",
        "--out",
        bundle,
        "--golden",
        ROOT / "tests" / "data" / "astronaut.jpg",
    )
    assert made.returncode == 0, made.stderr
    return {
        "dir": d,
        "key": d / "keys" / "signing.key",
        "pub": d / "keys" / "signing.pub",
        "foreign": d / "foreign" / "signing.key",
        "bundle": bundle,
    }


def signed(
    kit: dict[str, Path],
    dest: Path,
    *,
    version: str = "2",
    key: Path | None = None,
    members: dict[str, bytes] | None = None,
    sign_args: tuple[str, ...] = (),
) -> Path:
    """A copy of the v2 bundle (optionally with members replaced and re-versioned), signed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    files = _members(kit["bundle"])
    if version != "2":
        meta = yaml.safe_load(files["model.yaml"])
        meta["version"] = version
        files["model.yaml"] = yaml.safe_dump(meta, sort_keys=False).encode()
    files.update(members or {})
    _write_tar(dest, files)
    done = cli("bundle", "sign", dest, "--key", key or kit["key"], *sign_args)
    assert done.returncode == 0, done.stderr
    return dest


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _write_tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)


# -- a running device --------------------------------------------------------------------------------
class Device:
    """One daemon on the looping video, with a subscriber on everything it publishes."""

    def __init__(
        self,
        tmp: Path,
        broker: Broker,
        kit: dict[str, Path],
        *,
        device: str = "cam-test",
        updates: dict[str, Any] | None = None,
        groups: list[str] | None = None,
        **overrides: Any,
    ) -> None:
        self.tmp, self.broker = tmp, broker
        tmp.mkdir(parents=True, exist_ok=True)
        video = make_video(tmp / "loop.mp4", 40)
        self.config = make_config(
            tmp,
            broker.port,
            video,
            device={"id": device, "groups": groups or []},
            pipelines=[
                {
                    "name": "front",
                    "model": "person",
                    "source": {"type": "video", "path": str(video), "fps": FPS, "loop": True},
                }
            ],
            updates={
                "store": str(tmp / "state" / "models"),
                "public_keys": [str(kit["pub"])],
                "health_window_s": 2,
                "chunk_retry_s": 1,
                **(updates or {}),
            },
            **overrides,
        )
        self.id = device
        self.recorder = Recorder(broker.port, f"edge/{device}/#")
        self.process: DaemonProcess | None = None
        self._seen_before: list[Any] = []

    def start(self, env: dict[str, str | None] | None = None) -> Device:
        self.process = DaemonProcess(self.config, self.tmp / "daemon.log", env=env)
        assert wait_for(lambda: len(self.predictions()) > len(self._seen_before), 60), self.log()
        return self

    def restart(self) -> None:
        self._seen_before = self.predictions()
        self.start()

    def predictions(self) -> list[dict[str, Any]]:
        return [p for p in self.recorder.on("/predictions/front") if isinstance(p, dict)]

    def statuses(self, update: str | None = None) -> list[dict[str, Any]]:
        out = [p for p in self.recorder.on("/model/status") if isinstance(p, dict)]
        return [p for p in out if update is None or p.get("update") == update]

    def final(self, update: str, timeout: float = 90) -> dict[str, Any]:
        ok = wait_for(
            lambda: any(s["state"] in ("active", "rejected", "rolled_back") for s in self.statuses(update)),
            timeout,
        )
        assert ok, f"no final state: {self.statuses(update)}\n{self.log()[-3000:]}"
        return next(s for s in self.statuses(update) if s["state"] in ("active", "rejected", "rolled_back"))

    def versions_after(self, t: float) -> set[str]:
        return {p["model"]["version"] for p in self.predictions() if p["frame"]["ts"] > t}

    def updates(self) -> dict[str, int]:
        """The ``updates`` counters of the last health message."""
        health = [h for h in self.recorder.on("/health") if isinstance(h, dict)]
        return dict(health[-1].get("updates") or {}) if health else {}

    def assert_no_gap(self, versions: set[str]) -> None:
        """No result lost, whatever the machine's speed: every seq from the first prediction to
        the last, each frame once and in order (a file source waits rather than drop), served
        by exactly ``versions`` (a swap inside the sequence: no frame lost across it)."""
        preds = sorted({p["id"]: p for p in self.predictions()}.values(), key=lambda p: p["seq"])
        seqs = [p["seq"] for p in preds]
        missing = sorted(set(range(seqs[0], seqs[-1])) - set(seqs))
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), missing
        frames = [p["frame"]["index"] for p in preds]
        assert frames == list(range(frames[0], frames[0] + len(frames))), frames
        assert {p["model"]["version"] for p in preds} == versions

    def log(self) -> str:
        return (self.tmp / "daemon.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.proc.poll() is None:
            assert self.process.terminate() == 0
        self.recorder.close()


@pytest.fixture
def device(tmp_path: Path, broker: Broker, kit: dict[str, Path]) -> Iterator[Device]:
    d = Device(tmp_path / "dev", broker, kit).start()
    yield d
    d.stop()


def update_id(bundle: Path) -> str:
    text = json.loads(Path(f"{bundle}.manifest.json").read_text())["manifest"]
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def push(bundle: Path, broker: Broker, *extra: str, wait: float = 90) -> subprocess.CompletedProcess[str]:
    wait_s = str(scaled(wait))  # the device's answer: a wait like the others (tests/timeouts.py)
    broker_at = f"127.0.0.1:{broker.port}"
    return cli("push", bundle, "--broker", broker_at, "--wait", wait_s, *extra, timeout=wait + 30)


# -- happy paths ---------------------------------------------------------------------------------------
def test_update_by_chunks_swaps_while_serving(
    device: Device, broker: Broker, kit: dict[str, Path], tmp_path: Path
) -> None:
    """A pushed v2 goes downloading -> verifying -> testing -> active; predictions switch to v2
    without a gap, and the store keeps v2 installed."""
    bundle = signed(kit, tmp_path / "b" / "v2.tar", sign_args=("--chunk-size", "200000"))
    done = push(bundle, broker, "--device", "cam-test")
    assert done.returncode == 0, done.stdout + done.stderr + device.log()[-2000:]
    assert "cam-test: active" in done.stdout
    uid = update_id(bundle)
    states = [s["state"] for s in device.statuses(uid)]
    order = ["downloading", "verifying", "testing", "active"]
    # Retained states coalesce in the outbox (docs/mqtt.md): one replaced before it was sent (the
    # predictions queued ahead of it) is skipped, never reordered. The steps show in the log.
    assert set(states) <= set(order) and states == sorted(states, key=order.index), states
    assert states[0] == "downloading" and states[-1] == "active", states
    assert re.search(r"update: \S+ passed \d+ golden vector\(s\)", device.log()), device.log()[-2000:]
    t_active = device.final(uid)["ts"]
    assert wait_for(lambda: device.versions_after(t_active + 0.5) == {"2"}, 20)
    device.assert_no_gap({"1", "2"})
    assert (
        tmp_path / "dev" / "state" / "models" / "ssdlite_mobilenet_v2_person" / "2" / "model.yaml"
    ).is_file()
    # a restart keeps serving the committed version
    device.process.terminate()  # type: ignore[union-attr]
    mark = time.time()
    device.restart()
    assert wait_for(lambda: device.versions_after(mark) == {"2"}, 30)


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` support (resumed downloads)."""

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *_: Any) -> None:
        pass


def test_update_by_url(device: Device, broker: Broker, kit: dict[str, Path], tmp_path: Path) -> None:
    """With a URL signed into the manifest (``bundle sign --url``) the device downloads the bundle
    over HTTP and ends active on v2; ``push --url`` with another URL is refused before sending."""
    (tmp_path / "www").mkdir()
    handler = lambda *a: RangeHandler(*a, directory=str(tmp_path / "www"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v2.tar"
        bundle = signed(kit, tmp_path / "www" / "v2.tar", sign_args=("--url", url))
        other = push(bundle, broker, "--device", "cam-test", "--url", url + "?elsewhere", wait=5)
        assert other.returncode == 2 and "bundle sign --url" in other.stderr, other.stderr
        done = push(bundle, broker, "--device", "cam-test", "--url", url)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stdout + done.stderr + device.log()[-2000:]
    assert device.final(update_id(bundle))["state"] == "active"
    mark = time.time()
    assert wait_for(lambda: device.versions_after(mark) == {"2"}, 20)
    device.assert_no_gap({"1", "2"})


# -- refusals ----------------------------------------------------------------------------------------
def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _bad_signature(path: Path) -> None:
    manifest = Path(f"{path}.manifest.json")
    envelope = json.loads(manifest.read_text())
    envelope["manifest"] = envelope["manifest"].replace('"version":"3"', '"version":"4"')
    manifest.write_text(json.dumps(envelope))


def _perturbed_golden(kit: dict[str, Path]) -> dict[str, bytes]:
    members = _members(kit["bundle"])
    out: dict[str, bytes] = {}
    for name in ("golden/onnx.npz", "golden/tflite.npz"):
        arrays = dict(np.load(io.BytesIO(members[name])))
        for key in [k for k in arrays if "_out" in k]:
            a = arrays[key]
            arrays[key] = (a.astype(np.float64) * -1 + 7).astype(a.dtype)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        out[name] = buf.getvalue()
    return out


def _garbage_model(kit: dict[str, Path]) -> dict[str, bytes]:
    members = _members(kit["bundle"])
    meta = yaml.safe_load(members["model.yaml"])
    garbage = b"not a model at all" * 1000
    out = {meta["files"][k]: garbage for k in ("onnx", "tflite")}
    meta["sha256"].update({name: hashlib.sha256(garbage).hexdigest() for name in out})
    meta["version"] = "3"
    out["model.yaml"] = yaml.safe_dump(meta, sort_keys=False).encode()
    return out


def test_bad_updates_are_refused_and_the_old_model_keeps_serving(
    tmp_path: Path, broker: Broker, kit: dict[str, Path]
) -> None:
    """Each bad update is rejected with its reason on model/status, except those whose signature
    fails: they belong to no update, so the device publishes nothing for them (it counts them in
    health); v1 serves throughout, without a gap; then a good update still goes through."""
    dev = Device(tmp_path / "dev", broker, kit, updates={"max_bundle_bytes": 20_000_000}).start()
    b = tmp_path / "b"
    try:
        unauthenticated = [signed(kit, b / "foreign.tar", version="3", key=kit["foreign"])]
        forged = signed(kit, b / "forged.tar", version="3")
        _bad_signature(forged)
        unauthenticated.append(forged)
        for bundle in unauthenticated:
            done = push(bundle, broker, "--device", "cam-test", wait=4)
            assert done.returncode == 1 and "no answer" in done.stderr, (done.stdout, done.stderr)
        assert wait_for(lambda: dev.updates().get("unauthenticated") == 2, 10), dev.updates()
        assert not [s for s in dev.statuses() if s["update"] in map(update_id, unauthenticated)]
        assert "update message ignored: signature does not verify" in dev.log()

        cases: list[tuple[str, Path, str]] = []
        # format 1 signs no chunk digests: tampered bytes are found by the bundle's sha256 (format 2
        # ignores each wrong chunk as it arrives: tests/update/test_hostile.py)
        tampered = signed(kit, b / "tampered.tar", version="3", sign_args=("--format", "1"))
        _tamper(tampered)
        cases.append(("tampered bytes", tampered, "sha256 mismatch"))
        expired = signed(kit, b / "expired.tar", version="3", sign_args=("--expires-in", "1"))
        cases.append(("expired", expired, "expired"))
        cases.append(("downgrade", signed(kit, b / "old.tar", version="1"), "downgrade"))
        cases.append(
            (
                "oversized",
                signed(kit, b / "big.tar", version="3", members={"padding.bin": b"\0" * 21_000_000}),
                "over the limit",
            )
        )
        evil = b / "evil.tar"
        files = _members(kit["bundle"])
        files["../../escape.txt"] = b"owned"
        _write_tar(evil, files)
        assert cli("bundle", "sign", evil, "--key", kit["key"]).returncode == 0
        cases.append(("path traversal", evil, "parent path"))
        cases.append(
            (
                "golden mismatch",
                signed(kit, b / "golden.tar", version="3", members=_perturbed_golden(kit)),
                "golden vectors differ",
            )
        )
        cases.append(
            ("does not load", signed(kit, b / "garbage.tar", members=_garbage_model(kit)), "does not load")
        )
        time.sleep(1.2)  # let the expired one expire
        for label, bundle, reason in cases:
            done = push(bundle, broker, "--device", "cam-test", wait=60)
            final = dev.final(update_id(bundle))
            assert final["state"] == "rejected", (label, final)
            assert reason in (final["reason"] or ""), (label, final)
            assert done.returncode == 1, (label, done.stdout, done.stderr)
            assert "rejected" in done.stdout, (label, done.stdout)
            assert final["active_version"] == "1", (label, final)
        # the extraction folder is store/.staging/ID.extract: "../../escape.txt" would land in the
        # store; no file of that name may appear anywhere in the test's folders
        assert not (tmp_path / "dev" / "state" / "models" / "escape.txt").exists()
        assert not list(tmp_path.rglob("escape.txt"))
        mark = time.time()
        assert wait_for(lambda: dev.versions_after(mark) == {"1"}, 10)
        dev.assert_no_gap({"1"})
        good = signed(kit, b / "good.tar", version="5")
        assert push(good, broker, "--device", "cam-test").returncode == 0, dev.log()[-2000:]
        store = tmp_path / "dev" / "state" / "models"
        assert sorted(p.name for p in (store / "ssdlite_mobilenet_v2_person").iterdir()) == [
            "5",
            "active.json",
        ]
        assert not list((store / ".staging").iterdir())
    finally:
        dev.stop()


# -- crash safety --------------------------------------------------------------------------------------
POINTS = {
    "accepted": ("active", "2"),
    "downloading": ("active", "2"),
    "downloaded": ("active", "2"),
    "extracted": ("active", "2"),
    "installed": ("active", "2"),
    "tested": ("active", "2"),
    "swapped": ("rolled_back", "1"),
    "watching": ("rolled_back", "1"),
    "committed": ("active", "2"),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_at_each_step_leaves_old_or_new(
    point: str, tmp_path: Path, broker: Broker, kit: dict[str, Path]
) -> None:
    """SIGKILL at ``point``; after a restart exactly one complete version serves and the update
    ends as expected (resumed, or rolled back when the health window never completed)."""
    dev = Device(tmp_path / "dev", broker, kit).start(env={"EDGE_RUNTIME_FAULT": f"update:{point}"})
    bundle = signed(kit, tmp_path / "b" / "v2.tar", sign_args=("--chunk-size", "100000"))
    pusher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_runtime",
            "push",
            str(bundle),
            "--device",
            "cam-test",
            "--broker",
            f"127.0.0.1:{broker.port}",
            "--wait",
            "120",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert dev.process is not None
        assert dev.process.proc.wait(scaled(60)) == -9, dev.log()[-2000:]
        assert f"fault injection at {point}" in dev.log()
        store = tmp_path / "dev" / "state" / "models" / "ssdlite_mobilenet_v2_person"
        active = json.loads((store / "active.json").read_text()) if (store / "active.json").exists() else None
        if active is not None:  # whatever it names is complete
            assert (store / active["version"] / "model.yaml").is_file()
        mark = time.time()
        dev.restart()
        state, version = POINTS[point]
        final = dev.final(update_id(bundle))
        assert final["state"] == state, (final, dev.log()[-3000:])
        settled = final["ts"] + 0.5
        assert wait_for(lambda: dev.versions_after(settled) == {version}, 30), dev.versions_after(settled)
        assert dev.versions_after(mark) <= {"1", "2"}
        out, _ = pusher.communicate(timeout=scaled(60))
        assert pusher.returncode == (0 if state == "active" else 1), out
    finally:
        if pusher.poll() is None:
            pusher.kill()
        dev.stop()


# -- fleets ------------------------------------------------------------------------------------------------
def test_group_update_reaches_three_devices(tmp_path: Path, broker: Broker, kit: dict[str, Path]) -> None:
    """One push to group ``lab`` updates all three devices of the group; exit 0 once all are active."""
    devices = [
        Device(tmp_path / name, broker, kit, device=name, groups=["lab"])
        for name in ("cam-a", "cam-b", "cam-c")
    ]
    try:
        for d in devices:
            d.start()
        bundle = signed(kit, tmp_path / "b" / "v2.tar", sign_args=("--target", "group:lab"))
        done = push(bundle, broker, "--group", "lab", wait=120)
        assert done.returncode == 0, done.stdout + done.stderr
        for d in devices:
            assert f"{d.id}: active" in done.stdout
            assert d.final(update_id(bundle))["state"] == "active"
        mark = time.time()
        for d in devices:
            assert wait_for(lambda d=d: d.versions_after(mark) == {"2"}, 20)
    finally:
        for d in devices:
            d.stop()
