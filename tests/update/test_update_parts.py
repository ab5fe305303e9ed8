"""The parts of model updates on their own: manifests and signatures, safe extraction, chunked
downloads that resume, the store's commit point."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest

from edge_runtime.errors import InputError, UpdateError
from edge_runtime.update import faults
from edge_runtime.update.acceptance import HealthWindow, trial_all
from edge_runtime.update.bundle import extract
from edge_runtime.update.job import Job, JobState, Transfer
from edge_runtime.update.manager import UpdateManager
from edge_runtime.update.manifest import (
    Manifest,
    generate_keys,
    is_newer,
    load_private_key,
    load_public_key,
    sign,
    verify,
)
from edge_runtime.update.policy import UpdatePolicy
from edge_runtime.update.startup import installed_folder, resumed_ending, settle
from edge_runtime.update.store import BASE, Active, ModelStore, write_json_atomic
from edge_runtime.update.transfer import ChunkFile, Verdict


def _manifest(**kw: object) -> Manifest:
    fields: dict[str, object] = {
        "name": "m",
        "version": "2",
        "sha256": "a" * 64,
        "size": 10,
        "created": time.time(),
        "format": 1,  # no signed transfer (format 2: tests/update/test_hostile_parts.py)
    }
    fields.update(kw)
    return Manifest(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    return generate_keys(d / "a")[0], generate_keys(d / "b")[0]


def test_key_files(keys: tuple[Path, Path]) -> None:
    """The private key is 0600; generating over an existing pair is refused."""
    private = keys[0]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (private.parent / "signing.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(InputError, match="exists already"):
        generate_keys(private.parent)


def test_signature_round_trip_and_refusals(keys: tuple[Path, Path]) -> None:
    """A signed envelope verifies; a changed manifest, a foreign key and junk are refused."""
    key = load_private_key(keys[0])
    trusted = [load_public_key(keys[0].parent / "signing.pub")]
    envelope = sign(_manifest(), key)
    env = verify(json.dumps(envelope).encode(), trusted)
    assert env.manifest.version == "2" and len(env.update_id) == 16
    forged = dict(envelope, manifest=envelope["manifest"].replace('"version":"2"', '"version":"9"'))
    with pytest.raises(UpdateError, match="does not verify"):
        verify(json.dumps(forged).encode(), trusted)
    foreign = sign(_manifest(), load_private_key(keys[1]))
    with pytest.raises(UpdateError, match="does not verify"):
        verify(json.dumps(foreign).encode(), trusted)
    with pytest.raises(UpdateError, match="not JSON"):
        verify(b"\xff{", trusted)
    with pytest.raises(UpdateError, match="limit"):
        verify(b" " * 70_000, trusted)
    with pytest.raises(UpdateError, match="nests deeper"):
        verify(b"[" * 30_000 + b"]" * 30_000, trusted)
    with pytest.raises(UpdateError, match="no trusted keys"):
        verify(json.dumps(envelope).encode(), [])


def test_expiry_target_and_versions() -> None:
    """Expired manifests, other devices' and other groups' manifests are refused; versions compare
    numerically, part by part."""
    with pytest.raises(UpdateError, match="expired"):
        _manifest(expires=time.time() - 5).check_time()
    _manifest(expires=time.time() + 60).check_time()
    with pytest.raises(UpdateError, match="targets device"):
        _manifest(target="device:other").check_target("cam-01", [])
    with pytest.raises(UpdateError, match="targets group"):
        _manifest(target="group:lab").check_target("cam-01", ["yard"])
    _manifest(target="group:lab").check_target("cam-01", ["lab"])
    assert is_newer("1.10", "1.9") and not is_newer("1", "1") and not is_newer("2", "10")
    assert is_newer("1", "not-numeric")


def _tar(path: Path, entries: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info in entries:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _file(name: str, size: int = 3) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (_file("../escape"), "parent path"),
        (_file("a/../../escape"), "parent path"),
        (_file("/etc/passwd-new"), "absolute"),
        (_link("model.onnx", "/etc/passwd"), "no links"),
        (_link("model.onnx", "labels.txt", tarfile.LNKTYPE), "no links"),
    ],
)
def test_extraction_refuses_escapes_and_links(tmp_path: Path, entry: tarfile.TarInfo, reason: str) -> None:
    """Members that could write outside the folder, or link anywhere, fail the whole bundle."""
    bundle = _tar(tmp_path / "b.tar", [_file("model.yaml"), entry])
    with pytest.raises(UpdateError, match=reason):
        extract(bundle, tmp_path / "out", max_bytes=1000)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def test_extraction_limits_size(tmp_path: Path) -> None:
    """A bundle that would extract to more than the limit is refused before writing."""
    bundle = _tar(tmp_path / "b.tar", [_file("big", 5000)])
    with pytest.raises(UpdateError, match="limit"):
        extract(bundle, tmp_path / "out", max_bytes=1000)
    extract(bundle, tmp_path / "ok", max_bytes=10_000)
    assert (tmp_path / "ok" / "big").stat().st_size == 5000


def test_chunks_reordered_repeated_and_resumed(tmp_path: Path) -> None:
    """Chunks land at their offsets in any order; repeats, wrong sizes and indices out of range
    are ignored (each with its verdict); after a restart only what was saved counts and the rest
    is asked for again."""
    data = os.urandom(10_000)
    part = tmp_path / "u.part"
    chunks = ChunkFile(part, len(data), 3000)  # 4 chunks, the last one 1000 bytes
    assert chunks.write(3, data[9000:]) == chunks.write(1, data[3000:6000]) == Verdict.STORED
    assert chunks.write(1, data[3000:6000]) == Verdict.REPEAT
    assert chunks.write(0, data[:10]) == Verdict.WRONG_SIZE
    assert chunks.write(4, b"x") == chunks.write(999_999, b"x") == Verdict.OUT_OF_RANGE
    chunks.close()
    assert chunks.write(0, data[:3000]) == Verdict.CLOSED  # nothing is written after close
    again = ChunkFile(part, len(data), 3000)
    assert again.missing(10) == [0, 2] and again.progress == 0.5
    again.write(0, data[:3000])
    again.write(2, data[6000:9000])
    assert again.done
    again.close()
    assert part.read_bytes() == data


def test_uncommitted_swap_rolls_back_at_start(tmp_path: Path) -> None:
    """A version that never finished its health window is not served after a restart."""
    store = ModelStore(tmp_path / "store")
    for version in ("2", "3"):
        (store.folder("m", version)).mkdir(parents=True)
        (store.folder("m", version) / "model.yaml").write_text("name: m\n")
    store.set_active("m", Active(version="3", previous=["2", BASE], committed=False))
    notes = settle(store)
    path, note = installed_folder(store, "m")
    assert path == store.folder("m", "2") and note is None
    assert len(notes) == 1 and "rolled back" in notes[0]
    assert store.active("m") == Active(
        version="2", previous=[BASE], committed=True, since=store.active("m").since
    )  # type: ignore[union-attr]
    store.set_active("m", Active(version="2", previous=[BASE], committed=False))
    settle(store)
    assert installed_folder(store, "m")[0] is None
    assert store.active("m") is None


def test_installed_folder_only_reads(tmp_path: Path) -> None:
    """installed_folder never writes: an unsettled record gives the previous version, a missing
    folder the configured model, each with the reason; settle with nothing to do does nothing."""
    store = ModelStore(tmp_path / "store")
    assert settle(store) == [] and installed_folder(store, "m") == (None, None)
    (store.folder("m", "2")).mkdir(parents=True)
    (store.folder("m", "2") / "model.yaml").write_text("name: m\n")
    record = Active(version="3", previous=["2", BASE], committed=False)
    store.set_active("m", record)
    path, note = installed_folder(store, "m")
    assert path == store.folder("m", "2") and note and "not committed" in note
    assert store.active("m") == record
    store.set_active("m", Active(version="4", previous=["2", BASE]))
    path, note = installed_folder(store, "m")
    assert path is None and note and "installed version 4 is missing" in note
    assert settle(store) == []


OLD_JOBS = [  # job.json as the dict-based manager wrote it: the envelope's transfer kept verbatim
    {
        "update": "0123456789abcdef",
        "name": "ssdlite_mobilenet_v2_person",
        "version": "2",
        "sha256": "b" * 64,
        "size": 1_234_567,
        "transfer": {
            "type": "chunks",
            "topic": "edge/updates/0123456789abcdef",
            "chunk_size": 100_000,
            "count": 13,
        },
        "state": "downloading",
        "deadline": 1_700_000_600.25,
        "started": 1_700_000_000.125,
    },
    {
        "update": "fedcba9876543210",
        "name": "m",
        "version": "1.10",
        "sha256": "c" * 64,
        "size": 10,
        "transfer": {"type": "url", "url": "https://example.com/m-1.10.tar"},
        "state": "testing",
        "deadline": 1_700_000_600.0,
        "started": 1_700_000_000.0,
        "verified": True,
    },
]


@pytest.mark.parametrize("saved", OLD_JOBS, ids=["chunks", "url-verified"])
def test_job_json_of_the_old_format_resumes_unchanged(tmp_path: Path, saved: dict[str, object]) -> None:
    """A job.json written before the job was typed loads into a Job, and is written back with the
    same keys and values (byte for byte through the store)."""
    job = Job.from_json(json.loads(json.dumps(saved)))
    assert job.state is JobState(saved["state"]) and job.verified == ("verified" in saved)
    assert job.transfer.chunked == (saved["transfer"]["type"] == "chunks")  # type: ignore[index]
    assert job.to_json() == saved
    store = ModelStore(tmp_path / "store")
    write_json_atomic(store.root / "job.json", saved)
    before = (store.root / "job.json").read_bytes()
    resumed = store.job()
    assert resumed == job
    store.save_job(resumed)
    assert (store.root / "job.json").read_bytes() == before


def test_job_state_changes_and_verification_are_saved(tmp_path: Path) -> None:
    """The state is saved by value; ``verified`` appears once set; a file that holds no job is dropped."""
    store = ModelStore(tmp_path / "store")
    job = Job.from_json(dict(OLD_JOBS[0]))
    job.state, job.verified = JobState.WATCHING, True
    store.save_job(job)
    saved = json.loads((store.root / "job.json").read_text())
    assert saved == {**OLD_JOBS[0], "state": "watching", "verified": True}
    store.save_job(None)
    assert store.job() is None
    write_json_atomic(store.root / "job.json", {"update": "x"})
    assert store.job() is None and not (store.root / "job.json").exists()


def test_transfer_checks() -> None:
    """A transfer hint: chunks need a chunk size in range (a topic, if any, without wildcards:
    the device uses its own); a URL needs an http(s) url."""
    ok = Transfer.check({"type": "chunks", "topic": "t/u", "chunk_size": 10, "count": 3})
    assert (ok.topic, ok.chunk_size, ok.extra) == ("t/u", 10, {"count": 3})
    assert Transfer.check({"type": "chunks", "chunk_size": 10}).chunked
    assert Transfer.check({"type": "url", "url": "http://h/b.tar"}).url == "http://h/b.tar"
    for bad, reason in [
        ({"type": "url"}, "'url' missing"),
        ({"type": "url", "url": "file:///etc/passwd"}, "http"),
        ({"type": "chunks", "topic": "t"}, "need 'chunk_size'"),
        ({"type": "chunks", "topic": "t/#", "chunk_size": 10}, "wildcards"),
        ({"type": "chunks", "topic": "t", "chunk_size": 2 << 20}, "out of range"),
        ({"type": "chunks", "chunk_size": True}, "need 'chunk_size'"),
        ({"type": "ftp"}, "unknown"),
    ]:
        with pytest.raises(UpdateError, match=reason):
            Transfer.check(bad)


def test_fault_hook_only_when_asked_for() -> None:
    """Without EDGE_RUNTIME_FAULT (or with one for something else) there is no hook; with one, the
    hook ignores every other point (the crash tests cover the kill itself)."""
    assert faults.from_environment({}) is None
    assert faults.from_environment({faults.FAULT_ENV: "outbox:commit"}) is None
    hook = faults.from_environment({faults.FAULT_ENV: "update:committed"})
    assert hook is not None
    hook("watching")  # still alive


class FakeSlot:
    """A slot whose model is a name; counters set by the test."""

    def __init__(self, key: str, serving: str, fail: str | None = None) -> None:
        self.key, self.serving, self.fail = key, serving, fail
        self.counts = (0, 0, 0.0)
        self.closed: list[str] = []

    def version(self) -> str:
        return self.serving

    def check_bundle(self, folder: Path) -> None:
        pass

    def trial(self, folder: Path, *, max_latency_ms: float | None, latency_factor: float) -> str:
        if self.fail:
            raise UpdateError(self.fail)
        return f"{folder.name}@{self.key}"

    def swap(self, candidate: str) -> str:
        old, self.serving = self.serving, candidate
        return old

    def counters(self) -> tuple[int, int, float]:
        return self.counts

    def close(self, candidate: str) -> None:
        self.closed.append(candidate)


def _policy(**kw: object) -> UpdatePolicy:
    fields: dict[str, object] = {
        "max_bundle_bytes": 1000,
        "download_timeout_s": 60,
        "chunk_window": 8,
        "chunk_retry_s": 1,
        "health_window_s": 0,
        "max_errors": 2,
        "max_latency_ms": 50.0,
        "latency_factor": 3.0,
        "keep": 2,
    }
    return UpdatePolicy(**{**fields, **kw})  # type: ignore[arg-type]


def test_trial_of_every_slot_closes_all_when_one_fails(tmp_path: Path) -> None:
    """Each slot tries the new version; when one refuses, the candidates already loaded are closed."""
    a, b = FakeSlot("a", "1"), FakeSlot("b", "1", fail="golden vectors differ")
    with pytest.raises(UpdateError, match="golden vectors differ"):
        trial_all([a, b], tmp_path / "2", _policy())  # type: ignore[list-item]
    assert a.closed == ["2@a"] and b.closed == []
    assert trial_all([a], tmp_path / "2", _policy()) == {"a": "2@a"}  # type: ignore[list-item]


def test_health_window_rolls_back_on_errors_and_latency_and_commits_when_clean(tmp_path: Path) -> None:
    """Counted from the swap: too many failed frames or a slow mean roll back (the old model serves
    again, active.json points back); a clean window commits and closes the old model."""
    store = ModelStore(tmp_path / "store")
    slot = FakeSlot("a", "1")
    slot.counts = (100, 5, 1000.0)  # before the swap: not held against the new model

    def window() -> HealthWindow:
        record = Active(version="2", previous=[BASE], committed=False, update="u1")
        store.set_active("m", record)
        return HealthWindow.open("m", [slot], {"a": "2"}, record, _policy())  # type: ignore[list-item]

    w = window()
    assert slot.serving == "2" and w.verdict() is None and w.over
    slot.counts = (103, 8, 1030.0)
    reason = w.verdict()
    assert reason == "3 frame(s) failed in the health window"
    w.roll_back(store, reason)
    assert slot.serving == "1" and slot.closed == ["2"] and store.active("m") is None
    w = window()
    slot.counts = (108, 8, 1030.0 + 5 * 60.0)
    assert w.verdict() == "mean inference 60.0 ms in the health window, budget 50.0 ms"
    w.roll_back(store, "slow")
    w, reached = window(), []
    w.commit(store, reached.append)
    assert reached == ["committed"] and slot.serving == "2" and slot.closed[-1] == "1"
    assert store.active("m").committed  # type: ignore[union-attr]


def test_a_saved_job_ends_or_goes_on_after_a_restart(tmp_path: Path) -> None:
    """Watching: active if the commit was written, else rolled back; a download past its deadline
    is rejected; anything else goes on."""
    store = ModelStore(tmp_path / "store")
    job = Job.from_json({**OLD_JOBS[0], "state": "watching", "name": "m", "version": "2"})
    assert resumed_ending(store, job) == (
        "rolled_back",
        "the daemon restarted before the health window ended",
    )
    store.set_active("m", Active(version="2", previous=[BASE], committed=True))
    assert resumed_ending(store, job) == ("active", None)
    job.state = JobState.DOWNLOADING
    assert resumed_ending(store, job) == ("rejected", "download timed out (daemon restarted)")
    job.deadline = time.time() + 60
    assert resumed_ending(store, job) is None


class FakeLink:
    """The MQTT link as the manager sees it (update/ports.py ``Link``): records routes and sends."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.sent: list[tuple[str, bytes]] = []

    def route(self, topic_filter: str, handler: object) -> None:
        if handler is None:
            self.routes.pop(topic_filter, None)
        else:
            self.routes[topic_filter] = handler

    def route_retained(self, topic_filter: str, handler: object) -> None:
        self.routes[topic_filter] = handler

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int | None:
        self.sent.append((topic, payload))
        return len(self.sent)


def test_chunk_indices_that_are_not_plain_digits_are_ignored(tmp_path: Path) -> None:
    """Anyone can publish on a chunk topic; "²" passes str.isdigit but not int()."""
    link = FakeLink()
    manager = UpdateManager(
        device="d",
        groups=[],
        keys=[],
        store=ModelStore(tmp_path),
        slots={},
        policy=_policy(),
        publish_status=lambda _body: None,
        link=link,
        topic_prefix="p",
    )
    manager.listen(["p/d/model/update"])
    assert set(link.routes) == {"p/d/model/update"}
    bad = ("T/chunk/²", "T/chunk/-1", "T/chunk/1e3", "T/chunk/" + "9" * 30, "T/chunk/", "T/chunk/٣")
    for topic in bad:
        manager.chunk_message(topic, b"x")
    assert manager.inbox.empty()
    assert manager.counters()["ignored_chunks"] == len(bad)
    manager.chunk_message("T/chunk/7", b"x")
    assert manager.inbox.get(0) == ("chunk", ("T", 7), b"x")
