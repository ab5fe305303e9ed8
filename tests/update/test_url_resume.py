"""Downloads by URL against a web server that misbehaves: real daemon, real broker, real ``push``.

A server that drops the connection part-way: the device asks again with ``Range: bytes=N-``
from the first chunk it lacks and ends active. A server that stalls: the device gives the URL
up after ``source_stall_s`` (asking for chunks over MQTT instead, where nobody serves them
here), and ``updates.download_timeout_s`` ends the update ``rejected`` with the reason.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Broker, Recorder, wait_for
from tests.timeouts import scaled
from tests.update.test_updates import Device, kit, push, signed, update_id

pytestmark = pytest.mark.slow
__all__ = ["kit"]  # the module-scoped fixture, shared with test_updates.py

CHUNK = 100_000
CUT = 0.4  # the share of the bundle a misbehaving server sends before it drops or stalls


class Misbehaving(http.server.BaseHTTPRequestHandler):
    """``/drop/NAME``: a request without Range gets CUT of the file, then the connection closes;
    a Range request gets the rest (206). ``/stall/NAME``: CUT of the file, then nothing until the
    test releases it. Every request's path and Range header is recorded."""

    root: Path
    seen: list[tuple[str, str | None]]
    release: threading.Event

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Range")))
        mode, _, name = self.path.strip("/").partition("/")
        data = (self.root / name).read_bytes()
        cut = int(len(data) * CUT)
        rng = self.headers.get("Range")
        if mode == "drop" and rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: cut if not rng else 0])
        self.wfile.flush()
        if mode == "stall":
            self.release.wait(scaled(120))
        self.close_connection = True  # the rest never comes on this connection

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, type[Misbehaving]]]:
    """The misbehaving server on a free port: (base URL, handler class with ``seen``)."""
    handler = type(
        "Handler", (Misbehaving,), {"root": tmp_path / "www", "seen": [], "release": threading.Event()}
    )
    handler.root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


def test_a_dropped_download_resumes_with_range_and_a_stalled_one_times_out(
    tmp_path: Path, broker: Broker, kit: dict[str, Path], web: tuple[str, type[Misbehaving]]
) -> None:
    """v2 from a server that drops the connection at 40 %: the second request asks for
    ``bytes=N-`` with N the first chunk not complete, and v2 goes active with no result lost.
    v3 from a server that stalls at 40 %: the device turns to chunks (a request on the MQTT
    topic for the chunks it lacks, not those it has), then gives up at ``download_timeout_s``:
    rejected, the reason says so and how much had arrived; v2 keeps serving."""
    base, handler = web
    timeout_s = round(scaled(15))  # longer than the URL's stall limit (10 s): the fallback shows first
    dev = Device(tmp_path / "dev", broker, kit, updates={"download_timeout_s": timeout_s}).start()
    requests = Recorder(broker.port, "edge/updates/+/request")
    try:
        v2 = signed(
            kit,
            handler.root / "v2.tar",
            sign_args=("--url", f"{base}/drop/v2.tar", "--chunk-size", str(CHUNK)),
        )
        done = push(v2, broker, "--device", "cam-test", "--url", f"{base}/drop/v2.tar")
        assert done.returncode == 0, done.stdout + done.stderr + dev.log()[-3000:]
        assert dev.final(update_id(v2))["state"] == "active"
        resumed_at = int(v2.stat().st_size * CUT) // CHUNK * CHUNK
        assert handler.seen[:2] == [("/drop/v2.tar", None), ("/drop/v2.tar", f"bytes={resumed_at}-")], (
            handler.seen
        )
        assert resumed_at > 0
        mark = time.time()
        assert wait_for(lambda: dev.versions_after(mark) == {"2"}, 20)
        dev.assert_no_gap({"1", "2"})

        v3 = signed(
            kit,
            handler.root / "v3.tar",
            version="3",
            sign_args=("--url", f"{base}/stall/v3.tar", "--chunk-size", str(CHUNK)),
        )
        uid = update_id(v3)
        done = push(v3, broker, "--device", "cam-test", "--url", f"{base}/stall/v3.tar")
        final = dev.final(uid)
        assert final["state"] == "rejected", (final, dev.log()[-3000:])
        match = re.fullmatch(
            rf"download timed out after {timeout_s} s \((\d+)% received\)", final["reason"] or ""
        )
        assert match and 0 < int(match[1]) < 100, final
        assert final["active_version"] == "2", final
        assert done.returncode == 1 and "rejected" in done.stdout, (done.stdout, done.stderr)
        assert handler.seen[2] == ("/stall/v3.tar", None), handler.seen
        assert "trying another source" in dev.log(), dev.log()[-3000:]
        asked = [
            p["chunks"]
            for t, p, _ in requests.messages
            if t == f"edge/updates/{uid}/request" and isinstance(p, dict) and p.get("device") == "cam-test"
        ]
        had = int(v3.stat().st_size * CUT) // CHUNK  # the chunks complete when the server stalled
        assert asked and {min(c) for c in asked} == {had}, asked  # it asks for what it lacks, from there on
        staging = tmp_path / "dev" / "state" / "models" / ".staging"
        assert wait_for(lambda: not list(staging.iterdir()), 10), list(
            staging.iterdir()
        )  # the part file is gone
        mark = time.time()
        assert wait_for(lambda: dev.versions_after(mark) == {"2"}, 20)
    finally:
        requests.close()
        dev.stop()
