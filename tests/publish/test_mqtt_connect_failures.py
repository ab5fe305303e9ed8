"""Every failed connection attempt of the broker link has a reason: in the log, rate-limited, and
in health (``mqtt.last_error``, ``mqtt.failed_connects``), including attempts that die after the
TCP connect and before any CONNACK."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runtime.config.sections import MqttConfig, TlsConfig
from edge_runtime.publish.mqtt import MqttLink
from edge_runtime.publish.topics import Topics
from tests.broker import Broker, free_port, wait_for
from tests.certs import make_ca, make_server_cert
from tests.timeouts import scaled


def link_to(port: int, **settings: object) -> MqttLink:
    """A link that retries every 0.2 s."""
    cfg = MqttConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.2, "reconnect_max_s": 0.2, **settings}
    )
    return MqttLink(cfg, Topics("t", "dev"), client_id="dev", groups=[], status=dict)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge_runtime.publish.mqtt"]


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server that accepts connections and never says anything."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()
    for conn in accepted:
        conn.close()


def test_a_server_that_accepts_and_says_nothing_fails_each_attempt_with_a_reason(
    silent_server: tuple[int, list[socket.socket]], caplog: pytest.LogCaptureFixture
) -> None:
    """No CONNACK within mqtt.connect_timeout_s: the attempt is given up, counted, and its reason
    logged once however often it repeats."""
    port, accepted = silent_server
    caplog.set_level(logging.WARNING, "edge_runtime.publish.mqtt")
    link = link_to(port, connect_timeout_s=0.5, keepalive=60)
    link.start()
    try:
        assert wait_for(lambda: link.failed_connects >= 3, 20), link.last_error
    finally:
        link.stop()
    reason = f"no CONNACK from 127.0.0.1:{port} within 0.5 s (mqtt.connect_timeout_s)"
    assert link.last_error == reason and not link.connected.is_set()
    assert len(accepted) >= 3  # each attempt was a real TCP connection
    assert warnings_of(caplog) == [f"mqtt: {reason}"]


def test_a_silent_server_is_given_up_at_the_keepalive_when_that_comes_first(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    """paho itself closes a connection silent for the keepalive, before CONNACK too: the reason
    names that limit."""
    port, _ = silent_server
    link = link_to(port, connect_timeout_s=60, keepalive=5)
    link.start()
    try:
        assert wait_for(lambda: link.failed_connects >= 1, 30), link.last_error
    finally:
        link.stop()
    assert link.last_error == f"no CONNACK from 127.0.0.1:{port} within 5 s (mqtt.keepalive)"


def test_an_mtls_broker_closing_a_connection_without_a_client_certificate_is_a_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mosquitto with require_certificate ends the TLS connection before CONNACK: the reason names
    what the broker said and the missing mqtt.tls.cert_file; with a certificate the link connects."""
    ca, ca_key, ca_cert = make_ca(tmp_path, "test-ca")
    cert, key = make_server_cert(tmp_path, ca_key, ca_cert)
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    client_cert, client_key = make_server_cert(client_dir, ca_key, ca_cert)
    port = free_port()
    extra = (
        f"listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n"
    )
    broker = Broker(tmp_path, extra=extra).start()
    caplog.set_level(logging.WARNING, "edge_runtime.publish.mqtt")
    try:
        link = link_to(port, host="localhost", tls=TlsConfig(ca_file=ca))
        link.start()
        try:
            assert wait_for(lambda: link.failed_connects >= 2, 20), link.last_error
        finally:
            link.stop()
        assert not link.connected.is_set() and link.last_error is not None
        assert link.last_error.startswith(f"connection to localhost:{port} closed before CONNACK: ")
        assert "certificate required" in link.last_error  # the TLS alert the broker sent
        assert "mqtt.tls.cert_file is not set" in link.last_error
        assert warnings_of(caplog) == [f"mqtt: {link.last_error}"]

        tls = TlsConfig(ca_file=ca, cert_file=client_cert, key_file=client_key)
        good = link_to(port, host="localhost", tls=tls)
        good.start()
        try:
            assert good.connected.wait(scaled(20)), good.last_error
        finally:
            good.stop()
        assert good.failed_connects == 0 and good.last_error is None
    finally:
        broker.kill()


def test_a_refused_connection_is_a_failed_attempt_with_the_brokers_reason(tmp_path: Path) -> None:
    """Wrong credentials: the CONNACK's reason code is the reason, counted like any failure."""
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "dev", "right"], check=True)
    broker = Broker(tmp_path, extra=f"allow_anonymous false\npassword_file {passwd}").start()
    try:
        link = link_to(broker.port, username="dev", password="wrong")
        link.start()
        try:
            assert wait_for(lambda: link.failed_connects >= 2, 20), link.last_error
        finally:
            link.stop()
        refused = f"broker 127.0.0.1:{broker.port} refused the connection: "
        # mosquitto 2.0 answers "Not authorized"; other brokers "Bad user name or password"
        assert link.last_error in (f"{refused}Not authorized", f"{refused}Bad user name or password")
        assert not link.connected.is_set() and link.connects == 0
    finally:
        broker.kill()
