"""``validate`` checks every file a config names as the service will open it (missing, a directory,
not readable, content OpenSSL or the update verifier refuses), with FILE:LINE and the key, and
``run`` refuses the same files with the same lines; device nodes and stream URLs are not files to
check. Credentials looked up through the systemd unit: tests/test_systemd.py.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from edge_runtime.config.loader import collect_problems

from ..certs import make_ca, make_server_cert
from ..conftest import ROOT, run_cli

MODEL = ROOT / "models" / "ssdlite_mobilenet_v2_person"
NOBODY = 65534


def config(tmp_path: Path, mqtt: str = "", source: str = "{type: synthetic}", updates: str = "") -> Path:
    """A config whose mqtt/updates sections and source are given as YAML text (flow style)."""
    text = f"models:\n  person:\n    path: {MODEL}\n"
    text += f"pipelines:\n  - {{name: front, model: person, source: {source}}}\n"
    text += f"mqtt: {mqtt}\n" if mqtt else ""
    text += f"updates: {updates}\n" if updates else ""
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Path]:
    """A real CA and a certificate/key pair signed by it."""
    folder = tmp_path / "tls"
    folder.mkdir()
    ca, ca_key, ca_cert = make_ca(folder, "ca")
    cert, key = make_server_cert(folder, ca_key, ca_cert)
    return {"ca": ca, "cert": cert, "key": key}


def tls_section(ca: Path, cert: Path, key: Path) -> str:
    return f"{{tls: {{ca_file: '{ca}', cert_file: '{cert}', key_file: '{key}'}}}}"


def test_tls_files_that_are_there_pass(tmp_path: Path, tls: dict[str, Path]) -> None:
    path = config(tmp_path, tls_section(tls["ca"], tls["cert"], tls["key"]))
    assert run_cli("validate", path).code == 0


@pytest.mark.parametrize("which", ["ca", "cert", "key"])
@pytest.mark.parametrize("kind", ["missing", "a directory", "a FIFO"])
def test_a_tls_file_that_cannot_be_used_fails_validate_and_run_alike(
    tmp_path: Path, tls: dict[str, Path], which: str, kind: str
) -> None:
    """Before: validate passed a missing key_file and run exited 2 only when it connected."""
    files = dict(tls)
    files[which] = tmp_path / f"bad-{which}"
    if kind == "a directory":
        files[which].mkdir()
    elif kind == "a FIFO":
        os.mkfifo(files[which])
    path = config(tmp_path, tls_section(files["ca"], files["cert"], files["key"]))
    key = {"ca": "ca_file", "cert": "cert_file", "key": "key_file"}[which]
    reason = {
        "missing": "does not exist",
        "a directory": "is a directory, not a file",
        "a FIFO": "is a FIFO, not a regular file",
    }[kind]
    expected = f"{path}:6: mqtt.tls.{key}: {files[which]} {reason}"
    result = run_cli("validate", path)
    assert (result.code, result.err.splitlines()) == (2, [expected])
    run = run_cli("run", path)
    assert run.code == 2 and expected in run.err


def test_tls_content_openssl_refuses(tmp_path: Path, tls: dict[str, Path]) -> None:
    """A CA that is not a certificate; a key of another certificate; an encrypted key."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    path = config(tmp_path, tls_section(garbage, tls["cert"], tls["key"]))
    _, problems = collect_problems(path)
    assert len(problems) == 1 and f"{path}:6: mqtt.tls.ca_file: not a usable CA certificate" in problems[0]

    other = tmp_path / "other"
    other.mkdir()
    _, other_key, other_cert = make_ca(other, "other")
    _, wrong_key = make_server_cert(other, other_key, other_cert)
    path = config(tmp_path, tls_section(tls["ca"], tls["cert"], wrong_key))
    _, problems = collect_problems(path)
    assert len(problems) == 1
    assert f"{path}:6: mqtt.tls.key_file: OpenSSL refuses the certificate and key (" in problems[0]

    locked = tmp_path / "locked.key"
    key = serialization.load_pem_private_key(tls["key"].read_bytes(), password=None)
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    _, problems = collect_problems(config(tmp_path, tls_section(tls["ca"], tls["cert"], locked)))
    assert len(problems) == 1 and "the key is encrypted and the daemon has no passphrase" in problems[0]


def _pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_update_public_keys_are_checked_like_the_update_verifier_reads_them(tmp_path: Path) -> None:
    good, rsa_key, garbage = tmp_path / "good.pub", tmp_path / "rsa.pub", tmp_path / "garbage.pub"
    good.write_bytes(_pem(ed25519.Ed25519PrivateKey.generate()))
    rsa_key.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    garbage.write_text("hello\n")
    folder = tmp_path / "keys"
    folder.mkdir()
    keys = [good, rsa_key, garbage, tmp_path / "missing.pub", folder]
    path = config(tmp_path, updates=f"{{public_keys: [{', '.join(map(str, keys))}]}}")
    result = run_cli("validate", path)
    assert result.code == 2
    assert result.err.splitlines() == [
        f"{path}:6: updates.public_keys.1: {rsa_key}: not an Ed25519 public key (RSAPublicKey)",
        f"{path}:6: updates.public_keys.2: {garbage}: not a PEM public key"
        + result.err.splitlines()[1].split("not a PEM public key", 1)[1],
        f"{path}:6: updates.public_keys.3: {tmp_path / 'missing.pub'} does not exist",
        f"{path}:6: updates.public_keys.4: {folder} is a directory, not a file",
    ]


def test_password_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    """Before: "password file ... not found" for a directory that is there."""
    (tmp_path / "secret").mkdir()
    path = config(tmp_path, "{username: edge, password_file: secret}")
    _, problems = collect_problems(path)
    assert problems == [
        f"{path}:6: mqtt.password_file: password file secret not found "
        f"(looked in {tmp_path / 'secret'} is a directory, not a file)"
    ]


def test_password_file_read_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    cfg, problems = collect_problems(config(tmp_path, "{username: edge, password_file: secret}"))
    assert problems == [] and cfg is not None and cfg.mqtt.password == "s3cret"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{type: video, path: nothing.mp4}", "nothing.mp4 does not exist"),
        ("{type: video, path: folder}", "folder is a directory, not a file"),
        ("{type: images, path: no-such-folder}", "no-such-folder does not exist"),
        ("{type: images, path: 'no-such-folder/*.jpg'}", "no-such-folder does not exist"),
        ("{type: images, path: 'file.txt/*.jpg'}", "file.txt is not a folder"),
    ],
)
def test_file_sources_are_checked(tmp_path: Path, source: str, fragment: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    path = config(tmp_path, source=source)
    _, problems = collect_problems(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:5: pipelines.0.source.path: ")
    assert fragment in problems[0]


@pytest.mark.parametrize(
    "source",
    [
        "{type: images, path: 'folder/*.jpg'}",
        "{type: images, path: folder}",
        "{type: camera, device: /dev/video42}",
        "{type: rtsp, url: 'rtsp://192.0.2.1/stream'}",
        "{type: sensor, driver: stream, path: /run/not-yet.fifo, channels: [a], rate_hz: 10, window: 4}",
        "{type: sensor, driver: serial, path: /dev/ttyUSB9, channels: [a], rate_hz: 10, window: 4}",
    ],
)
def test_device_nodes_urls_and_sensor_paths_are_not_checked(tmp_path: Path, source: str) -> None:
    """A camera or serial adapter plugged in later, a FIFO its producer makes: the daemon waits."""
    (tmp_path / "folder").mkdir()
    assert collect_problems(config(tmp_path, source=source))[1] == []


@contextmanager
def unprivileged() -> Iterator[None]:
    """Check as a user that may not read root's 0600 files (as root: effective user nobody).

    The command line's modules are imported first: nobody may not be able to read the venv.
    """
    if os.geteuid() != 0:
        yield
        return
    importlib.import_module("edge_runtime.commands")
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


def test_unreadable_files_are_named_as_such(tls: dict[str, Path]) -> None:
    """A model, a TLS key and a password file that the user may not read (0600, someone else's)."""
    with tempfile.TemporaryDirectory() as name:
        shared = Path(name)
        shared.chmod(0o755)
        for key in ("ca", "cert", "key"):
            (shared / key).write_bytes(tls[key].read_bytes())
        (shared / "model.onnx").write_bytes(b"x")
        (shared / "secret").write_text("pw")
        for private in ("key", "model.onnx", "secret"):
            (shared / private).chmod(0o600 if os.geteuid() == 0 else 0)
        mqtt = (
            "{username: edge, password_file: secret, "
            + tls_section(*(shared / k for k in ("ca", "cert", "key")))[1:]
        )
        path = config(shared, mqtt)
        path.write_text(path.read_text().replace(str(MODEL), str(shared / "model.onnx")))
        path.chmod(0o644)
        with unprivileged():
            _, problems = collect_problems(path)
    assert problems == [
        f"{path}:3: models.person.path: {shared / 'model.onnx'} is not readable (permission denied)",
        f"{path}:6: mqtt.tls.key_file: {shared / 'key'} is not readable (permission denied)",
        f"{path}:6: mqtt.password_file: password file {shared / 'secret'} is not readable"
        " (permission denied)",
    ]
