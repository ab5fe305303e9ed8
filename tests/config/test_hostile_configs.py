"""Hostile and odd config files: exit 2 and one ``FILE:LINE: key: message`` line, never a traceback.

Each kind used to hang ``validate``/``run`` (alias expansion) or end them in a traceback and exit 1
(which systemd restarts): billion laughs, recursive aliases, 30,000-deep nesting, merge keys, a
5,000-digit integer. The YAML is now built from the parser's events within bounds
(:mod:`edge_runtime.config.yamltree`); these tests hold every kind to exit 2 with its line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest

from edge_runtime.config.loader import MAX_PROBLEMS, collect_problems
from edge_runtime.config.yamlsource import YamlLimits, load_yaml
from edge_runtime.errors import ConfigError

from ..conftest import ROOT, run_cli, run_cli_process
from .test_referenced_files import unprivileged

MODEL = ROOT / "models" / "ssdlite_mobilenet_v2_person"
VALID = f"""\
models:
  person:
    path: {MODEL}
pipelines:
  - name: front
    model: person
    source: {{type: synthetic}}
"""


def laughs(levels: int = 9) -> str:
    """The "billion laughs": each level nine aliases of the one above (9^levels strings)."""
    out = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    out += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(out) + "\n"


def alias_tower(height: int) -> str:
    """Each anchor a list holding the previous one: depth grows by aliases, not by indentation."""
    lines = ["t0: &t0 [x]"] + [f"t{i}: &t{i} [*t{i - 1}]" for i in range(1, height)]
    return "\n".join(lines) + "\n"


# name -> (file content, line of the problem, a fragment of its message)
HOSTILE: dict[str, tuple[str | bytes, int, str]] = {
    "billion laughs": (laughs(), 5, "more than 50000 values"),
    "recursive alias (list)": ("a: &a [1, *a]\n", 1, "refers to a node that contains it"),
    "recursive alias (mapping)": ("a: &a\n  b:\n    c: *a\n", 3, "refers to a node that contains it"),
    "undefined alias": ("mqtt:\n  host: *nowhere\n", 2, "names no anchor"),
    "anchor defined twice": ("a: &x 1\nb: &x 2\n", 2, "anchor &x is defined twice"),
    "30,000-deep flow nesting": ("a: " + "[" * 30_000 + "]" * 30_000 + "\n", 1, "nest"),
    "30,000-deep mapping nesting": ("a: " + "{x: " * 30_000 + "1" + "}" * 30_000 + "\n", 1, "nest"),
    "1,000-deep block nesting": (
        "".join(" " * i + "k:\n" for i in range(1000)) + " " * 1000 + "k: 1\n",
        65,
        "nested deeper than 64 levels",
    ),
    "depth through aliases": (alias_tower(80), 64, "nests deeper than 64 levels"),
    "5,000-digit integer": (VALID + "mqtt:\n  port: " + "9" * 5000 + "\n", 9, "mqtt.port: integer too large"),
    "30-digit integer": (VALID + "outbox:\n  max_bytes: " + "9" * 30 + "\n", 9, "integer too large"),
    "huge hex integer": (VALID + "outbox:\n  max_bytes: 0x" + "f" * 40 + "\n", 9, "integer too large"),
    "merge key of a scalar": (
        VALID.replace("    path:", "    <<: 3\n    path:"),
        3,
        "models.person.<<: a merge key (<<) takes a mapping or a list of mappings",
    ),
    "merge key of an undefined alias": (
        VALID.replace("    path:", "    <<: *base\n    path:"),
        3,
        "no anchor",
    ),
    "two merge keys": (
        "models:\n  m: &m {threads: 1}\n  n:\n    <<: *m\n    <<: *m\n",
        5,
        "duplicate key (first at line 4)",
    ),
    "python object tag": (
        VALID + "device:\n  id: !!python/object/apply:os.system [id]\n",
        9,
        "unsupported tag",
    ),
    "set tag": (VALID + "device:\n  groups: !!set {a, b}\n", 9, "unsupported tag"),
    "custom tag": (VALID + "mqtt:\n  host: !vault secret/broker\n", 9, "unsupported tag !vault"),
    "binary that is not base64": (
        VALID + "mqtt:\n  host: !!binary 'abc'\n",
        9,
        "cannot read 'abc' as binary",
    ),
    "list as a key": (VALID + "? [a, b]\n: 1\n", 8, "a key must be a plain value"),
    "duplicate section": (VALID + "models:\n  x: {path: y}\n", 8, "models: duplicate key (first at line 1)"),
    "two documents": (VALID + "---\nmqtt: {port: 1}\n", 8, "a second YAML document"),
    "date that is not one": (
        VALID + "device:\n  id: 2024-13-45\n",
        9,
        "cannot read '2024-13-45' as timestamp",
    ),
    "infinite interval": (
        VALID + "health:\n  interval_s: .inf\n",
        9,
        "health.interval_s: Input should be a finite",
    ),
    "NaN keepalive": (VALID + "mqtt:\n  reconnect_max_s: .nan\n", 9, "mqtt.reconnect_max_s:"),
    "NUL in a path": (VALID.replace(str(MODEL), '"/tmp/a\\0b"'), 3, "cannot be checked"),
    "terminal escapes in a key": (VALID + '"\\e[2J\\e[31mred": 1\n', 8, "\\x1b[2J\\x1b[31mred: unknown key"),
    "control character": (VALID + "mqtt:\n  host: a\x07b\n", 9, "invalid YAML"),
    "not UTF-8": (VALID.encode() + b"mqtt:\n  host: \xff\xfe\n", 9, "not UTF-8 text"),
    "tab indentation": (VALID + "mqtt:\n\thost: x\n", 9, "invalid YAML"),
    "unclosed bracket": (VALID + "device:\n  groups: [a, b\n", 10, "invalid YAML"),
    "a list, not a mapping": ("- models\n- pipelines\n", 1, "expected a mapping of sections"),
    "a bare string": ("hello\n", 1, "expected a mapping of sections"),
}


def _write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "edge.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_file_gives_exit_2_and_one_line_with_its_line(tmp_path: Path, kind: str) -> None:
    """``validate`` and ``run`` exit 2 with ``FILE:LINE: ...`` naming the problem; no traceback."""
    content, line, fragment = HOSTILE[kind]
    path = _write(tmp_path, content)
    result = run_cli("validate", path)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"{path}:{line}: "), lines[0]
    assert fragment in lines[0]
    assert len(lines[0]) < 600  # nothing of the file is echoed at length
    assert lines[0].isprintable()  # control characters of the file come out escaped

    run = run_cli("run", path)
    assert run.code == 2 and f"{path}:{line}: " in run.err and "Traceback" not in run.err


@pytest.mark.parametrize("kind", ["billion laughs", "30,000-deep flow nesting", "5,000-digit integer"])
def test_hostile_file_through_the_real_command(tmp_path: Path, kind: str) -> None:
    """The installed command line, as systemd runs it: exit 2 (no restart), one line."""
    content, line, _ = HOSTILE[kind]
    path = _write(tmp_path, content)
    for command in ("validate", "run"):
        result = run_cli_process(command, path)
        assert result.code == 2, result.err
        assert f"{path}:{line}: " in result.err and "Traceback" not in result.err


def test_merge_keys_merge_with_the_mappings_own_keys_first_and_report_the_written_line(
    tmp_path: Path,
) -> None:
    """``<<``: own keys win, then earlier merged mappings; a merged key's error names its own line."""
    text = f"""\
models:
  person: &person
    path: {MODEL}
    threads: 1
    accelerator: cpu
  copy:
    <<: *person
    threads: 2
  mixed:
    <<: [{{accelerator: xnnpack, top_k: 3}}, *person]
pipelines:
  - &front {{name: front, model: person, source: {{type: synthetic}}}}
  - <<: *front
    name: back
"""
    cfg, problems = collect_problems(_write(tmp_path, text))
    assert problems == [] and cfg is not None
    assert (cfg.models["copy"].threads, cfg.models["copy"].accelerator) == (2, "cpu")
    assert cfg.models["copy"].path == MODEL
    assert (cfg.models["mixed"].accelerator, cfg.models["mixed"].top_k) == ("xnnpack", 3)
    assert cfg.models["mixed"].threads == 1
    assert [p.name for p in cfg.pipelines] == ["front", "back"]

    path = _write(tmp_path, text.replace("threads: 1", "threads: 99"))
    _, problems = collect_problems(path)
    # models.mixed.threads comes from line 4 (through the merge), models.copy has its own line 8
    assert f"{path}:4: models.person.threads: Input should be less than or equal to 64" in problems
    assert f"{path}:4: models.mixed.threads: Input should be less than or equal to 64" in problems
    assert not any("models.copy.threads" in p for p in problems)


def test_a_quoted_merge_key_is_an_ordinary_key(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID.replace("    path:", "    '<<': {threads: 1}\n    path:"))
    _, problems = collect_problems(path)
    assert problems == [f"{path}:3: models.person.<<: unknown key"]


def test_aliases_within_the_limits_work_and_errors_point_at_the_anchor(tmp_path: Path) -> None:
    """An alias is the anchored value again; a bad value reached through it names the anchor's line."""
    text = VALID + "device:\n  groups: &g [a, b]\nupdates: {}\n"
    cfg, problems = collect_problems(_write(tmp_path, text))
    assert problems == [] and cfg is not None and cfg.device.groups == ["a", "b"]
    text = VALID.replace("source: {type: synthetic}", "source: &s {type: synthetic, fps: -1}") + (
        "  - {name: back, model: person, source: *s}\n"
    )
    path = _write(tmp_path, text)
    _, problems = collect_problems(path)
    assert [p.split(": ")[0:2] for p in problems] == [
        [f"{path}:7", "pipelines.0.source.fps"],
        [f"{path}:7", "pipelines.1.source.fps"],
    ]


@pytest.mark.parametrize(
    ("make", "ok_at", "refused_at"),
    [
        (lambda n: "a: " + "[" * n + "]" * n + "\n", 7, 8),  # the mapping is level 0, each list one more
        (alias_tower, 7, 8),
    ],
)
def test_depth_limit_is_exact(
    tmp_path: Path, make: Callable[[int], str], ok_at: int, refused_at: int
) -> None:
    limits = YamlLimits(max_depth=8)
    load_yaml(_write(tmp_path, make(ok_at)), limits)
    with pytest.raises(ConfigError, match="deeper than 8 levels"):
        load_yaml(_write(tmp_path, make(refused_at)), limits)


def test_node_limit_counts_what_aliases_stand_for(tmp_path: Path) -> None:
    """Three levels of nine aliases: 9 + 81 + 729 strings, plus the lists; refused at 800 nodes."""
    path = _write(tmp_path, laughs(3))
    assert load_yaml(path, YamlLimits(max_nodes=1000)).data["a2"][8][8][8] == "lol"
    with pytest.raises(ConfigError, match=rf"{path}:3: a2\.\d: more than 800 values"):
        load_yaml(path, YamlLimits(max_nodes=800))


def test_many_problems_are_capped(tmp_path: Path) -> None:
    """Thousands of bad keys: MAX_PROBLEMS lines and a count, not thousands of lines."""
    text = VALID + "mqtt:\n" + "".join(f"  bad{i}: 1\n" for i in range(3000))
    path = _write(tmp_path, text)
    result = run_cli("validate", path)
    lines = result.err.splitlines()
    assert result.code == 2 and len(lines) == MAX_PROBLEMS + 1
    assert lines[-1] == f"{path}: ... and {3000 - MAX_PROBLEMS} more problems"


@pytest.mark.parametrize("kind", ["directory", "fifo", "too large", "missing", "unreadable"])
def test_a_config_path_that_is_not_a_config_file(tmp_path: Path, kind: str) -> None:
    """Exit 2 at once: a FIFO is not opened (it would block), a huge file is not read whole."""
    path = tmp_path / "edge.yaml"
    expected = {
        "directory": "a directory, not a file",
        "fifo": "not a regular file",
        "too large": "larger than 1024 KiB",
        "missing": "file not found",
        "unreadable": "not readable (permission denied)",
    }[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "too large":
        path.write_text("# padding\n" * 200_000)
    elif kind == "unreadable":
        path.write_text(VALID)
        path.chmod(0)
    with unprivileged() if kind == "unreadable" else nullcontext():  # root reads every file
        result = run_cli("validate", path)
    assert result.code == 2
    assert re.fullmatch(rf"{re.escape(f'{path}: {expected}')}[^\n]*\n", result.err), result.err
