"""Signed update manifests: Ed25519 keys, the manifest, and the envelope that carries it.

The envelope sent over MQTT (and written by ``bundle sign`` as ``FILE.manifest.json``) is::

    {"manifest": "<the manifest as canonical JSON text>", "signature": "<base64>", "key_id": "<hex>",
     "transfer": {...}}          # transfer: added by ``push``, not signed (the bytes are checked
                                 # against the signed sha256 and size, so a forged URL gains nothing)

The signature covers the exact bytes of the manifest text, so a device checks it before it
parses the manifest at all: nothing an attacker wrote is interpreted before it is authenticated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_runtime.errors import InputError, UpdateError

if TYPE_CHECKING:  # cryptography costs ~7 MB of RSS: imported only when keys are used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST_FORMAT = 1
MAX_ENVELOPE_BYTES = 64 * 1024
VERSION_PATTERN = r"^[0-9]+(\.[0-9]+){0,3}$"
_TARGET = re.compile(r"^(device|group):[^/#+\s]+$")


def version_key(version: str) -> tuple[int, ...]:
    """``"1.10.2"`` -> ``(1, 10, 2)``; versions compare numerically, part by part."""
    if not re.match(VERSION_PATTERN, version):
        raise ValueError(f"version {version!r} is not numeric (expected e.g. 3 or 1.4.2)")
    return tuple(int(p) for p in version.split("."))


def is_newer(candidate: str, current: str | None) -> bool:
    """True if ``candidate`` is strictly newer; a current version that is not numeric counts as 0."""
    try:
        base = version_key(current) if current is not None else (0,)
    except ValueError:
        base = (0,)
    return version_key(candidate) > base


class Manifest(BaseModel):
    """What the signature vouches for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = Field(MANIFEST_FORMAT, description="manifest format version")
    name: str = Field(min_length=1, max_length=128, description="model name (model.yaml name)")
    version: str = Field(pattern=VERSION_PATTERN, description="monotonic model version")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the bundle file")
    size: int = Field(gt=0, description="bundle size in bytes")
    target: str | None = Field(None, description="device:ID or group:G; null for any device")
    created: float = Field(description="signing time, Unix seconds")
    expires: float | None = Field(None, description="not valid after this Unix time")

    def canonical(self) -> str:
        """The exact text that is signed: sorted keys, no whitespace."""
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))

    def check_target(self, device: str, groups: list[str]) -> None:
        """Raise UpdateError if this manifest is addressed to somebody else."""
        if self.target is None:
            return
        kind, _, name = self.target.partition(":")
        if kind == "device" and name != device:
            raise UpdateError(f"manifest targets device {name}, this is {device}")
        if kind == "group" and name not in groups:
            raise UpdateError(f"manifest targets group {name}, this device is in {groups or 'no group'}")

    def check_time(self, now: float | None = None) -> None:
        """Raise UpdateError if expired."""
        now = time.time() if now is None else now
        if self.expires is not None and now > self.expires:
            ago = int(now - self.expires)
            raise UpdateError(f"manifest expired {ago} s ago (expires {self.expires:.0f})")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A verified envelope: its manifest, the update id, the key that signed it, the transfer."""

    manifest: Manifest
    update_id: str
    key_id: str
    transfer: dict[str, Any]
    raw: dict[str, Any]


# -- keys ----------------------------------------------------------------------------------------
def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key (sha256 of the raw key, 16 hex digits)."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keys(out_dir: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``signing.key`` (PKCS#8 PEM, mode 0600) and ``signing.pub`` (PEM) into ``out_dir``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / "signing.key", out_dir / "signing.pub"
    if not force and (private_path.exists() or public_path.exists()):
        raise InputError(f"{out_dir}: signing.key or signing.pub exists already (use --force to replace)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.unlink(missing_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file, or InputError naming the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the signing key: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: not an Ed25519 key (got {type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file, or InputError naming the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the public key: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path}: not an Ed25519 public key (got {type(key).__name__})")
    return key


# -- signing and verifying -------------------------------------------------------------------------
def sign(manifest: Manifest, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The envelope for ``manifest`` (without transfer)."""
    text = manifest.canonical()
    signature = key.sign(text.encode())
    return {
        "manifest": text,
        "signature": base64.b64encode(signature).decode(),
        "key_id": key_id(key.public_key()),
    }


def update_id(manifest_text: str) -> str:
    """Stable id of one signed manifest (16 hex digits of its sha256)."""
    return hashlib.sha256(manifest_text.encode()).hexdigest()[:16]


def verify(payload: bytes, keys: list[Ed25519PublicKey]) -> Envelope:
    """Authenticate an envelope, then parse its manifest; UpdateError with the reason if bad."""
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise UpdateError(f"update message is {len(payload)} bytes (limit {MAX_ENVELOPE_BYTES})")
    if not keys:
        raise UpdateError("no trusted keys configured (updates.public_keys is empty)")
    try:
        envelope = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UpdateError(f"update message is not JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise UpdateError("update message is not a JSON object")
    text, signature = envelope.get("manifest"), envelope.get("signature")
    if not isinstance(text, str) or not isinstance(signature, str):
        raise UpdateError("update message needs 'manifest' (text) and 'signature' (base64)")
    try:
        sig = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UpdateError("signature is not valid base64") from exc
    signer = _find_signer(text.encode(), sig, keys)
    try:
        manifest = Manifest.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        raise UpdateError(f"signed manifest is invalid: {where}: {err['msg']}") from exc
    if manifest.format != MANIFEST_FORMAT:
        raise UpdateError(f"manifest format {manifest.format} is not supported (expected {MANIFEST_FORMAT})")
    transfer = envelope.get("transfer") or {}
    if not isinstance(transfer, dict):
        raise UpdateError("'transfer' must be an object")
    return Envelope(manifest, update_id(text), signer, transfer, envelope)


def peek_update_id(payload: bytes) -> str | None:
    """The id an envelope claims (unverified; only to label a rejection for the operator)."""
    try:
        text = json.loads(payload).get("manifest")
    except (AttributeError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return update_id(text) if isinstance(text, str) else None


def _find_signer(data: bytes, signature: bytes, keys: list[Ed25519PublicKey]) -> str:
    from cryptography.exceptions import InvalidSignature

    for key in keys:
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        return key_id(key)
    raise UpdateError(f"signature does not verify with any of the {len(keys)} trusted key(s)")


def read_envelope_file(path: Path) -> dict[str, Any]:
    """A ``FILE.manifest.json`` as written by ``bundle sign`` (not verified: the device does that)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read the manifest: {exc.strerror} (run `bundle sign` first)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("manifest"), str):
        raise InputError(f"{path}: not a signed manifest (no 'manifest' text)")
    return data


def check_target_syntax(target: str) -> str:
    """``device:ID`` or ``group:G``, else InputError."""
    if not _TARGET.match(target):
        raise InputError(f"target {target!r}: expected device:ID or group:NAME")
    return target
