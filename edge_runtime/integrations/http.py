"""The local status page's HTTP server (read-only; docs/integrations.md#the-status-page).

stdlib ``ThreadingHTTPServer`` with bounds: at most ``max_threads`` requests at once (more are
closed unanswered), a 10 s socket timeout, GET and HEAD only, no request body read, nothing
logged per request. Images come from the snapshot holders' caches, rendered at most every
``min_render_s`` however often they are asked for, in these threads, never in a pipeline's.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_runtime.integrations import page
from edge_runtime.integrations.snapshots import SnapshotHolder
from edge_runtime.integrations.status import StatusReader
from edge_runtime.throttle import Throttle

logger = logging.getLogger(__name__)
_FAILURES = Throttle(per_s=60.0, burst=5)  # anyone who reaches the port can cause these


@dataclass(frozen=True, slots=True)
class Auth:
    """What a request must send: ``Authorization: Bearer TOKEN`` and/or basic USER:PASSWORD."""

    token: bytes | None = None
    basic: bytes | None = None  # "user:password"

    def allows(self, header: str | None) -> bool:
        """True when no auth is configured or ``header`` carries a configured credential."""
        if self.token is None and self.basic is None:
            return True
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        given = value.strip().encode("utf-8", "replace")
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(given, self.token)
        if scheme.lower() == "basic" and self.basic is not None:
            try:
                decoded = base64.b64decode(given, validate=True)
            except ValueError:
                return False
            return hmac.compare_digest(decoded, self.basic)
        return False


@dataclass(frozen=True, slots=True)
class Routes:
    """What the server answers with."""

    status: StatusReader
    holders: Mapping[str, SnapshotHolder]
    metrics: Callable[[], bytes] | None
    auth: Auth
    refresh_s: float


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], routes: Routes, max_threads: int) -> None:
        self.routes = routes
        self.slots = threading.BoundedSemaphore(max_threads)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per request, up to the bound; beyond it the connection is closed at once."""
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a client that sends nothing holds a thread at most this long
    server_version = "edge-runtime"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing per request (anyone who can reach the port could fill the journal)."""

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        routes = self.server.routes
        if not routes.auth.allows(self.headers.get("Authorization")):
            self._send(
                401,
                b"authentication required\n",
                "text/plain",
                head,
                {"WWW-Authenticate": 'Basic realm="edge-runtime"'},
            )
            return
        try:
            self._send(*self._answer(routes, self.path.split("?", 1)[0]), head)
        except Exception as exc:  # one bad request must not end the server, nor fill the log
            _FAILURES.log(logger, logging.ERROR, "", "http: %r failed: %r", self.path[:100], exc)
            self._send(500, b"internal error\n", "text/plain", head)

    def _answer(self, routes: Routes, path: str) -> tuple[int, bytes, str]:
        if path in ("/", "/index.html"):
            return 200, page.html(routes.refresh_s), "text/html; charset=utf-8"
        if path == "/app.js":
            return 200, page.SCRIPT, "text/javascript; charset=utf-8"
        if path == "/api/status":
            return 200, json.dumps(routes.status.status()).encode(), "application/json"
        if path == "/healthz":
            problems = routes.status.problems()
            body = json.dumps({"healthy": not problems, "problems": problems}).encode()
            return (503 if problems else 200), body, "application/json"
        if path == "/metrics" and routes.metrics is not None:
            return 200, routes.metrics(), "text/plain; version=0.0.4; charset=utf-8"
        if path.startswith("/snapshot/") and path.endswith(".jpg"):
            holder = routes.holders.get(path[len("/snapshot/") : -len(".jpg")])
            snap = holder.latest() if holder is not None else None
            if snap is not None:
                return 200, snap.jpeg, "image/jpeg"
        return 404, b"not found\n", "text/plain"

    def _send(
        self, code: int, body: bytes, kind: str, head: bool, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
        )
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_POST(self) -> None:
        self._send(405, b"read-only\n", "text/plain", False, {"Allow": "GET, HEAD"})


class StatusServer:
    """The server in its own thread (``http``); :meth:`close` stops it and frees the port."""

    def __init__(self, host: str, port: int, routes: Routes, max_threads: int) -> None:
        self._server = _Server((host, port), routes, max_threads)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.5,), name="http", daemon=True
        )
        self._thread.start()
        logger.info("http: status page on http://%s:%d/", host, self.port)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)
