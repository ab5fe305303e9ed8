"""Signed update manifests: Ed25519 keys, the manifest, and the envelope that carries it.

The envelope sent over MQTT (and written by ``bundle sign`` as ``FILE.manifest.json``) is::

    {"manifest": "<the manifest as canonical JSON text>", "signature": "<base64>", "key_id": "<hex>",
     "transfer": {...}}          # transfer: added by ``push``, not signed: a hint (docs/updates.md)

The signature covers the exact bytes of the manifest text, so a device checks it before it
parses the manifest at all: nothing an attacker wrote is interpreted before it is authenticated
(:func:`authenticate` parses only the envelope, bounded in size and depth; :func:`open_signed`
then reads the manifest). A manifest of format 2 also signs how its bytes travel: the chunk size
and a digest of every chunk (and optionally a URL), so each chunk is checked as it arrives and
nothing in the unsigned ``transfer`` can corrupt, redirect or stall a download for good.
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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_runtime.errors import InputError, UpdateError
from edge_runtime.update.inbound import parse_json

if TYPE_CHECKING:  # cryptography costs ~7 MB of RSS: imported only when keys are used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST_FORMAT = 2  # 2: signs the chunk size, a digest of each chunk and optionally a URL
FORMATS = (1, 2)  # format 1 (signed before chunk digests existed) is still accepted
MAX_ENVELOPE_BYTES = 64 * 1024
MAX_ENVELOPE_DEPTH = 4  # {"transfer": {...}}: 2 levels are used; a little room, no more
MAX_CHUNK_BYTES = 1024 * 1024
DIGEST_BYTES = 16  # a chunk's digest: the first 128 bits of its sha256
DEFAULT_CHUNK_BYTES = 64 * 1024
MAX_SIGNED_CHUNKS = 1024  # bundle sign doubles the chunk size until the digests fit (22 KB)
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
    chunk_size: int | None = Field(
        None, gt=0, le=MAX_CHUNK_BYTES, description="format 2: bytes per chunk (the last is shorter)"
    )
    chunk_digests: str | None = Field(
        None, description="format 2: base64 of each chunk's first 16 bytes of sha256, in order"
    )
    url: str | None = Field(
        None, max_length=2048, pattern=r"^https?://", description="format 2, optional: where to download"
    )

    @model_validator(mode="after")
    def _transfer_matches_format(self) -> Manifest:
        if self.format == 1:
            if self.chunk_size is not None or self.chunk_digests is not None or self.url is not None:
                raise ValueError("format 1 has no chunk_size, chunk_digests or url")
        elif self.chunk_size is None or self.chunk_digests is None:
            raise ValueError(f"format {self.format} needs chunk_size and chunk_digests")
        else:
            digests = _b64(self.chunk_digests)
            count = -(-self.size // self.chunk_size)
            if digests is None or len(digests) != count * DIGEST_BYTES:
                raise ValueError(f"chunk_digests must hold {count} digests of {DIGEST_BYTES} bytes")
        return self

    @property
    def digests(self) -> bytes | None:
        """The signed chunk digests (``DIGEST_BYTES`` each), or None for format 1."""
        return None if self.chunk_digests is None else _b64(self.chunk_digests)

    def canonical(self) -> str:
        """The exact text that is signed: sorted keys, no whitespace (format 1: its own fields only)."""
        data = self.model_dump()
        for key in ("chunk_size", "chunk_digests", "url"):
            if data[key] is None:
                del data[key]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

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
class Signed:
    """An envelope whose manifest text a trusted key signed (the manifest not read yet)."""

    text: str
    key_id: str
    transfer: object  # the envelope's unsigned ``transfer``, as sent (a hint; anything at all)

    @property
    def update_id(self) -> str:
        """The id of the signed manifest."""
        return update_id(self.text)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A verified envelope: its manifest, the update id, the key that signed it, the transfer.

    ``transfer`` is the unsigned hint as sent: a dict when it was an object, else empty.
    """

    manifest: Manifest
    update_id: str
    key_id: str
    transfer: dict[str, Any]


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


def authenticate(payload: bytes, keys: list[Ed25519PublicKey]) -> Signed:
    """Check that a trusted key signed the envelope's manifest text; UpdateError with the reason.

    Only the envelope is parsed here, bounded in size and nesting; the manifest text is not read.
    A message that fails here is unauthenticated: it belongs to no update, whatever it claims.
    """
    if not keys:
        raise UpdateError("no trusted keys configured (updates.public_keys is empty)")
    envelope = parse_json(
        payload, max_bytes=MAX_ENVELOPE_BYTES, max_depth=MAX_ENVELOPE_DEPTH, what="update message"
    )
    if not isinstance(envelope, dict):
        raise UpdateError("update message is not a JSON object")
    text, signature = envelope.get("manifest"), envelope.get("signature")
    if not isinstance(text, str) or not isinstance(signature, str):
        raise UpdateError("update message needs 'manifest' (text) and 'signature' (base64)")
    sig = _b64(signature)
    if sig is None:
        raise UpdateError("signature is not valid base64")
    try:
        data = text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate from a \ud800 escape
        raise UpdateError("manifest text is not valid Unicode") from exc
    return Signed(text, _find_signer(data, sig, keys), envelope.get("transfer"))


def open_signed(signed: Signed) -> Envelope:
    """Read the authenticated manifest; UpdateError with the reason (it names a real update now)."""
    try:
        manifest = Manifest.model_validate_json(signed.text)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        raise UpdateError(f"signed manifest is invalid: {where}: {err['msg']}") from exc
    if manifest.format not in FORMATS:
        raise UpdateError(f"manifest format {manifest.format} is not supported (expected one of {FORMATS})")
    transfer = signed.transfer if isinstance(signed.transfer, dict) else {}
    return Envelope(manifest, signed.update_id, signed.key_id, transfer)


def verify(payload: bytes, keys: list[Ed25519PublicKey]) -> Envelope:
    """Authenticate an envelope, then read its manifest; UpdateError with the reason if bad."""
    return open_signed(authenticate(payload, keys))


def chunk_digests(data: bytes, chunk_size: int) -> bytes:
    """The digest of each ``chunk_size`` piece of ``data`` (``DIGEST_BYTES`` each, in order)."""
    return b"".join(chunk_digest(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size))


def chunk_digest(chunk: bytes) -> bytes:
    """One chunk's digest: the first ``DIGEST_BYTES`` of its sha256."""
    return hashlib.sha256(chunk).digest()[:DIGEST_BYTES]


def signed_chunk_size(size: int, wanted: int = DEFAULT_CHUNK_BYTES) -> int:
    """``wanted``, doubled until a bundle of ``size`` bytes has at most ``MAX_SIGNED_CHUNKS`` chunks;
    InputError when even ``MAX_CHUNK_BYTES`` chunks are too many or ``wanted`` is out of range."""
    if not 0 < wanted <= MAX_CHUNK_BYTES:
        raise InputError(f"chunk size {wanted} out of range (1..{MAX_CHUNK_BYTES})")
    chunk = wanted
    while -(-size // chunk) > MAX_SIGNED_CHUNKS and chunk < MAX_CHUNK_BYTES:
        chunk = min(chunk * 2, MAX_CHUNK_BYTES)
    if -(-size // chunk) > MAX_SIGNED_CHUNKS:
        limit = MAX_SIGNED_CHUNKS * MAX_CHUNK_BYTES
        raise InputError(f"a bundle of {size} bytes is over the {limit} bytes a format 2 manifest covers")
    return chunk


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _find_signer(data: bytes, signature: bytes, keys: list[Ed25519PublicKey]) -> str:
    from cryptography.exceptions import InvalidSignature

    for key in keys:
        try:
            key.verify(signature, data)
        except (InvalidSignature, ValueError, TypeError):  # any malformed signature is just not one
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
