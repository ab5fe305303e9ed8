"""Read the daemon's config: YAML -> ``${ENV}`` substitution -> relative paths -> pydantic -> secrets.

Every problem is collected and reported at once as ``FILE:LINE: dotted.key.path: message``.
Relative paths in the file are relative to the file's own folder (so a config works the same
from any working directory and under systemd).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_runtime.config.sections import Config
from edge_runtime.config.yamlsource import PathKey, YamlDocument, format_errors, load_yaml
from edge_runtime.config.yamltree import dotted
from edge_runtime.errors import ConfigError

MAX_PROBLEMS = 50  # lines reported for one file; the rest is counted

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# key paths (with "*" for any key/index) whose values are file paths
_PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("models", "*", "path"),
    ("pipelines", "*", "source", "path"),
    ("outbox", "path"),
    ("updates", "store"),
    ("updates", "public_keys", "*"),
    ("mqtt", "tls", "ca_file"),
    ("mqtt", "tls", "cert_file"),
    ("mqtt", "tls", "key_file"),
)


def _substitute(value: Any, at: PathKey, problems: list[tuple[PathKey, str]]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*at, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*at, i), problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        problems.append((at, f"environment variable {name} is not set"))
        return m.group(0)

    return _ENV.sub(repl, value)


def _resolve_paths(data: Any, pattern: tuple[str, ...], base: Path) -> None:
    """Make relative path values under ``pattern`` absolute against ``base`` (in place); ``-`` is stdin."""
    if not pattern or data is None:
        return
    head, rest = pattern[0], pattern[1:]
    if isinstance(data, dict):
        keys = list(data) if head == "*" else [head] if head in data else []
    elif isinstance(data, list) and head == "*":
        keys = list(range(len(data)))
    else:
        return
    for key in keys:
        if rest:
            _resolve_paths(data[key], rest, base)
        elif isinstance(data[key], str) and data[key] not in ("", "-") and not Path(data[key]).is_absolute():
            data[key] = os.path.normpath(base / data[key])


def _read_password(cfg: Config, base: Path) -> str | None:
    """The MQTT password, from the file if one is named (systemd credentials first)."""
    name = cfg.mqtt.password_file
    if name is None:
        return cfg.mqtt.password
    candidates = [name] if name.is_absolute() else []
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not name.is_absolute():
        candidates += [Path(creds) / name] if creds else []
        candidates.append(base / name)
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8").rstrip("\r\n")
    raise FileNotFoundError(f"password file {name} not found (looked in {', '.join(map(str, candidates))})")


def _missing_files(cfg: Config) -> list[tuple[PathKey, str]]:
    """Inputs that must exist before the daemon starts (outputs are created on demand)."""
    out: list[tuple[PathKey, str]] = []
    for name, model in cfg.models.items():
        if not model.path.exists():
            out.append((("models", name, "path"), f"{model.path} does not exist"))
    for i, p in enumerate(cfg.pipelines):
        if p.source.type == "video" and not p.source.path.is_file():
            out.append((("pipelines", i, "source", "path"), f"{p.source.path} does not exist"))
    for i, key in enumerate(cfg.updates.public_keys):
        if not key.is_file():
            out.append((("updates", "public_keys", i), f"{key} does not exist"))
    return out


def _capped(path: Path, lines: list[str]) -> list[str]:
    """At most MAX_PROBLEMS lines: a hostile file must not fill a terminal or the journal."""
    if len(lines) <= MAX_PROBLEMS:
        return lines
    return [*lines[:MAX_PROBLEMS], f"{path}: ... and {len(lines) - MAX_PROBLEMS} more problems"]


def collect_problems(path: Path) -> tuple[Config | None, list[str]]:
    """Parse ``path``; the Config (or None) and every problem as ``FILE:LINE: key: message``.

    No exception but a bug escapes: a file that is not a config at all is one problem line.
    """
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        return None, str(exc).splitlines()
    if not isinstance(doc.data, dict):
        return None, [f"{path}:1: (top level): expected a mapping of sections"]
    problems: list[tuple[PathKey, str]] = []
    data = _substitute(doc.data, (), problems)
    base = path.resolve().parent
    for pattern in _PATH_KEYS:
        _resolve_paths(data, pattern, base)
    lines = [f"{path}:{doc.line_of(loc)}: {dotted(loc)}: {msg}" for loc, msg in problems]
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        return None, _capped(path, lines + format_errors(YamlDocument(path, data, doc.lines), exc, Config))
    found = cfg.problems() + _missing_files(cfg)
    lines += [f"{path}:{doc.line_of(loc)}: {dotted(loc)}: {msg}" for loc, msg in found]
    try:
        password = _read_password(cfg, base)
    except (OSError, UnicodeDecodeError) as exc:
        lines.append(f"{path}:{doc.line_of(('mqtt', 'password_file'))}: mqtt.password_file: {exc}")
        password = None
    if lines:
        return None, _capped(path, lines)
    if password != cfg.mqtt.password:
        cfg = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"password": password})})
    return cfg, []


def load_config(path: Path) -> Config:
    """The validated Config, or ConfigError listing every problem (one per line)."""
    cfg, problems = collect_problems(path)
    if cfg is None:
        raise ConfigError("\n".join(problems))
    return cfg
