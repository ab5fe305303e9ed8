"""The chunk server's parts: requests are bounded whatever they hold, answers are rate-limited and
read only the offered bundle, and a folder's bundles are offered once their bytes match."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from edge_runtime.errors import UpdateError
from edge_runtime.fleet.chunks import ChunkSender, Offer, request_indices
from edge_runtime.fleet.serve import Catalog
from edge_runtime.update.manifest import Manifest, chunk_digests, generate_keys, load_private_key, sign


def _bundle(folder: Path, name: str, data: bytes, chunk: int = 1000, key: Path | None = None) -> Path:
    """A bundle file and its signed FILE.manifest.json, as `bundle sign` leaves them."""
    key = key or generate_keys(folder / f"keys-{name}")[0]
    manifest = Manifest(
        name="m",
        version="2",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        created=time.time(),
        chunk_size=chunk,
        chunk_digests=base64.b64encode(chunk_digests(data, chunk)).decode(),
    )
    path = folder / name
    path.write_bytes(data)
    (folder / f"{name}.manifest.json").write_text(json.dumps(sign(manifest, load_private_key(key))))
    return path


def test_request_indices_are_bounded_and_only_valid_ones_count() -> None:
    """Out of range, negative, booleans, floats, strings and repeats are skipped; at most ``limit``
    are taken; a body that is not a request (or nests deeply, or is huge) is an UpdateError."""
    body = json.dumps({"chunks": [3, 3, -1, 10, True, 1.0, "2", 0, 9, 1, 2]}).encode()
    assert request_indices(body, 10, 3) == [3, 0, 9]
    assert request_indices(body, 10, 100) == [3, 0, 9, 1, 2]
    for bad in (b"[1, 2]", b'{"chunks": 1}', b"not json", b"[" * 5000 + b"]" * 5000, b" " * 70_000):
        with pytest.raises(UpdateError):
            request_indices(bad, 10, 10)


def test_answers_repeat_nothing_within_a_second_and_keep_to_the_rate(tmp_path: Path) -> None:
    """Chunks carry the offered bytes on their own topics; the same chunk asked twice within
    ``repeat_s`` is sent once; the byte rate holds the rest back until time passes."""
    data = os.urandom(10_500)
    offer = Offer.load(_bundle(tmp_path, "b.tar", data))
    now = [100.0]
    sent: list[tuple[str, bytes]] = []
    sender = ChunkSender(
        lambda t, d: sent.append((t, d)) is None, prefix="p", max_bytes_per_s=3000, clock=lambda: now[0]
    )
    assert sender.answer(offer, json.dumps({"chunks": [0, 10, 1, 2, 3]}).encode()) == 3
    assert [t for t, _ in sent] == [f"p/updates/{offer.update}/chunk/{i}" for i in (0, 10, 1)]
    assert sent[1][1] == data[10_000:] and sent[2][1] == data[1000:2000]
    assert sender.held == 2
    now[0] += 0.25  # 500 left + 750 bytes of budget: one chunk; 0 is not sent again so soon
    assert sender.answer(offer, json.dumps({"chunks": [0, 2, 3]}).encode()) == 1
    assert sent[-1][0].endswith("/chunk/2")
    now[0] += 2.0
    assert sender.answer(offer, json.dumps({"chunks": [0]}).encode()) == 1


def test_a_folder_offers_bundles_whose_bytes_match_and_follows_changes(tmp_path: Path) -> None:
    """A bundle appears when copied in, is refused while its bytes differ from the signed ones,
    and is withdrawn when removed; other files are never offered."""
    catalog = Catalog(tmp_path)
    assert catalog.rescan() == [] and catalog.offers == {}
    key = generate_keys(tmp_path / "keys")[0]
    good = _bundle(tmp_path, "a.tar", os.urandom(3000), key=key)
    bad = _bundle(tmp_path, "b.tar", os.urandom(3000), key=key)
    bad.write_bytes(b"partly copied")
    (tmp_path / "notes.txt").write_text("not a bundle")
    notes = catalog.rescan()
    assert any(n.startswith("serving a.tar") for n in notes) and any(
        "b.tar does not match" in n for n in notes
    )
    assert [o.path for o in catalog.offers.values()] == [good]
    assert catalog.rescan() == []  # nothing changed: nothing re-read
    good.unlink()
    (tmp_path / "a.tar.manifest.json").unlink()
    assert any(n.startswith("withdrawn: a.tar") for n in catalog.rescan())
    assert catalog.offers == {}


def test_the_server_answers_only_offered_updates_whatever_the_topic_or_body(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests for ids that are not update ids, for updates not in the folder, and bodies that are
    not requests send nothing and log a handful of lines; a real request is answered."""
    from edge_runtime.fleet.serve import ChunkServer
    from edge_runtime.mqttclient import Broker

    data = os.urandom(2500)
    offer = Offer.load(_bundle(tmp_path, "b.tar", data))
    server = ChunkServer(tmp_path, Broker(host="127.0.0.1", port=1), prefix="p", rescan_s=1000)
    sent: list[str] = []
    server.sender = ChunkSender(lambda t, _d: sent.append(t) is None, prefix="p")
    server._scan()
    caplog.set_level("INFO")
    caplog.clear()
    request = json.dumps({"chunks": [0, 1, 2]}).encode()
    for _ in range(200):
        for update in ("..", "../../etc", "0" * 16, "ABCDEF0123456789", "x" * 10_000):
            server._answer(f"p/updates/{update}/request", request)
        server._answer(f"p/updates/{offer.update}/request", b"[" * 3000)
    assert sent == []
    assert len(caplog.records) <= 12, [r.getMessage() for r in caplog.records]
    server._answer(f"p/updates/{offer.update}/request", request)
    assert sent == [f"p/updates/{offer.update}/chunk/{i}" for i in range(3)]
