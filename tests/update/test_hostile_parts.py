"""What anyone on the broker can send to the update path, part by part: the bounded parser,
format 2 manifests (signed chunk digests), URL sources that lie or stall, and the manager
ignoring, counting and rate-limiting what it refuses. End to end: tests/update/test_hostile.py."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.errors import InputError, UpdateError
from edge_runtime.update.download import Download
from edge_runtime.update.inbound import nesting_ok, parse_json
from edge_runtime.update.inbox import CHUNK, MANIFEST, Inbox
from edge_runtime.update.job import Job, Transfer
from edge_runtime.update.manager import UpdateManager
from edge_runtime.update.manifest import (
    Manifest,
    authenticate,
    chunk_digests,
    generate_keys,
    load_private_key,
    load_public_key,
    sign,
    signed_chunk_size,
    update_id,
    verify,
)
from edge_runtime.update.store import ModelStore
from edge_runtime.update.transfer import ChunkFile, UrlFetch, Verdict
from tests.broker import wait_for
from tests.update.test_update_parts import FakeLink, FakeSlot, _policy


# -- the bounded parser ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "depth", "ok"),
    [
        (b"[]", 1, True),
        (b'{"a":[1,{"b":[]}]}', 4, True),
        (b'{"a":[1,{"b":[]}]}', 3, False),
        (b'{"a":"[[[[[[[[[[{{{{{{"}', 1, True),  # brackets inside strings do not count
        (b'{"a":"\\"[[[[[["}', 1, True),  # nor after an escaped quote
        (b"[" * 30_000 + b"]" * 30_000, 8, False),
        (b'"' + b'\\"' * 20_000, 8, True),  # an unterminated string runs to the end
        (b"[}", 8, False),
        (b"", 1, True),
    ],
)
def test_nesting_is_measured_before_parsing(text: bytes, depth: int, ok: bool) -> None:
    """Depth counts arrays and objects outside strings; deep, unbalanced or odd input is refused
    without recursion."""
    assert nesting_ok(text, depth) is ok


def test_parse_json_refuses_size_depth_and_garbage_with_reasons() -> None:
    """Every refusal is an UpdateError with the reason; nothing else escapes (no RecursionError)."""
    for payload, reason in [
        (b"x" * 101, "101 bytes"),
        (b"[" * 30_000 + b"]" * 30_000, "nests deeper than 8"),
        (b"[" * 30_000, "unbalanced"),
        (b"\xff\xfe", "not JSON"),
        (b'{"a": 1', "unbalanced"),
        (b'{"a": nope}', "not JSON"),
    ]:
        with pytest.raises(UpdateError, match=reason):
            parse_json(payload, max_bytes=100 if len(payload) == 101 else 70_000, max_depth=8, what="msg")
    assert parse_json(b'{"a": [1, {"b": "[["}]}', max_bytes=100, max_depth=3, what="msg") == {
        "a": [1, {"b": "[["}]
    }


# -- format 2 manifests ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    return generate_keys(d / "a")[0], generate_keys(d / "b")[0]


def _signed_manifest(data: bytes, chunk: int, **kw: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "m",
        "version": "2",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "created": time.time(),
        "chunk_size": chunk,
        "chunk_digests": base64.b64encode(chunk_digests(data, chunk)).decode(),
    }
    return Manifest(**{**fields, **kw})


def test_format_2_signs_every_chunk_and_format_1_still_verifies(key_files: tuple[Path, Path]) -> None:
    """A format 2 manifest carries one digest per chunk (checked against the size); format 1 texts,
    signed before digests existed, still verify and read; the chunk size grows until the digests
    fit."""
    key, trusted = load_private_key(key_files[0]), [load_public_key(key_files[0].parent / "signing.pub")]
    data = os.urandom(10_000)
    m = _signed_manifest(data, 3000)
    assert m.format == 2 and m.digests is not None and len(m.digests) == 4 * 16
    env = verify(json.dumps(sign(m, key)).encode(), trusted)
    assert env.manifest == m
    with pytest.raises(ValueError, match="must hold 7 digests"):
        _signed_manifest(data, 3000, size=20_000)
    with pytest.raises(ValueError, match="needs chunk_size"):
        Manifest(name="m", version="2", sha256="a" * 64, size=1, created=0.0)
    # a format 1 text exactly as older versions signed it
    old = {"created": 1.5, "expires": None, "format": 1, "name": "m", "sha256": "a" * 64}
    text = json.dumps({**old, "size": 10, "target": None, "version": "3"}, separators=(",", ":"))
    assert Manifest.model_validate_json(text).canonical() == text
    envelope = {"manifest": text, "signature": base64.b64encode(key.sign(text.encode())).decode()}
    assert verify(json.dumps(envelope).encode(), trusted).manifest.version == "3"
    assert signed_chunk_size(10_000) == 64 * 1024
    assert signed_chunk_size(256 * 1024 * 1024) == 256 * 1024  # 1024 chunks
    with pytest.raises(InputError, match="over the"):
        signed_chunk_size(2 * 1024 * 1024 * 1024)


def test_authentication_names_no_update_until_the_signature_verifies(key_files: tuple[Path, Path]) -> None:
    """The real manifest text with a random signature, junk, lone surrogates and deep nesting all
    fail authentication, before any manifest is read."""
    key, trusted = load_private_key(key_files[0]), [load_public_key(key_files[0].parent / "signing.pub")]
    envelope = sign(_signed_manifest(b"x" * 100, 64), key)
    assert authenticate(json.dumps(envelope).encode(), trusted).update_id == update_id(envelope["manifest"])
    bad = [
        json.dumps({**envelope, "signature": base64.b64encode(os.urandom(64)).decode()}),
        json.dumps({**envelope, "signature": base64.b64encode(b"short").decode()}),
        json.dumps({**envelope, "signature": "é"}),
        json.dumps({**envelope, "manifest": "\ud800"}),
        json.dumps({**envelope, "transfer": [[[[[[[]]]]]]]}),
        json.dumps([envelope]),
        "[" * 30_000 + "]" * 30_000,
    ]
    for payload in bad:
        with pytest.raises(UpdateError):
            authenticate(payload.encode("utf-8", "surrogatepass"), trusted)


# -- chunks and URL sources ------------------------------------------------------------------------------
def test_signed_digests_keep_out_every_foreign_byte(tmp_path: Path) -> None:
    """With the manifest's digests, a chunk of the right size but other bytes is refused."""
    data = os.urandom(10_000)
    chunks = ChunkFile(tmp_path / "u.part", len(data), 3000, chunk_digests(data, 3000))
    assert chunks.write(0, os.urandom(3000)) == Verdict.BAD_DIGEST
    assert chunks.write(0, data[:3000]) == Verdict.STORED
    for i in (1, 2, 3):
        assert chunks.write(i, data[i * 3000 : (i + 1) * 3000]) == Verdict.STORED
    assert chunks.done
    chunks.close()
    assert (tmp_path / "u.part").read_bytes() == data


class _Server:
    """A real HTTP server: ``files`` by path, ``Range: bytes=N-`` honoured; counts requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests = files, 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server({})
    yield s
    s.close()


def test_url_fetch_resumes_and_gives_up_on_foreign_bytes(tmp_path: Path, server: _Server) -> None:
    """A URL fills the chunks it lacks (from the first missing one); a URL that serves other
    bytes, or refuses, fails as a source without writing anything."""
    data = os.urandom(50_000)
    server.files = {"/good": data, "/evil": os.urandom(50_000)}
    digests = chunk_digests(data, 4096)
    chunks = ChunkFile(tmp_path / "a.part", len(data), 4096, digests)
    chunks.write(0, data[:4096])
    fetch = UrlFetch(f"{server.url}/good", chunks, timeout_s=10).start()
    assert wait_for(lambda: chunks.done, 10) and fetch.failed is None
    chunks.close()
    assert (tmp_path / "a.part").read_bytes() == data
    for path, reason in (("/evil", "not the signed bundle"), ("/missing", "HTTP 404")):
        other = ChunkFile(tmp_path / f"{path[1:]}.part", len(data), 4096, digests)
        fetch = UrlFetch(f"{server.url}{path}", other, timeout_s=10).start()
        assert wait_for(lambda f=fetch: f.failed is not None, 10)
        assert reason in (fetch.failed or "") and other.progress == 0
        other.close()


def _job(data: bytes, chunk: int, transfer: Transfer, deadline_s: float = 60) -> Job:
    return Job.begin("u1", _signed_manifest(data, chunk), transfer, download_timeout_s=deadline_s)


def _download(tmp_path: Path, job: Job, sent: list[tuple[str, bytes]], **policy: Any) -> Download:
    return Download(
        job,
        tmp_path / "u1.part",
        _policy(**policy),
        device="d",
        topic="p/updates/u1",
        send=lambda topic, body: sent.append((topic, body)) is None,
        subscribe=lambda _t, _on: None,
        progress=lambda _f: None,
        checkpoint=lambda _p: None,
        stop=threading.Event(),
    )


def test_a_url_that_stalls_gives_way_to_chunks_and_to_other_urls(tmp_path: Path, server: _Server) -> None:
    """A URL that never answers is given up after ``source_stall_s``: chunks are asked for on the
    device's own topic. For format 2 only the signed URL is ever fetched (a hint's is ignored);
    for format 1 a later copy's URL is tried next. No source ever blocks the job."""
    data = os.urandom(30_000)
    server.files = {"/b": data}
    dead = socket.socket()  # accepts connections into its backlog, never answers
    dead.bind(("127.0.0.1", 0))
    dead.listen(8)
    nowhere = f"http://127.0.0.1:{dead.getsockname()[1]}/b"
    try:
        sent: list[tuple[str, bytes]] = []
        m = _signed_manifest(data, 4096, url=nowhere)
        job = Job.begin("u1", m, Transfer("url", url=nowhere), download_timeout_s=60)
        download = _download(tmp_path, job, sent, source_stall_s=0.5, chunk_retry_s=0.2)
        assert not download.step() and sent == []  # the signed URL first
        download.offer(Transfer("url", url=f"{server.url}/b"))  # a hint: not fetched
        assert wait_for(lambda: not download.step() and bool(sent), 10)
        assert sent[0][0] == "p/updates/u1/request"
        assert json.loads(sent[0][1])["chunks"][:3] == [0, 1, 2]
        time.sleep(1)
        assert server.requests == 0
        download.close()

        legacy = Manifest(
            name="m",
            version="2",
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            created=0.0,
            format=1,
        )
        job = Job.begin("u2", legacy, Transfer("url", url=nowhere), download_timeout_s=60)
        download = _download(tmp_path, job, [], source_stall_s=0.5, chunk_retry_s=0.2)
        download.step()
        download.offer(Transfer("url", url=f"{server.url}/b"))
        assert wait_for(download.step, 20)
        assert (tmp_path / "u1.part").read_bytes() == data and server.requests > 0
    finally:
        dead.close()


def test_a_copy_offering_chunks_starts_them_at_once(tmp_path: Path) -> None:
    """While the signed URL is being tried, a copy that offers chunks gets them asked for at once;
    chunks that are not the signed bytes are refused, the right ones complete the download."""
    data = os.urandom(9000)
    sent: list[tuple[str, bytes]] = []
    never = "http://127.0.0.1:9/never"
    job = Job.begin(
        "u1", _signed_manifest(data, 4096, url=never), Transfer("url", url=never), download_timeout_s=60
    )
    download = _download(tmp_path, job, sent, source_stall_s=600)
    download.step()
    assert sent == []
    download.offer(Transfer("chunks", chunk_size=999))  # its chunk size is not the signed one: ignored
    download.step()
    assert [t for t, _ in sent] == ["p/updates/u1/request"]
    assert download.on_chunk("p/updates/u1", 0, os.urandom(4096)) == Verdict.BAD_DIGEST
    assert download.on_chunk("p/updates/u1", 7, b"x") == Verdict.OUT_OF_RANGE
    for i in range(3):
        assert download.on_chunk("p/updates/u1", i, data[i * 4096 : (i + 1) * 4096]) == Verdict.STORED
    assert download.step()


def test_a_download_whose_chunks_never_match_ends_with_why(tmp_path: Path) -> None:
    """When the only bytes on offer are not the signed ones (a corrupt bundle), the download ends
    at its deadline and says so."""
    data = os.urandom(5000)
    sent: list[tuple[str, bytes]] = []
    download = _download(tmp_path, _job(data, 4096, Transfer("chunks"), deadline_s=0.3), sent)
    download.step()
    assert download.on_chunk("p/updates/u1", 0, os.urandom(4096)) == Verdict.BAD_DIGEST
    time.sleep(0.4)
    with pytest.raises(UpdateError, match=r"timed out .*1 chunk\(s\) were not the signed bytes"):
        download.step()
    download.close()


def test_inbox_bounds_each_lane_and_alternates() -> None:
    """A flood of one kind fills only its own lane (by count and by bytes); the consumer takes the
    lanes in turn."""
    inbox = Inbox(manifests=3, manifest_bytes=100, chunks=2, chunk_bytes=10)
    assert all(inbox.put(MANIFEST, None, b"m") for _ in range(3))
    assert not inbox.put(MANIFEST, None, b"m")
    assert inbox.put(CHUNK, 1, b"x" * 10) and not inbox.put(CHUNK, 2, b"y")  # bytes
    kinds = [item[0] for item in iter(lambda: inbox.get(0), None)]
    assert kinds == [MANIFEST, CHUNK, MANIFEST, MANIFEST]


# -- the manager -------------------------------------------------------------------------------------------
class Device:
    """An UpdateManager on a fake slot and link, its thread running; statuses recorded."""

    def __init__(self, tmp: Path, keys: list[Path], **policy: Any) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.link = FakeLink()
        self.manager = UpdateManager(
            device="d",
            groups=[],
            keys=[load_public_key(k) for k in keys],
            store=ModelStore(tmp / "store"),
            slots={"m": [FakeSlot("a", "1")]},  # type: ignore[list-item]
            policy=_policy(**{"max_bundle_bytes": 10**6, **policy}),
            publish_status=self.statuses.append,
            link=self.link,
            topic_prefix="p",
        )
        self.manager.start()

    def send(self, payload: bytes | str) -> None:
        self.manager.submit(payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload)

    def settled(self) -> bool:
        return self.manager.inbox.empty()

    def requests(self) -> list[str]:
        return [t for t, _ in self.link.sent if t.endswith("/request")]


@pytest.fixture
def device(tmp_path: Path, key_files: tuple[Path, Path]) -> Iterator[Device]:
    d = Device(tmp_path, [key_files[0].parent / "signing.pub"])
    yield d
    d.manager.stop()


def _envelope(key_file: Path, data: bytes, version: str = "2", **transfer: Any) -> dict[str, Any]:
    envelope = sign(_signed_manifest(data, 4096, version=version), load_private_key(key_file))
    return {**envelope, "transfer": transfer or {"type": "chunks", "chunk_size": 4096}}


def test_unauthenticated_messages_change_nothing_publish_nothing_and_log_little(
    device: Device, key_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """While an update downloads: its own manifest with a random signature, a foreign key's copy,
    deep nesting, junk and oversized messages, and bad chunks are counted and ignored. No status
    names the update for them, the job goes on, and 500 of them log a handful of lines."""
    data = os.urandom(20_000)
    real = _envelope(key_files[0], data)
    uid = update_id(real["manifest"])
    device.send(json.dumps(real))
    assert wait_for(lambda: device.manager.job is not None and device.requests(), 10)
    before = list(device.statuses)
    caplog.set_level(logging.INFO)
    caplog.clear()
    forged = [
        json.dumps({**real, "signature": base64.b64encode(os.urandom(64)).decode()}),
        json.dumps(_envelope(key_files[1], data)),
        "[" * 30_000 + "]" * 30_000,
        "not json",
        "x" * 70_000,
    ]
    for i in range(100):
        for payload in forged:
            device.send(payload)
        device.manager.chunk_message(f"p/updates/{uid}/chunk/999999", b"x")
        device.manager.chunk_message(f"p/updates/{uid}/chunk/0", os.urandom(4096 if i % 2 else 5))
    assert wait_for(device.settled, 30)
    time.sleep(0.3)
    counters = device.manager.counters()
    assert counters["unauthenticated"] == counters["refused"] == 500, counters
    assert counters["ignored_chunks"] == 200, counters
    assert device.statuses == before and device.manager.job is not None
    assert device.manager.job.update == uid
    assert len(caplog.records) <= 20, [r.getMessage() for r in caplog.records]
    for i in range(5):  # the real bytes still complete it
        device.manager.chunk_message(f"p/updates/{uid}/chunk/{i}", data[i * 4096 : (i + 1) * 4096])
    assert wait_for(lambda: any(s["state"] == "verifying" for s in device.statuses), 10)


def test_authenticated_refusals_are_published_at_a_bounded_rate(
    device: Device, key_files: tuple[Path, Path]
) -> None:
    """A signed update refused (here: not newer) is answered with ``rejected`` naming it; the same
    refusal repeated 300 times is published once; the rest are counted as held back."""
    old = json.dumps(_envelope(key_files[0], os.urandom(100), version="1"))
    for _ in range(300):
        device.send(old)
    assert wait_for(lambda: device.manager.counters()["refused"] == 300, 20)
    assert [(s["state"], s["reason"][:9]) for s in device.statuses] == [("rejected", "downgrade")]
    assert device.manager.counters()["held_statuses"] == 299


def test_a_replayed_copy_with_an_unsigned_transfer_cannot_steer_the_job(
    device: Device, key_files: tuple[Path, Path]
) -> None:
    """The signed envelope arrives first with a transfer pointing nowhere and then with a
    malformed one: the job starts (the signature is the operator's), the bad hint neither refuses
    nor blocks it, and the operator's copy offering chunks has them asked for at once."""
    data = os.urandom(9000)
    real = _envelope(key_files[0], data)
    uid = update_id(real["manifest"])
    device.send(json.dumps({**real, "transfer": {"type": "url", "url": "http://127.0.0.1:9/nowhere"}}))
    device.send(json.dumps({**real, "transfer": "garbage"}))
    assert wait_for(lambda: device.manager.job is not None and device.settled(), 10)
    assert {s["state"] for s in device.statuses} == {"downloading"}
    device.send(json.dumps(real))
    assert wait_for(lambda: f"p/updates/{uid}/request" in device.requests(), 10)
    for i in range(3):
        device.manager.chunk_message(f"p/updates/{uid}/chunk/{i}", data[i * 4096 : (i + 1) * 4096])
    assert wait_for(lambda: any(s["state"] == "verifying" for s in device.statuses), 10)
    assert not any(s["state"] == "rejected" and s["update"] == uid for s in device.statuses[:-1])


def test_format_1_chunk_size_hints_are_bounded_and_replaced_only_before_any_chunk(tmp_path: Path) -> None:
    """Format 1 signs no chunk size: a hint that would make millions of chunks is not used, and a
    later copy's chunk size replaces the first one's only while nothing has arrived."""
    data = os.urandom(200_000)
    legacy = Manifest(
        name="m", version="2", sha256=hashlib.sha256(data).hexdigest(), size=len(data), created=0.0, format=1
    )
    tiny = Job.begin("u1", legacy, Transfer("chunks", chunk_size=1), download_timeout_s=60)
    assert tiny.chunk_size == 64 * 1024
    sent: list[tuple[str, bytes]] = []
    job = Job.begin("u1", legacy, Transfer("url", url="http://127.0.0.1:9/x"), download_timeout_s=60)
    download = _download(tmp_path, job, sent, source_stall_s=600)
    download.step()
    assert not download.offer(Transfer("chunks", chunk_size=2))  # too many chunks: not used
    assert download.offer(Transfer("chunks", chunk_size=50_000)) and job.chunk_size == 50_000
    download.step()
    assert download.on_chunk("p/updates/u1", 0, data[:50_000]) == Verdict.STORED
    assert not download.offer(Transfer("chunks", chunk_size=40_000)) and job.chunk_size == 50_000
    download.close()
