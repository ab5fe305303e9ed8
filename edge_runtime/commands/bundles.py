"""``keys generate``, ``bundle create`` and ``bundle sign``: the operator's side of model updates."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import tarfile
import time
from pathlib import Path

import yaml

from edge_runtime.commands.common import read_image
from edge_runtime.errors import InputError
from edge_runtime.inference import backend_installed
from edge_runtime.model import MODEL_YAML, ModelRef, resolve
from edge_runtime.model.golden import make_golden
from edge_runtime.update.bundle import write_tar
from edge_runtime.update.manifest import (
    DEFAULT_CHUNK_BYTES,
    MANIFEST_FORMAT,
    Manifest,
    check_target_syntax,
    chunk_digests,
    generate_keys,
    load_private_key,
    sign,
    signed_chunk_size,
    update_id,
    version_key,
)

logger = logging.getLogger(__name__)


def cmd_keys(args: argparse.Namespace) -> int:
    """``keys generate --out DIR``."""
    private, public = generate_keys(Path(args.out), force=args.force)
    print(f"private key: {private} (mode 0600; keep it off the devices)")
    print(f"public key:  {public} (list it in updates.public_keys on each device)")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    """``bundle create`` or ``bundle sign``."""
    return _create(args) if args.action == "create" else _sign(args)


def _create(args: argparse.Namespace) -> int:
    try:
        version_key(args.version)
    except ValueError as exc:
        raise InputError(f"--version: {exc}") from exc
    folder = Path(args.model)
    ref = resolve(folder)
    members: dict[str, bytes | Path] = dict(bundle_members(ref))
    members[MODEL_YAML] = model_yaml_with_version(ref.folder, args.version)
    images = [read_image(Path(p)) for p in args.golden or []]
    kinds = [k for k in ref.files if backend_installed(k)]
    for kind in sorted(set(ref.files) - set(kinds)):
        logger.warning("no %s runtime here: the bundle has no golden vectors for %s devices", kind, kind)
    if not kinds:
        raise InputError(f"{folder}: no runtime installed for its model files; cannot compute golden vectors")
    members.update(make_golden(ref.folder, images, kinds))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_tar(out, members)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert ref.spec is not None
    print(f"{out}: {ref.spec.name} version {args.version}, {out.stat().st_size} bytes, sha256 {digest}")
    print(f"  golden vectors: {len(images) or 2} per backend ({', '.join(kinds)})")
    return 0


def bundle_members(ref: ModelRef) -> dict[str, Path]:
    """Archive name -> file for a bundle folder (model files, labels, extra files model.yaml hashes)."""
    if ref.spec is None:
        raise InputError(f"{ref.folder}: a bundle needs a folder with a model.yaml (see docs/models.md)")
    members = {p.name: p for p in ref.files.values()}
    if ref.spec.labels:
        members[ref.spec.labels] = ref.folder / ref.spec.labels
    for name in ref.spec.sha256:
        if (ref.folder / name).is_file():
            members.setdefault(name, ref.folder / name)
    return members


def model_yaml_with_version(folder: Path, version: str) -> bytes:
    """The folder's model.yaml with ``version`` replaced (the version the predictions will show)."""
    data = yaml.safe_load((folder / MODEL_YAML).read_text())
    data["version"] = version
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def _bundle_model_yaml(path: Path) -> dict[str, object]:
    try:
        with tarfile.open(path, "r:*") as tar:
            member = tar.extractfile(MODEL_YAML)
            data = yaml.safe_load(member.read()) if member is not None else None
    except (OSError, tarfile.TarError, KeyError) as exc:
        raise InputError(f"{path}: not a model bundle ({exc})") from exc
    if not isinstance(data, dict) or "name" not in data or "version" not in data:
        raise InputError(f"{path}: the bundle's model.yaml has no name or version")
    return data


def _sign(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise InputError(f"{path}: no such bundle file")
    key = load_private_key(Path(args.key))
    meta = _bundle_model_yaml(path)
    data = path.read_bytes()
    now = time.time()
    try:
        manifest = Manifest(
            name=str(meta["name"]),
            version=str(meta["version"]),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            target=check_target_syntax(args.target) if args.target else None,
            created=round(now, 3),
            expires=round(now + args.expires_in, 3) if args.expires_in > 0 else None,
            **_signed_transfer(args, data),
        )
    except ValueError as exc:
        raise InputError(f"{path}: cannot make a manifest: {exc}") from exc
    envelope = sign(manifest, key)
    out = path.with_name(path.name + ".manifest.json")
    out.write_text(json.dumps(envelope, indent=2) + "\n")
    expiry = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(manifest.expires)) if manifest.expires else "never"
    )
    print(
        f"{out}: {manifest.name} version {manifest.version}, update {update_id(envelope['manifest'])}, "
        f"key {envelope['key_id']}, target {manifest.target or 'any'}, expires {expiry}"
    )
    if manifest.chunk_size is not None:
        url = f", url {manifest.url}" if manifest.url else ""
        print(f"  format 2: {manifest.chunk_size}-byte chunks, each with its signed digest{url}")
    return 0


def _signed_transfer(args: argparse.Namespace, data: bytes) -> dict[str, object]:
    """The manifest fields that sign how the bytes travel (format 2), or format 1's none."""
    fmt = getattr(args, "format", MANIFEST_FORMAT)
    if fmt == 1:
        if getattr(args, "url", None) or getattr(args, "chunk_size", None):
            raise InputError("--format 1 signs no transfer: leave out --url and --chunk-size")
        return {"format": 1}
    wanted = getattr(args, "chunk_size", None) or DEFAULT_CHUNK_BYTES
    chunk = signed_chunk_size(len(data), wanted)
    if chunk != wanted and getattr(args, "chunk_size", None):
        print(f"note: chunk size raised to {chunk} bytes so the digests fit in the manifest")
    fields: dict[str, object] = {
        "format": 2,
        "chunk_size": chunk,
        "chunk_digests": base64.b64encode(chunk_digests(data, chunk)).decode(),
    }
    if getattr(args, "url", None):
        fields["url"] = args.url
    return fields
