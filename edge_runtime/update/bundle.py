"""Model bundles: a plain tar of model.yaml, model files, labels and golden test vectors.

Creation is deterministic (sorted members, fixed owners, modes and times), so the same inputs give
the same bytes. Extraction trusts nothing: only regular files and folders, no absolute paths, no
``..``, no links, bounded count and size, then tarfile's ``data`` filter on top.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path, PurePosixPath

import yaml

from edge_runtime.durable import fsync_tree
from edge_runtime.errors import UpdateError
from edge_runtime.hashing import file_sha256

MAX_MEMBERS = 256
MODEL_YAML = "model.yaml"


def write_tar(out: Path, files: dict[str, bytes | Path]) -> None:
    """Write a deterministic tar (temp file + rename, so a reader never sees half a bundle)."""
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            source = files[name]
            data = source.read_bytes() if isinstance(source, Path) else source
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)


def check_bytes(part: Path, size: int, sha256: str) -> None:
    """The downloaded bundle has the signed size and sha256 (before anything parses its bytes)."""
    actual = part.stat().st_size if part.exists() else -1
    if actual != size:
        raise UpdateError(f"bundle is {actual} bytes, the manifest says {size}")
    digest = file_sha256(part)
    if digest != sha256:
        raise UpdateError(f"sha256 mismatch: bundle {digest[:12]}..., manifest {sha256[:12]}...")


def _check_member(member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or member.name.startswith(("/", "\\")):
        raise UpdateError(f"bundle member {member.name!r}: absolute or parent path")
    if not (member.isfile() or member.isdir()):
        raise UpdateError(f"bundle member {member.name!r}: only files and folders are allowed (no links)")


def extract(bundle: Path, dest: Path, *, max_bytes: int) -> None:
    """Extract a verified bundle into the new folder ``dest``, fsyncing every file."""
    try:
        with tarfile.open(bundle, "r:*") as tar:
            members = tar.getmembers()
            if len(members) > MAX_MEMBERS:
                raise UpdateError(f"bundle has {len(members)} members (limit {MAX_MEMBERS})")
            total = 0
            for member in members:
                _check_member(member)
                total += member.size
            if total > max_bytes:
                raise UpdateError(f"bundle would extract to {total} bytes (limit {max_bytes})")
            dest.mkdir(parents=True)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python without PEP 706: the checks above already refused links and escapes
                tar.extractall(dest)
    except tarfile.TarError as exc:  # includes the data filter's refusals
        raise UpdateError(f"bundle is not a valid tar or has a refused member: {exc}") from exc
    fsync_tree(dest)


def unpack(part: Path, dest: Path, name: str, version: str, *, max_bytes: int) -> None:
    """Extract a verified bundle into ``dest`` (replacing what an earlier attempt left) and check
    that it holds model ``name`` at ``version``."""
    if dest.exists():
        shutil.rmtree(dest)
    extract(part, dest, max_bytes=max_bytes)
    check_contents(dest, name, version)


def check_contents(folder: Path, name: str, version: str) -> None:
    """The extracted bundle must hold a model.yaml of ``name`` at ``version``.

    Only the identity is read here; the model layer checks the rest (``Slot.check_bundle``).
    """
    path = folder / MODEL_YAML
    if not path.is_file():
        raise UpdateError("bundle has no model.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UpdateError(f"bundle content: {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UpdateError(f"bundle content: {path}: expected a mapping of model fields")
    found = data.get("name")
    if found != name:
        raise UpdateError(f"bundle holds model {found!r}, the manifest says {name!r}")
    said = data.get("version", "1")  # model.yaml's default, and numbers read as text (model/spec.py)
    said = str(said) if isinstance(said, (int, float)) else said
    if said != version:
        raise UpdateError(f"bundle's model.yaml says version {said}, the manifest says {version}")
