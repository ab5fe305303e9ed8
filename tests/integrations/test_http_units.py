"""The status page server and the integration config sections, in-process (unit seams)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_runtime.config.integrations import HttpConfig, MetricsConfig, SnapshotsConfig, parse_listen
from edge_runtime.integrations.http import Auth, Routes, StatusServer
from edge_runtime.integrations.snapshots import SnapshotHolder

from ..broker import free_port, wait_for
from .peers import get


class _Status:
    """A StatusReader stand-in: the server's behaviour is under test here, not the data."""

    def __init__(self) -> None:
        self.problems_now: list[str] = []

    def status(self) -> dict[str, Any]:
        return {"pipelines": {}, "problems": self.problems_now}

    def problems(self) -> list[str]:
        return self.problems_now


def _serve(auth: Auth, status: _Status | None = None) -> tuple[StatusServer, str]:
    routes = Routes(status or _Status(), {"front": SnapshotHolder("front")}, None, auth, 2.0)  # type: ignore[arg-type]
    server = StatusServer("127.0.0.1", free_port(), routes, max_threads=2)
    return server, f"http://127.0.0.1:{server.port}"


def test_bearer_token_is_required_and_compared_exactly() -> None:
    server, url = _serve(Auth(token=b"t0ken"))
    try:
        assert get(url + "/api/status")[0] == 401
        assert get(url + "/api/status", {"Authorization": "Bearer t0ke"})[0] == 401
        assert (
            get(url + "/api/status", {"Authorization": "Basic " + base64.b64encode(b"a:t0ken").decode()})[0]
            == 401
        )
        code, body, headers = get(url + "/api/status", {"Authorization": "Bearer t0ken"})
        assert code == 200 and json.loads(body)["pipelines"] == {}
        assert headers["Cache-Control"] == "no-store"
    finally:
        server.close()


def test_healthz_metrics_snapshots_and_methods() -> None:
    status = _Status()
    server, url = _serve(Auth(), status)
    try:
        assert get(url + "/healthz")[0] == 200
        status.problems_now = ["pipeline front: no frame for 31s (source reconnecting)"]
        code, body, _ = get(url + "/healthz")
        assert code == 503 and json.loads(body)["problems"] == status.problems_now
        assert get(url + "/metrics")[0] == 404  # metrics not enabled
        assert get(url + "/snapshot/front.jpg")[0] == 404  # no frame yet
        assert get(url + "/snapshot/../../etc/passwd.jpg")[0] == 404
        assert b"<title>edge-runtime</title>" in get(url + "/")[1]
    finally:
        server.close()
    assert get(url + "/healthz")[0] == 0  # closed: the port is free again
    again = StatusServer("127.0.0.1", server.port, server._server.routes, 1)
    again.close()


def test_listen_addresses_default_to_loopback() -> None:
    assert parse_listen(":9100") == ("127.0.0.1", 9100)
    assert parse_listen("9100") == ("127.0.0.1", 9100)
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("host:", "host:70000", "a b:1", "http://x:1"):
        with pytest.raises(ValueError):
            parse_listen(bad)


@pytest.mark.parametrize(
    ("section", "data", "message"),
    [
        (HttpConfig, {"listen": "nowhere"}, "is not HOST:PORT"),
        (MetricsConfig, {"textfile": "/var/lib/x.txt"}, "ending in .prom"),
        (SnapshotsConfig, {}, "give labels"),
        (SnapshotsConfig, {"every_s": 10, "quality": 101}, "less than or equal to 100"),
        (HttpConfig, {"listen": ":80", "port": 1}, "Extra inputs are not permitted"),
    ],
)
def test_config_sections_refuse_bad_values(section: Any, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        section.model_validate(data)


def test_a_textfile_path_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    from edge_runtime.config.loader import collect_problems

    from ..daemon import make_config

    config = make_config(tmp_path, 1883, tmp_path / "v.mp4", metrics={"textfile": "edge.prom"})
    (tmp_path / "v.mp4").write_bytes(b"")
    cfg, problems = collect_problems(config)
    assert cfg is not None, problems
    assert cfg.metrics.textfile == tmp_path / "edge.prom"


def test_requests_beyond_max_threads_are_closed_and_a_slot_frees_again() -> None:
    """A client that connects and sends nothing holds one of the threads; with max_threads 1 the
    next request is closed unanswered, and answered once the slot is free."""
    import socket

    routes = Routes(_Status(), {}, None, Auth(), 2.0)  # type: ignore[arg-type]
    server = StatusServer("127.0.0.1", free_port(), routes, max_threads=1)
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        assert get(url)[0] == 200
        silent = [socket.create_connection(("127.0.0.1", server.port))]

        def refused() -> bool:
            if get(url, timeout=3)[0] == 0:
                return True
            # the silent client came while the last request still held the slot: it was closed
            silent[0].close()
            silent[0] = socket.create_connection(("127.0.0.1", server.port))
            return False

        try:
            assert wait_for(refused, 20)
        finally:
            silent[0].close()
        assert wait_for(lambda: get(url)[0] == 200, 20)
    finally:
        server.close()


def test_home_assistant_labels_must_name_a_pipeline(tmp_path: Path) -> None:
    from edge_runtime.config.loader import collect_problems

    from ..daemon import make_config

    (tmp_path / "v.mp4").write_bytes(b"")
    config = make_config(tmp_path, 1883, tmp_path / "v.mp4", home_assistant={"labels": {"frnt": ["person"]}})
    cfg, problems = collect_problems(config)
    assert cfg is None and len(problems) == 1
    assert (
        problems[0].startswith(f"{config}:")
        and "home_assistant.labels.frnt: no pipeline named 'frnt'" in problems[0]
    )
