"""Signed control documents: a command or a config, in the envelope model updates use.

The envelope (docs/control.md)::

    {"document": "<the document as canonical JSON text>", "signature": "<base64>", "key_id": "<hex>"}

The signature (Ed25519, a key in ``updates.public_keys``) covers the exact bytes of the document
text, and it is checked before the text is parsed at all (:func:`authenticate`); only then is the
document read (:func:`open_document`). Everything that decides behaviour is inside the document:
its ``kind`` (a signed command is never taken for a config, nor a model manifest for either), its
target, its expiry and, for a command, a nonce that is never accepted twice (control/nonces.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from edge_runtime.boundedjson import parse_json
from edge_runtime.errors import ControlError

if TYPE_CHECKING:  # cryptography is imported only when keys are used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAX_DEPTH = 4  # {"args": {...}} inside an unsigned request; envelopes use 1 level
MAX_CONFIG_BYTES = 256 * 1024  # a config file is a few KB; room for many pipelines, no more
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Value = Annotated[str, StringConstraints(max_length=256)]
_TARGET = r"^(device|group):[^/#+\s]{1,128}$"


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    target: str = Field(pattern=_TARGET, description="device:ID or group:G")
    created: float = Field(description="signing time, Unix seconds")

    def check_target(self, device: str, groups: list[str]) -> None:
        """ControlError when this document is addressed to somebody else."""
        kind, _, name = self.target.partition(":")
        if (kind == "device" and name != device) or (kind == "group" and name not in groups):
            raise ControlError(f"signed for {self.target}, this is device {device} (groups {groups})")


class CommandDoc(_Document):
    """A signed command: what to do, to whom, until when, and a nonce that is never reused."""

    kind: Literal["command"] = Field("command", description="what this document is")
    name: Name = Field(description="the command (the last level of its topic)")
    args: dict[Name, Value] = Field(default_factory=dict, max_length=16, description="its arguments")
    nonce: str = Field(pattern=r"^[0-9a-f]{16,64}$", description="random; accepted once")
    expires: float = Field(description="not valid after this Unix time")


class ConfigDoc(_Document):
    """A signed config: the YAML text of a whole config file, with its own version number."""

    kind: Literal["config"] = Field("config", description="what this document is")
    version: int = Field(ge=1, description="monotonic: a device takes only a newer one")
    expires: float | None = Field(None, description="not valid after this Unix time")
    config: str = Field(max_length=MAX_CONFIG_BYTES, description="the config file (YAML text)")


Doc = TypeVar("Doc", CommandDoc, ConfigDoc)


@dataclass(frozen=True, slots=True)
class Signed:
    """An envelope whose document text a trusted key signed (the document not read yet)."""

    text: str
    key_id: str

    @property
    def sha256(self) -> str:
        """sha256 of the signed document text (hex): the same document has the same one."""
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_keys(paths: list[Path]) -> list[Ed25519PublicKey]:
    """The trusted Ed25519 public keys (the config loader has checked the files already)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = []
    for path in paths:
        key = serialization.load_pem_public_key(path.read_bytes())
        if isinstance(key, Ed25519PublicKey):
            keys.append(key)
    return keys


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key (as ``bundle sign`` shows it)."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(doc: CommandDoc | ConfigDoc, key: Ed25519PrivateKey) -> bytes:
    """The envelope of ``doc`` signed with ``key`` (the operator side)."""
    text = json.dumps(doc.model_dump(), sort_keys=True, separators=(",", ":"))
    envelope = {
        "document": text,
        "signature": base64.b64encode(key.sign(text.encode())).decode(),
        "key_id": key_id(key.public_key()),
    }
    return json.dumps(envelope).encode()


def read_json(payload: bytes, *, max_bytes: int, what: str) -> Any:
    """``payload`` as JSON, bounded in size and nesting; ControlError saying why not."""
    return parse_json(payload, max_bytes=max_bytes, max_depth=MAX_DEPTH, what=what, error=ControlError)


def is_envelope(message: Any) -> bool:
    """True when a parsed message claims to be signed (it then must verify)."""
    return isinstance(message, dict) and ("signature" in message or "document" in message)


def authenticate(message: dict[str, Any], keys: list[Ed25519PublicKey]) -> Signed:
    """Check that a trusted key signed the envelope's document text; ControlError if not."""
    if not keys:
        raise ControlError("no trusted keys configured (updates.public_keys is empty)")
    text, signature = message.get("document"), message.get("signature")
    if not isinstance(text, str) or not isinstance(signature, str):
        raise ControlError("a signed message needs 'document' (text) and 'signature' (base64)")
    try:
        sig, data = base64.b64decode(signature, validate=True), text.encode()
    except (binascii.Error, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ControlError("signature is not base64, or the document is not valid Unicode") from exc
    from cryptography.exceptions import InvalidSignature

    for key in keys:
        try:
            key.verify(sig, data)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return Signed(text, key_id(key))
    raise ControlError(f"signature does not verify with any of the {len(keys)} trusted key(s)")


def open_document(signed: Signed, model: type[Doc], now: float | None = None) -> Doc:
    """Read an authenticated document as ``model``; ControlError if it is not one or expired."""
    try:
        doc = model.model_validate_json(signed.text)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "document"
        raise ControlError(f"signed document is invalid: {where}: {err['msg']}") from exc
    now = time.time() if now is None else now
    if doc.expires is not None and now > doc.expires:
        raise ControlError(f"signed document expired {int(now - doc.expires)} s ago")
    return doc
