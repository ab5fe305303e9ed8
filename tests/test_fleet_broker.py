"""The shipped fleet broker setup (configs/mosquitto/fleet.conf + fleet.acl) on a real mosquitto.

The test runs the shipped files, with only their paths and the listener's port moved into the
test's folder: per-device credentials, TLS, the ACL. A device's credentials cannot read another
device's topics or publish another device's update, status, chunks or commands; the daemon works
unchanged behind it; a signed update pushed by the operator identity goes active, and the
operator's ``fleet cmd`` gets its answer.
"""

from __future__ import annotations

import getpass
import json
import secrets
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import MOSQUITTO, Broker, wait_for
from tests.certs import make_ca, make_server_cert
from tests.daemon import ROOT, DaemonProcess, cli, make_config, make_video
from tests.timeouts import scaled

pytestmark = pytest.mark.slow

FLEET = ROOT / "configs" / "mosquitto"
PERSON = ROOT / "models" / "ssdlite_mobilenet_v2_person"
USERS = ("cam-1", "cam-2", "operator")


class FleetBroker(Broker):
    """mosquitto running the shipped fleet.conf; ``password_files`` holds each user's password."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        ca, ca_key, ca_cert = make_ca(workdir, "fleet-ca")
        self.ca = ca
        self.cert, self.key = make_server_cert(workdir, ca_key, ca_cert)
        self.passwd = workdir / "passwd"
        self.password_files: dict[str, Path] = {}
        for i, user in enumerate(USERS):
            password = secrets.token_hex(8)
            create = ["-c"] if i == 0 else []
            subprocess.run(["mosquitto_passwd", *create, "-b", str(self.passwd), user, password], check=True)
            self.password_files[user] = workdir / f"{user}.secret"
            self.password_files[user].write_text(password)

    def start(self) -> FleetBroker:
        """Start mosquitto on the shipped config, its files and port moved here."""
        moved = {
            "password_file": str(self.passwd),
            "acl_file": str(FLEET / "fleet.acl"),
            "listener": f"{self.port} 127.0.0.1",
            "cafile": str(self.ca),
            "certfile": str(self.cert),
            "keyfile": str(self.key),
        }
        lines = []
        for line in (FLEET / "fleet.conf").read_text().splitlines():
            key = line.split(" ", 1)[0]
            lines.append(f"{key} {moved.pop(key)}" if key in moved else line)
        assert not moved, f"fleet.conf no longer sets {sorted(moved)}"
        # started as root, mosquitto would drop to user `mosquitto`, who cannot read this folder
        lines.append(f"user {getpass.getuser()}")
        self.conf.write_text("\n".join(lines) + "\n")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        if not wait_for(self._listening, 10):
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")
        return self


class Client:
    """A TLS client signed in as ``user`` (None: anonymous), recording what it receives."""

    def __init__(self, broker: FleetBroker, user: str | None, subscribe: tuple[str, ...] = ()) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.granted: list[int] = []
        self.refused: str | None = None
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{user}-test-{secrets.token_hex(3)}", protocol=mqtt.MQTTv5
        )
        self.client.tls_set(ca_certs=str(broker.ca), cert_reqs=ssl.CERT_REQUIRED)
        if user is not None:
            self.client.username_pw_set(user, broker.password_files[user].read_text())
        self.client.on_connect = lambda c, _u, _f, reason, _p: self._connected(c, reason, subscribe)
        self.client.on_subscribe = self._subscribed
        self.client.on_message = self._message
        self.client.connect("localhost", broker.port)
        self.client.loop_start()

    def _connected(self, client: mqtt.Client, reason: Any, topics: tuple[str, ...]) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            self.ready.set()
        elif topics:
            client.subscribe([(t, 1) for t in topics])
        else:
            self.ready.set()

    def _subscribed(self, _c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        self.granted = [r.value for r in reasons]
        self.ready.set()

    def _message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def on(self, prefix: str) -> list[bytes]:
        """Payloads received on topics that start with ``prefix``."""
        with self._lock:
            return [p for t, p in self.messages if t.startswith(prefix)]

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1; True when the broker's PUBACK says it took the message."""
        done = threading.Event()
        result: list[bool] = []

        def on_publish(_c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
            result.append(not reason.is_failure)
            done.set()

        self.client.on_publish = on_publish
        self.client.publish(topic, payload, qos=1)
        assert done.wait(scaled(10)), f"no PUBACK for {topic}"
        return result[0]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FleetBroker]:
    broker = FleetBroker(tmp_path).start()
    yield broker
    broker.kill()


def signed_bundle(tmp_path: Path) -> tuple[Path, Path]:
    """The person detector as version 2, signed: (bundle, public key)."""
    keys, bundle = tmp_path / "keys", tmp_path / "person-2.tar"
    assert cli("keys", "generate", "--out", keys).returncode == 0
    golden = ROOT / "tests" / "data" / "astronaut.jpg"
    made = cli("bundle", "create", PERSON, "--version", "2", "--out", bundle, "--golden", golden)
    assert made.returncode == 0, made.stderr
    sign = cli("bundle", "sign", bundle, "--key", keys / "signing.key")
    assert sign.returncode == 0, sign.stderr
    return bundle, keys / "signing.pub"


def test_devices_are_fenced_in_and_the_operator_updates_through_the_fleet_broker(
    tmp_path: Path, fleet: FleetBroker
) -> None:
    """Anonymous clients are refused; cam-2's credentials publish its own topics but not cam-1's
    update, status, a group update or chunks, and read nothing of cam-1's; the daemon cam-1 works
    behind the ACL and takes a signed update pushed by the operator identity."""
    bundle, public_key = signed_bundle(tmp_path)
    envelope = json.loads(Path(f"{bundle}.manifest.json").read_text())

    anonymous = Client(fleet, None)
    assert anonymous.ready.wait(scaled(10)) and anonymous.refused == "Not authorized"
    anonymous.close()

    operator = Client(fleet, "operator", ("edge/#",))
    cam2 = Client(fleet, "cam-2", ("#", "edge/cam-1/#", "edge/+/predictions/+"))
    assert operator.ready.wait(scaled(10)) and cam2.ready.wait(scaled(10)), (operator.refused, cam2.refused)
    video = make_video(tmp_path / "loop.mp4", 40)
    config = make_config(
        tmp_path,
        fleet.port,
        video,
        device={"id": "cam-1"},
        mqtt={
            "host": "localhost",
            "username": "cam-1",
            "password_file": str(fleet.password_files["cam-1"]),
            "tls": {"ca_file": str(fleet.ca)},
        },
        pipelines=[
            {
                "name": "front",
                "model": "person",
                "source": {"type": "video", "path": str(video), "fps": 10, "loop": True},
            }
        ],
        updates={
            "store": str(tmp_path / "state" / "models"),
            "public_keys": [str(public_key)],
            "health_window_s": 2,
        },
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        predictions = "edge/cam-1/predictions/front"
        assert wait_for(lambda: len(operator.on(predictions)) >= 5, 60), daemon.log()[-3000:]

        # another device's credentials: its own topics work ...
        assert cam2.publish("edge/cam-2/predictions/front", b"{}")
        # ... cam-1's update (even a genuine signed envelope), status and the chunks do not
        assert not cam2.publish("edge/cam-1/model/update", json.dumps(envelope).encode())
        assert not cam2.publish("edge/cam-1/status", b'{"state": "offline"}')
        assert not cam2.publish("edge/groups/lab/model/update", json.dumps(envelope).encode())
        assert not cam2.publish("edge/updates/0123456789abcdef/chunk/0", b"evil")
        # cam-2 is subscribed to everything while cam-1 publishes on
        seen = len(operator.on(predictions))
        assert wait_for(lambda: len(operator.on(predictions)) >= seen + 10, 30)

        push = cli(
            "push",
            bundle,
            "--device",
            "cam-1",
            "--broker",
            f"localhost:{fleet.port}",
            "--username",
            "operator",
            "--password-file",
            fleet.password_files["operator"],
            "--ca-file",
            fleet.ca,
            "--chunk-size",
            "200000",
            "--wait",
            "90",
            timeout=scaled(150),
        )
        assert push.returncode == 0, push.stdout + push.stderr + daemon.log()[-3000:]
        assert "cam-1: active" in push.stdout
        assert wait_for(
            lambda: any(json.loads(p)["model"]["version"] == "2" for p in operator.on(predictions)), 30
        )
        # commands: only the operator may send them, and the device may answer on its reply topic
        assert not cam2.publish("edge/cam-1/cmd/ping", b"")
        ping = cli(
            "fleet",
            "cmd",
            "cam-1",
            "ping",
            "--broker",
            f"localhost:{fleet.port}",
            "--username",
            "operator",
            "--password-file",
            fleet.password_files["operator"],
            "--ca-file",
            fleet.ca,
            "--wait",
            "20",
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert json.loads(ping.stdout)["result"]["device"] == "cam-1"
        assert daemon.terminate() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        operator.close()
        cam2.close()
    # cam-2 got none of cam-1's messages, only what the ACL lets every device read (the chunks)
    assert cam2.on("edge/updates/")
    assert all(topic.startswith("edge/updates/") for topic, _ in cam2.messages)
    # the only update envelope cam-1 ever saw came from the operator; its status was not spoofed
    assert len(operator.on("edge/cam-1/model/update")) == 1
    assert b'{"state": "offline"}' not in operator.on("edge/cam-1/status")
    assert "refused" not in daemon.log(), daemon.log()[-3000:]
