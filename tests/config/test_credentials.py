"""The unit's credentials as systemd will find them (config/credentials.py), from unit files in a
staged root: LoadCredential= by name (credstore folders) and by path, the encrypted variant,
resets, drop-in order, continuation lines. The whole path through install.sh and validate:
tests/test_systemd.py.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from edge_runtime.config.credentials import UNIT, UnitCredentials, unit_files

from .test_referenced_files import unprivileged


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


UNIT_TEXT = """\
[Unit]
Description=x
LoadCredential=ignored:not-in-service-section

[Service]
ExecStart=/bin/true
# a comment; LoadCredential=commented:out
LoadCredential=mqtt_password:edge-runtime.mqtt_password
LoadCredential=\\
    tls_key:edge-runtime.tls_key
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write(tmp_path, f"etc/systemd/system/{UNIT}", UNIT_TEXT)
    return tmp_path


def test_no_unit_installed(tmp_path: Path) -> None:
    assert UnitCredentials.find(tmp_path) is None


@pytest.mark.parametrize("store", ["etc/credstore", "run/credstore", "usr/lib/credstore"])
def test_a_name_is_looked_up_in_the_credstore_folders(root: Path, store: str) -> None:
    write(root, f"{store}/edge-runtime.mqtt_password", "pw")
    units = UnitCredentials.find(root)
    assert units is not None
    found = units.lookup("mqtt_password")
    assert found.ok and found.path == root / store / "edge-runtime.mqtt_password"
    assert found.note == f"credential mqtt_password from /{store}/edge-runtime.mqtt_password"
    assert not found.encrypted


def test_etc_credstore_comes_first_and_continuation_lines_are_joined(root: Path) -> None:
    write(root, "etc/credstore/edge-runtime.tls_key", "a")
    write(root, "usr/lib/credstore/edge-runtime.tls_key", "b")
    units = UnitCredentials.find(root)
    assert units is not None
    assert units.lookup("tls_key").path == root / "etc/credstore/edge-runtime.tls_key"


def test_a_name_found_nowhere_is_left_out_and_says_where_it_looked(root: Path) -> None:
    units = UnitCredentials.find(root)
    assert units is not None
    found = units.lookup("mqtt_password")
    assert not found.ok
    assert found.note == (
        f"credential mqtt_password (/etc/systemd/system/{UNIT}:8) is edge-runtime.mqtt_password in none "
        "of /etc/credstore, /run/credstore, /usr/local/lib/credstore, /usr/lib/credstore, "
        "so systemd leaves it out"
    )
    assert units.lookup("ignored").note.startswith("the unit passes no credential ignored")
    assert not units.lookup("commented").ok


def test_a_dropin_that_resets_and_gives_paths(root: Path) -> None:
    """optional/credentials-paths.conf: LoadCredential= (empty) first, then absolute paths."""
    write(
        root,
        f"etc/systemd/system/{UNIT}.d/credentials.conf",
        "[Service]\nLoadCredential=\nLoadCredential=mqtt_password:/etc/edge-runtime/secrets/mqtt_password\n",
    )
    write(root, "etc/credstore/edge-runtime.tls_key", "k")  # forgotten by the reset
    units = UnitCredentials.find(root)
    assert units is not None
    assert not units.lookup("tls_key").ok
    missing = units.lookup("mqtt_password")
    assert not missing.ok and "243/CREDENTIALS" in missing.note
    write(root, "etc/edge-runtime/secrets/mqtt_password", "pw")
    assert units.lookup("mqtt_password").path == root / "etc/edge-runtime/secrets/mqtt_password"


def test_encrypted_credentials_are_found_but_not_read(root: Path) -> None:
    write(
        root,
        f"etc/systemd/system/{UNIT}.d/z.conf",
        "[Service]\nLoadCredentialEncrypted=mqtt_password:edge-runtime.mqtt_password\n",
    )
    write(root, "etc/credstore.encrypted/edge-runtime.mqtt_password", "Whxqht+dQJax1aZeCGLxmiAAAAAB")
    units = UnitCredentials.find(root)
    assert units is not None
    found = units.lookup("mqtt_password")
    assert found.ok and found.encrypted


def test_set_credential_counts_as_present(root: Path) -> None:
    write(root, f"etc/systemd/system/{UNIT}.d/set.conf", "[Service]\nSetCredential=api_token:abc\n")
    units = UnitCredentials.find(root)
    assert units is not None and units.lookup("api_token").ok


def test_dropins_apply_in_name_order_and_etc_hides_the_same_name_below(root: Path) -> None:
    write(root, f"usr/lib/systemd/system/{UNIT}.d/10-a.conf", "[Service]\nLoadCredential=x:/usr\n")
    write(root, f"etc/systemd/system/{UNIT}.d/10-a.conf", "[Service]\nLoadCredential=x:/etc\n")
    write(root, f"usr/lib/systemd/system/{UNIT}.d/20-b.conf", "[Service]\nLoadCredential=y:/b\n")
    files = unit_files(root)
    assert [str(p.relative_to(root)) for p in files] == [
        f"etc/systemd/system/{UNIT}",
        f"etc/systemd/system/{UNIT}.d/10-a.conf",
        f"usr/lib/systemd/system/{UNIT}.d/20-b.conf",
    ]
    units = UnitCredentials(root, files)
    assert units.loads["x"].source == "/etc" and units.loads["y"].source == "/b"


def test_a_credstore_the_user_cannot_look_into_is_named(root: Path) -> None:
    """/etc/credstore is 0700 root: a user who is not root is told so, not that nothing is there."""
    write(root, "etc/credstore/edge-runtime.mqtt_password", "pw")
    (root / "etc/credstore").chmod(0o700)
    units = UnitCredentials.find(root)
    assert units is not None
    with tempfile.TemporaryDirectory() as name:  # a tree that user may walk down to the store
        shared = Path(name)
        shared.chmod(0o755)
        (root / "etc").rename(shared / "etc")
        units.root = shared
        if os.geteuid() != 0:
            (shared / "etc/credstore").chmod(0)
        with unprivileged():
            found = units.lookup("mqtt_password")
    assert not found.ok
    assert "(could not look into /etc/credstore: run validate as root)" in found.note
