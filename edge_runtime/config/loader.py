"""Read the daemon's config: YAML -> ``${ENV}`` substitution -> relative paths -> pydantic -> secrets.

Every problem is collected and reported at once as ``FILE:LINE: dotted.key.path: message``.
Relative paths in the file are relative to the file's own folder (so a config works the same
from any working directory and under systemd). The files it names are checked as the service
will open them (:mod:`edge_runtime.config.files`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_runtime.config.files import (
    Disk,
    file_problem,
    folder_problem,
    input_problem,
    password_file,
    public_key_problem,
    read_secret,
    tls_problem,
)
from edge_runtime.config.sections import Config
from edge_runtime.config.yamlsource import PathKey, YamlDocument, format_errors, load_yaml
from edge_runtime.config.yamltree import dotted, printable
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
    ("control", "state_dir"),
    ("metrics", "textfile"),
)


def _substitute(value: Any, at: PathKey, problems: list[tuple[PathKey, str]], env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*at, k), problems, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*at, i), problems, env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
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


def _file_problems(cfg: Config, disk: Disk) -> list[tuple[PathKey, str]]:
    """Inputs the daemon reads at start, checked as it will open them (outputs are made on demand).

    Models are only looked at here (a file or a readable folder); ``run`` loads them.
    """
    out: list[tuple[PathKey, str]] = []

    def add(loc: PathKey, problem: str | None) -> None:
        if problem is not None:
            out.append((loc, problem))

    for name, model in cfg.models.items():
        add(("models", name, "path"), input_problem(disk, model.path))
    for i, p in enumerate(cfg.pipelines):
        if p.source.type == "video":
            add(("pipelines", i, "source", "path"), file_problem(disk, p.source.path))
        elif p.source.type == "images":
            add(("pipelines", i, "source", "path"), folder_problem(disk, p.source.path))
    for i, pem in enumerate(cfg.updates.public_keys):
        add(("updates", "public_keys", i), file_problem(disk, pem, public_key_problem))
    tls = cfg.mqtt.tls
    if tls is not None:
        named = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
        bad = [(name, file_problem(disk, path)) for name, path in named.items() if path is not None]
        for name, problem in bad:
            add(("mqtt", "tls", name), problem)
        if not any(problem for _, problem in bad):
            out += _tls_content(disk, tls.ca_file, tls.cert_file, tls.key_file)
    return out


def _tls_content(disk: Disk, ca: Path, cert: Path | None, key: Path | None) -> list[tuple[PathKey, str]]:
    """What OpenSSL says about the TLS files (not checked for an encrypted credential)."""
    here = [disk.here(p) if p is not None else (None, None) for p in (ca, cert, key)]
    if any(found is not None and (found.encrypted or found.path is None) for _, found in here):
        return []
    ca_here, cert_here, key_here = (path for path, _ in here)
    assert ca_here is not None
    problem = tls_problem(ca_here, cert_here, key_here)
    return [] if problem is None else [(("mqtt", "tls", problem[0]), problem[1])]


def _password(cfg: Config, disk: Disk, base: Path) -> tuple[str | None, str | None]:
    """The MQTT password (from the file if one is named) and the problem finding it, if any."""
    name = cfg.mqtt.password_file
    if name is None:
        return cfg.mqtt.password, None
    here, problem = password_file(disk, name, base)
    if here is None:
        return None, problem
    try:
        return read_secret(here).decode("utf-8").rstrip("\r\n"), None
    except OSError as exc:
        return None, f"password file {here} cannot be read ({exc.strerror})"
    except ValueError as exc:  # UnicodeDecodeError is one
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        return None, f"password file {here}: {reason}"


def _target_folder(path: Path, disk: Disk) -> Path:
    """The config's folder as the service sees it (below ``disk.root`` for a staged image)."""
    folder = path.resolve().parent
    if disk.root != Path("/") and folder.is_relative_to(disk.root.resolve()):
        return Path("/") / folder.relative_to(disk.root.resolve())
    return folder


def _reported(path: Path, lines: list[str]) -> list[str]:
    """At most MAX_PROBLEMS lines, control characters escaped: a hostile file must not fill a
    terminal or the journal, nor write to them what it likes."""
    if len(lines) > MAX_PROBLEMS:
        lines = [*lines[:MAX_PROBLEMS], f"{path}: ... and {len(lines) - MAX_PROBLEMS} more problems"]
    return [printable(line) for line in lines]


def collect_problems(
    path: Path, disk: Disk | None = None, *, folder: Path | None = None
) -> tuple[Config | None, list[str]]:
    """Parse ``path``; the Config (or None) and every problem as ``FILE:LINE: key: message``.

    ``disk`` says where the named files are (default: as the running service sees them); no
    exception but a bug escapes: a file that is not a config at all is one problem line.
    ``folder``: relative paths are relative to it instead of ``path``'s folder (a remote config,
    stored in the state folder, names files as the local config file beside them does).
    """
    disk = disk or Disk.of_service()
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        return None, _reported(path, str(exc).splitlines())
    if not isinstance(doc.data, dict):
        return None, _reported(path, [f"{path}:1: (top level): expected a mapping of sections"])

    def where(loc: PathKey, msg: str) -> str:
        return f"{path}:{doc.line_of(loc)}: {dotted(loc)}: {msg}"

    problems: list[tuple[PathKey, str]] = []
    env = dict(os.environ)
    if disk.credentials_dir is not None:
        env.setdefault("CREDENTIALS_DIRECTORY", str(disk.credentials_dir))
    data = _substitute(doc.data, (), problems, env)
    base = folder if folder is not None else _target_folder(path, disk)
    for pattern in _PATH_KEYS:
        _resolve_paths(data, pattern, base)
    lines = [where(loc, msg) for loc, msg in problems]
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        return None, _reported(path, lines + format_errors(YamlDocument(path, data, doc.lines), exc, Config))
    lines += [where(loc, msg) for loc, msg in cfg.problems() + _file_problems(cfg, disk)]
    password, problem = _password(cfg, disk, base)
    if problem is not None:
        lines.append(where(("mqtt", "password_file"), problem))
    if lines:
        return None, _reported(path, lines)
    if password != cfg.mqtt.password:
        cfg = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"password": password})})
    return cfg, []


def load_config(path: Path, disk: Disk | None = None, *, folder: Path | None = None) -> Config:
    """The validated Config, or ConfigError listing every problem (one per line)."""
    cfg, problems = collect_problems(path, disk, folder=folder)
    if cfg is None:
        raise ConfigError("\n".join(problems))
    return cfg
