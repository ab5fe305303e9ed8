"""Load YAML while remembering where every key came from, and report errors as ``file:line: key``.

pydantic reports error locations as paths (``("models", "classifier", "threads")``); users need
lines. We compose the YAML node tree once, build plain data from it and a map from each path to
its line, and use that map to turn validation errors into ``FILE:LINE: dotted.path: message``.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from edge_runtime.errors import ConfigError

PathKey = tuple[str | int, ...]
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


def _build(node: yaml.Node, at: PathKey, lines: dict[PathKey, int]) -> Any:
    lines.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            key_path = (*at, key)
            lines[key_path] = key_node.start_mark.line + 1
            out[key] = _build(value_node, key_path, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*at, i), lines) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def load_yaml(path: Path) -> YamlDocument:
    """Read ``path``; raise :class:`ConfigError` naming the file (and line) when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{line}: invalid YAML: {problem}") from exc
    lines: dict[PathKey, int] = {}
    data = {} if node is None else _build(node, (), lines)
    return YamlDocument(path=path, data=data, lines=lines)


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
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = _unknown_key(model, raw)
        out.append(f"{doc.path}:{doc.line_of(loc)}: {dotted}: {message}")
    return out


def parse_model(doc: YamlDocument, model: type[M]) -> M:
    """Validate ``doc`` against ``model``; raise :class:`ConfigError` listing every problem."""
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError("\n".join(format_errors(doc, exc, model))) from exc
