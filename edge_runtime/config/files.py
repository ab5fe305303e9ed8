"""The files a config names, checked as the service will open them: no writes, no network.

Each check gives one precise reason: missing, a directory, not a regular file, not readable, or
content the daemon cannot use (a TLS file OpenSSL refuses, a public key that is not Ed25519).
Paths in a config are the service's paths. :class:`Disk` maps them to files here: below ``root``
for a staged image (``validate --root``), and a path in the service's credentials folder to the
file systemd will copy there (:mod:`edge_runtime.config.credentials`) when checking from outside
the unit.
"""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.config.credentials import SERVICE_DIRECTORY, Found, UnitCredentials

MAX_SECRET_BYTES = 64 * 1024  # a password or a PEM key; larger is not one


@dataclass(frozen=True, slots=True)
class Disk:
    """Where the files named by a config are, seen from this process."""

    root: Path = Path("/")
    credentials_dir: Path | None = None  # the service's $CREDENTIALS_DIRECTORY (None: none)
    unit: UnitCredentials | None = None  # set when checking from outside the unit

    @classmethod
    def of_service(cls) -> Disk:
        """As the running service sees its files (``$CREDENTIALS_DIRECTORY`` when systemd set it)."""
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        return cls(credentials_dir=Path(creds) if creds else None)

    @classmethod
    def for_validate(cls, root: Path = Path("/")) -> Disk:
        """As the service will see its files: inside the unit as it is, outside through the unit."""
        if "CREDENTIALS_DIRECTORY" in os.environ and root == Path("/"):
            return cls.of_service()
        unit = UnitCredentials.find(root)
        return cls(root, SERVICE_DIRECTORY if unit else None, unit)

    def here(self, target: Path) -> tuple[Path | None, Found | None]:
        """The file here for the service's path ``target`` (None when there is none) and, for a
        credential seen from outside the unit, how systemd finds it."""
        if self.unit is not None and self.credentials_dir is not None:
            try:
                name = target.relative_to(self.credentials_dir)
            except ValueError:
                pass
            else:
                found = self.unit.lookup(str(name).split("/")[0])
                return found.path, found
        if self.root == Path("/"):
            return target, None
        return self.root / str(target).lstrip("/"), None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    return "not a regular file"


def _stat(path: Path) -> os.stat_result | str:
    """``stat`` of ``path``, or why it cannot be reached."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "does not exist"
    except PermissionError:
        return "cannot be reached (permission denied on a folder above it)"
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        return f"cannot be checked ({getattr(exc, 'strerror', None) or exc})"


def _readable(path: Path, folder: bool = False) -> str | None:
    if folder:  # effective ids, as opening would use (os.access checks the real ones by default)
        ok = os.access(path, os.R_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)
        return None if ok else "is a folder that is not readable"
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK))
    except PermissionError:
        return "is not readable (permission denied)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None


def _shown(target: Path, here: Path | None, found: Found | None) -> str:
    if found is not None:
        return f"{target} ({found.note})"
    return f"{target} (here {here})" if here is not None and here != target else str(target)


def file_problem(disk: Disk, target: Path, content: Callable[[Path], str | None] | None = None) -> str | None:
    """Why the service could not read ``target`` as a regular file (None: it can).

    ``content`` checks the bytes when the file is there and readable (skipped for an encrypted
    credential, which only systemd can read).
    """
    here, found = disk.here(target)
    if here is None:
        return None if found is not None and found.ok else f"{target}: {found.note if found else 'missing'}"
    info = _stat(here)
    if isinstance(info, str):
        return f"{_shown(target, here, found)} {info}"
    if not stat.S_ISREG(info.st_mode):
        return f"{_shown(target, here, found)} is {_kind(info.st_mode)}"
    reason = _readable(here)
    if reason is not None:
        return f"{_shown(target, here, found)} {reason}"
    if content is None or (found is not None and found.encrypted):
        return None
    bad = content(here)
    return f"{_shown(target, here, found)}: {bad}" if bad else None


def input_problem(disk: Disk, target: Path) -> str | None:
    """Why ``target`` (a model: a file or a bundle folder) could not be read (None: it can)."""
    here, _ = disk.here(target)
    assert here is not None  # models are never credentials
    info = _stat(here)
    if isinstance(info, str):
        return f"{_shown(target, here, None)} {info}"
    folder = stat.S_ISDIR(info.st_mode)
    if not folder and not stat.S_ISREG(info.st_mode):
        return f"{_shown(target, here, None)} is {_kind(info.st_mode)}"
    reason = _readable(here, folder)
    return f"{_shown(target, here, None)} {reason}" if reason else None


def folder_problem(disk: Disk, pattern: str) -> str | None:
    """Why an ``images`` source's folder or glob has no folder to read (None: it has)."""
    parts = Path(pattern).parts
    magic = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    if magic is not None:  # a glob: the part before its first wildcard must be a folder
        folder = Path(*parts[:magic]) if magic else Path()
        here, _ = disk.here(folder)
        assert here is not None
        info = _stat(here)
        if isinstance(info, str):
            return f"{_shown(folder, here, None)} {info}"
        return None if stat.S_ISDIR(info.st_mode) else f"{_shown(folder, here, None)} is not a folder"
    return input_problem(disk, Path(pattern))


def read_secret(path: Path) -> bytes:
    """The first bytes of a small file (a password, a PEM key): OSError or ValueError when too large."""
    with path.open("rb") as fh:
        data = fh.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"larger than {MAX_SECRET_BYTES // 1024} KiB")
    return data


def public_key_problem(path: Path) -> str | None:
    """Why ``path`` is not an Ed25519 public key in PEM (None: it is one)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(read_secret(path))
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"not a PEM public key ({(str(exc).splitlines() or [type(exc).__name__])[0][:200]})"
    return None if isinstance(key, Ed25519PublicKey) else f"not an Ed25519 public key ({type(key).__name__})"


def tls_problem(ca: Path, cert: Path | None, key: Path | None) -> tuple[str, str] | None:
    """Which TLS key (``ca_file``, ``key_file``) OpenSSL would refuse as the daemon uses the files,
    and why (None: it takes them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError, ValueError) as exc:
        return "ca_file", f"not a usable CA certificate ({exc})"
    if cert is None or key is None:
        return None
    try:  # an encrypted key would make OpenSSL ask for a passphrase: the daemon has none to give
        context.load_cert_chain(str(cert), str(key), password=lambda: b"")
    except (OSError, ssl.SSLError, ValueError) as exc:
        try:
            encrypted = b"ENCRYPTED" in read_secret(key)
        except (OSError, ValueError):
            encrypted = False
        why = "the key is encrypted and the daemon has no passphrase" if encrypted else str(exc)
        return "key_file", f"OpenSSL refuses the certificate and key ({why})"
    return None


def password_file(disk: Disk, name: Path, base: Path) -> tuple[Path | None, str | None]:
    """The file the daemon will read the MQTT password from, as it looks for it: ``name`` if
    absolute, else the credentials folder first, then the config's folder (``base``).

    Returns (file here, None); (None, the problem) when there is none; (None, None) when the
    password is there but only systemd can read it (an encrypted or unit-set credential).
    """
    creds = [disk.credentials_dir / name] if disk.credentials_dir is not None else []
    candidates = [name] if name.is_absolute() else [*creds, base / name]
    looked = []
    for target in candidates:
        here, found = disk.here(target)
        if here is None:
            if found is not None and found.ok:
                return None, None
            looked.append(f"{target}: {found.note if found else 'missing'}")
            continue
        info = _stat(here)
        if isinstance(info, str) or not stat.S_ISREG(info.st_mode):
            reason = info if isinstance(info, str) else f"is {_kind(info.st_mode)}"
            looked.append(f"{_shown(target, here, found)} {reason}")
            continue
        unreadable = _readable(here)
        if unreadable is not None:
            return None, f"password file {_shown(target, here, found)} {unreadable}"
        return (None, None) if found is not None and found.encrypted else (here, None)
    return None, f"password file {name} not found (looked in {'; '.join(looked)})"
