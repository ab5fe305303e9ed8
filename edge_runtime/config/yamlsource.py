"""Load YAML while remembering where every key came from, and report errors as ``file:line: key``.

pydantic reports error locations as paths (``("models", "classifier", "threads")``); users need
lines. :mod:`edge_runtime.config.yamltree` builds plain data from the file (within bounds a hostile
file cannot pass) and a map from each path to its line, and that map turns validation errors into
``FILE:LINE: dotted.path: message``.
"""

from __future__ import annotations

import difflib
import stat
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from edge_runtime.config.yamltree import PathKey, YamlLimits, build, dotted, shorten
from edge_runtime.errors import ConfigError

__all__ = ["PathKey", "YamlDocument", "YamlLimits", "format_errors", "load_yaml", "parse_model"]
M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class YamlDocument:
    """Plain data from a YAML file plus the 1-based line of every key and item."""

    path: Path
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, loc: Iterable[str | int]) -> int:
        """Line of the deepest known prefix of ``loc`` (1 when nothing matches)."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)


def _read_text(path: Path, max_bytes: int) -> str:
    """The file's text; ConfigError naming the file when it cannot be a config file."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: a directory, not a file")
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block, a device never end
            raise ConfigError(f"{path}: not a regular file")
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except PermissionError as exc:
        raise ConfigError(f"{path}: not readable (permission denied)") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    if len(raw) > max_bytes:
        raise ConfigError(f"{path}: larger than {max_bytes // 1024} KiB; not a config file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x})") from None


def load_yaml(path: Path, limits: YamlLimits | None = None) -> YamlDocument:
    """Read ``path``; raise :class:`ConfigError` naming the file (and line) when it is unreadable,
    not YAML, or past ``limits`` (:mod:`edge_runtime.config.yamltree` says which)."""
    limits = limits or YamlLimits()
    data, lines = build(_read_text(path, limits.max_bytes), path, limits)
    return YamlDocument(path=path, data={} if data is None else data, lines=lines)


def _data_path(data: Any, loc: tuple[str | int, ...]) -> PathKey:
    """``loc`` as keys of the file: drops the union tags pydantic inserts (``source.synthetic.fps``)."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif i < len(loc) - 1:
            continue  # a tag, not a key of the file
        out.append(part)
    return tuple(out)


def _members(tp: Any) -> list[Any]:
    """``tp`` without ``Annotated``, a union as its members."""
    if get_origin(tp) is Annotated:
        return _members(get_args(tp)[0])
    if get_origin(tp) in (Union, types.UnionType):
        return [m for arg in get_args(tp) for m in _members(arg)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tags(model: type[BaseModel]) -> set[Any]:
    """Values of the model's ``Literal`` fields: a discriminated union's tag is one of them."""
    return {
        value
        for info in model.model_fields.values()
        if get_origin(info.annotation) is Literal
        for value in get_args(info.annotation)
    }


def _step(tp: Any, part: str | int) -> Any:
    """The type at ``part`` of a pydantic error location inside ``tp`` (None when unknown)."""
    for member in _members(tp):
        if _is_model(member) and part in member.model_fields:
            return member.model_fields[part].annotation
        if _is_model(member) and part in _tags(member):
            return member  # a tag pydantic inserted: the location stays in this member
        if get_origin(member) is dict and isinstance(part, str):
            return get_args(member)[1]
        if get_origin(member) is list and isinstance(part, int):
            return get_args(member)[0]
    return None


def known_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed in the mapping at ``loc`` (pydantic's error location, union tags included)."""
    tp: Any = model
    for part in loc:
        tp = _step(tp, part)
    return [key for member in _members(tp) if _is_model(member) for key in member.model_fields]


def _unknown_key(model: type[BaseModel] | None, loc: tuple[str | int, ...]) -> str:
    """``unknown key``, with the closest allowed key when one is close enough."""
    if model is None or not loc or not isinstance(loc[-1], str):
        return "unknown key"
    close = difflib.get_close_matches(loc[-1], known_keys(model, loc[:-1]), n=1)
    return f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"


def format_errors(doc: YamlDocument, exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One ``FILE:LINE: dotted.path: message`` line per validation error.

    With ``model`` (the one that was validated), an unknown key names the closest allowed key.
    """
    out = []
    for err in exc.errors():
        raw = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
        loc = _data_path(doc.data, raw)
        message = shorten(err["msg"], 300)
        if err["type"] == "extra_forbidden":
            message = _unknown_key(model, raw)
        out.append(f"{doc.path}:{doc.line_of(loc)}: {dotted(loc)}: {message}")
    return out


def parse_model(doc: YamlDocument, model: type[M]) -> M:
    """Validate ``doc`` against ``model``; raise :class:`ConfigError` listing every problem."""
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError("\n".join(format_errors(doc, exc, model))) from exc
