"""YAML text -> plain data and the line of every key, within bounds a hostile file cannot pass.

PyYAML's own composer recurses once per nesting level (30,000 nested brackets end in
RecursionError) and expands aliases without limit (ten lines of nested aliases, "billion laughs",
stand for 10^9 nodes). So the data is built here from the parser's events, in one loop with an
explicit stack, and a file is refused with ``FILE:LINE: key: message`` when:

* it nests deeper than ``max_depth`` levels (an alias brings the depth of its anchor along);
* it has more than ``max_nodes`` nodes, an alias counting as every node it stands for;
* an alias names no anchor, or a node that contains it (a cycle), or an anchor is defined twice;
* an integer is larger than 64 bits (its digits are not even converted past ``max_int_chars``);
* a tag is not one of YAML's core scalar tags (``!!str``, ``!!int``, ...), ``!!map`` or ``!!seq``;
* a mapping has the same key twice, or a mapping or list as a key;
* the file holds more than one document.

Merge keys (``<<: *defaults``, or a list of aliases) work as in YAML 1.1: the mapping's own keys
win over merged ones, and an earlier merged mapping over a later one. A merged key reports the
line where it is written (in the anchored mapping), like every key that an alias brings along.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from edge_runtime.errors import ConfigError

PathKey = tuple[Any, ...]

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("null", "bool", "int", "float", "str", "binary", "timestamp")}
_MAP_TAGS = {None, "!", _CORE + "map"}
_SEQ_TAGS = {None, "!", _CORE + "seq"}
_INT = _CORE + "int"


class _MergeKey:
    """The ``<<`` of a merge key in key paths (not a string: a quoted '<<' is an ordinary key)."""

    def __repr__(self) -> str:
        return "<<"


_MERGE = _MergeKey()
_INT_LIMIT = 2**64
# The C parser (libyaml) is ~20x faster than the pure-Python one, which matters for a file near
# the size limit; both report errors with a line.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class YamlLimits:
    """Bounds on one YAML file; far above what a config or a model.yaml needs."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 64
    max_nodes: int = 50_000
    max_int_chars: int = 100


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (with ``…``): file content echoed in a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def printable(text: str) -> str:
    """``text`` with control characters (a NUL in a path, an escape sequence) written as escapes."""
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def dotted(loc: Iterable[Any]) -> str:
    """``a.0.b`` for a key path, each key shortened; ``(top level)`` for the empty path."""
    text = ".".join(shorten(str(part), 40) for part in loc)
    return shorten(text, 200) or "(top level)"


def _tag(tag: str) -> str:
    """A tag as it is written: ``!!set``, ``!vault``."""
    return shorten("!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag)


@dataclass(frozen=True, slots=True)
class _Anchor:
    data: Any
    at: PathKey
    entries: tuple[int, int]  # the range of the node's subtree in the builder's entries
    size: int
    height: int


@dataclass(slots=True)
class _Open:
    """A mapping or sequence whose end event has not come yet."""

    at: PathKey
    data: Any  # dict or list
    anchor: str | None
    line: int
    first: int  # index of its subtree's first entry
    size: int = 1
    height: int = 0
    key: Any = None
    has_key: bool = False
    key_line: int = 0
    value_first: int = 0  # index of the first entry of the value being built
    explicit: dict[Any, int] = field(default_factory=dict)  # own keys -> their line
    merge: tuple[Any, int, int] | None = None  # the '<<' value: data, its first entry, its line


class _Builder:
    def __init__(self, source: Path, limits: YamlLimits) -> None:
        self.source, self.limits = source, limits
        self.entries: list[tuple[PathKey, int]] = []  # (path, line), in document order
        self.anchors: dict[str, _Anchor] = {}
        self.open_anchors: set[str] = set()
        self.stack: list[_Open] = []
        self.nodes = 0
        self.root: Any = None
        self.documents = 0
        self.resolver = Resolver()
        self.constructor = SafeConstructor()

    def fail(self, line: int, at: PathKey, message: str) -> ConfigError:
        return ConfigError(f"{self.source}:{line}: {dotted(at)}: {message}")

    # -- events ------------------------------------------------------------------------------
    def feed(self, event: yaml.Event) -> None:
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.fail(line, (), "a second YAML document (---): the file must hold one")
        elif isinstance(event, yaml.ScalarEvent):
            self._scalar(event, line)
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event, line)
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            self._start(event, line)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            self._end()

    def _where(self, line: int) -> tuple[PathKey, bool]:
        """The path of the node that starts now, and whether it is a mapping key."""
        if not self.stack:
            self.entries.append(((), line))
            return (), False
        parent = self.stack[-1]
        if isinstance(parent.data, list):
            at = (*parent.at, len(parent.data))
            self.entries.append((at, line))
            return at, False
        if not parent.has_key:
            return (*parent.at, "<key>"), True
        return (*parent.at, parent.key), False

    def _count(self, n: int, line: int, at: PathKey) -> None:
        self.nodes += n
        if self.nodes > self.limits.max_nodes:
            raise self.fail(
                line, at, f"more than {self.limits.max_nodes} values (aliases count as what they stand for)"
            )

    def _scalar(self, event: yaml.ScalarEvent, line: int) -> None:
        at, is_key = self._where(line)
        self._count(1, line, at)
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        if is_key and tag == _CORE + "merge":
            self._key(_MERGE, line)
            return
        value = self._construct(tag, event, line, at)
        if event.anchor is not None:
            self._define(event.anchor, line, at, _Anchor(value, at, (len(self.entries),) * 2, 1, 0))
        if is_key:
            self._key(value, line)
        else:
            self._place(value, 1, 0)

    def _construct(self, tag: str, event: yaml.ScalarEvent, line: int, at: PathKey) -> Any:
        if tag not in _SCALAR_TAGS:
            raise self.fail(line, at, f"unsupported tag {_tag(tag)} (use plain values)")
        text = event.value
        if tag == _INT and len(text) > self.limits.max_int_chars:
            raise self.fail(line, at, f"integer too large ({len(text)} digits; at most 64 bits)")
        node = yaml.ScalarNode(tag, text, None, None, event.style)  # the line is ours to report
        try:
            value = SafeConstructor.yaml_constructors[tag](self.constructor, node)
        except (ValueError, TypeError, AttributeError, ArithmeticError, yaml.YAMLError) as exc:
            why = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else str(exc)
            why = shorten((why.splitlines() or [type(exc).__name__])[0], 200)
            raise self.fail(
                line, at, f"cannot read {shorten(text)!r} as {tag.removeprefix(_CORE)}: {why}"
            ) from None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _INT_LIMIT:
            raise self.fail(line, at, f"integer too large ({len(text)} digits; at most 64 bits)")
        return value

    def _alias(self, event: yaml.AliasEvent, line: int) -> None:
        at, is_key = self._where(line)
        name = str(event.anchor)
        if name in self.open_anchors:
            raise self.fail(line, at, f"alias *{shorten(name)} refers to a node that contains it")
        anchor = self.anchors.get(name)
        if anchor is None:
            raise self.fail(line, at, f"alias *{shorten(name)} names no anchor (&{shorten(name)}) above it")
        self._count(anchor.size, line, at)
        if len(self.stack) + anchor.height > self.limits.max_depth:
            raise self.fail(
                line, at, f"alias *{shorten(name)} nests deeper than {self.limits.max_depth} levels"
            )
        if is_key:
            if isinstance(anchor.data, (dict, list)):
                raise self.fail(line, at, "a key must be a plain value, not a mapping or a list")
            self._key(anchor.data, line)
            return
        first, last = anchor.entries
        self.entries += [((*at, *path[len(anchor.at) :]), ln) for path, ln in self.entries[first:last]]
        self._place(anchor.data, anchor.size, anchor.height)

    def _start(self, event: yaml.MappingStartEvent | yaml.SequenceStartEvent, line: int) -> None:
        at, is_key = self._where(line)
        if is_key:
            raise self.fail(line, at[:-1], "a key must be a plain value, not a mapping or a list")
        if len(self.stack) >= self.limits.max_depth:
            raise self.fail(line, at, f"nested deeper than {self.limits.max_depth} levels")
        self._count(1, line, at)
        mapping = isinstance(event, yaml.MappingStartEvent)
        if event.tag not in (_MAP_TAGS if mapping else _SEQ_TAGS):
            raise self.fail(
                line, at, f"unsupported tag {_tag(str(event.tag))} (use plain mappings and lists)"
            )
        if event.anchor is not None:
            self._define(event.anchor, line, at, None)
            self.open_anchors.add(event.anchor)
        data: Any = {} if mapping else []
        self.stack.append(_Open(at, data, event.anchor, line, len(self.entries)))

    def _end(self) -> None:
        node = self.stack.pop()
        if isinstance(node.data, dict) and node.merge is not None:
            self._apply_merge(node)
        if node.anchor is not None:
            self.open_anchors.discard(node.anchor)
            span = (node.first, len(self.entries))
            self.anchors[node.anchor] = _Anchor(node.data, node.at, span, node.size, node.height)
        self._place(node.data, node.size, node.height)

    # -- building ----------------------------------------------------------------------------
    def _define(self, name: str, line: int, at: PathKey, anchor: _Anchor | None) -> None:
        if name in self.anchors or name in self.open_anchors:
            raise self.fail(line, at, f"anchor &{shorten(name)} is defined twice")
        if anchor is not None:
            self.anchors[name] = anchor

    def _key(self, key: Any, line: int) -> None:
        parent = self.stack[-1]
        if key in parent.explicit or (key is _MERGE and parent.merge is not None):
            first = parent.merge[2] if key is _MERGE and parent.merge else parent.explicit[key]
            raise self.fail(line, (*parent.at, key), f"duplicate key (first at line {first})")
        parent.key, parent.has_key, parent.key_line = key, True, line
        if key is not _MERGE:
            parent.explicit[key] = line
        self.entries.append(((*parent.at, key), line))
        parent.value_first = len(self.entries)

    def _place(self, value: Any, size: int, height: int) -> None:
        """Attach a finished node to its parent (or make it the document)."""
        if not self.stack:
            self.root = value
            return
        parent = self.stack[-1]
        parent.size += size
        parent.height = max(parent.height, height + 1)
        if isinstance(parent.data, list):
            parent.data.append(value)
            return
        if parent.key is _MERGE:
            parent.merge = (value, parent.value_first, parent.key_line)
        else:
            parent.data[parent.key] = value
        parent.has_key = False

    def _apply_merge(self, node: _Open) -> None:
        """``<<``: the keys of the merged mapping(s) that the mapping does not set itself."""
        assert node.merge is not None
        value, first, line = node.merge
        merge_at = (*node.at, _MERGE)
        single = isinstance(value, dict)
        sources = [value] if single else value
        if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
            raise self.fail(line, merge_at, "a merge key (<<) takes a mapping or a list of mappings")
        chosen: dict[Any, int] = {}
        for i, source in enumerate(sources):
            for key in source:
                if key not in node.explicit and key not in chosen:
                    chosen[key] = i
                    node.data[key] = source[key]
        prefix = len(merge_at)
        moved = []
        for path, ln in self.entries[first:]:
            if path[:prefix] != merge_at:
                continue
            rel = path[prefix:]
            i, rest = (0, rel) if single else (rel[0] if rel else -1, rel[1:])
            if rest and chosen.get(rest[0], -2) == i:
                moved.append(((*node.at, *rest), ln))
        self.entries += moved


def build(text: str, source: Path, limits: YamlLimits) -> tuple[Any, dict[PathKey, int]]:
    """The data of YAML ``text`` (None when empty) and the line of every key and item.

    Raises ConfigError (``FILE:LINE: ...``) for a syntax error or a file past ``limits``.
    """
    builder = _Builder(source, limits)
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            builder.feed(event)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"{source}:{line}: invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError(f"{source}:{line}: invalid YAML: {exc.reason} (character {char})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}:1: invalid YAML: {shorten(str(exc).splitlines()[0], 200)}") from None
    lines: dict[PathKey, int] = {}
    for path, line in builder.entries:
        try:
            lines.setdefault(path, line)
        except TypeError:  # an unhashable key never gets here; a NaN key just has no line
            continue
    return builder.root, lines
