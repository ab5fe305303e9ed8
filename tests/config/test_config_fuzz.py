"""Mutations of every example config through ``validate``: exit 0 or 2, no traceback, no hang.

Deterministic (a fixed seed per example). Each mutated file is checked with ``validate --root``
in a staged copy of the repository where every unmutated example is valid (its models, samples
and the CA it names are there), so a mutation that keeps the file valid exercises the whole of
``validate`` (exit 0), not only its errors.
The time bound per file is a hang detector (a "billion laughs" file used to take minutes), far
above what a file takes.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest

from ..conftest import ROOT, CliResult, run_cli, run_cli_process
from .test_config import staged_repository

EXAMPLES = sorted((ROOT / "configs").glob("*.yaml"))
IN_PROCESS = 60  # mutated files per example, in-process
THROUGH_CLI = 3  # per example, through `python -m edge_runtime validate`
HANG_S = 10.0  # one file taking longer than this is a hang

# hostile or odd values (also inserted anywhere)
VALUES = [
    "~", "null", ".inf", ".nan", "-.inf", "1e999", "0x" + "f" * 40, "9" * 60, "9" * 5000,
    "2024-13-45", "1:2:3:4:5:6:7:8:9", "${X}", "${", "${HOME}", "${UNSET_VAR_X:-1}", "../",
    "/dev/zero", "[" * 200, "{a: " * 100, "x" * 100_000, "*a", "&a {x: 1}", "[*a]", "{<<: 1}",
    "''", "-1", "0", "true",
]  # fmt: skip
# YAML syntax and characters, inserted anywhere
TOKENS = [
    "&a ", "*a", "*b", "<<: *a", "<<: [*a, *a]", "[", "]", "{", "}", ": ", "- ", "? ", ",", "#",
    "|", ">", "'", '"', "!!", "!!python/object:os.system ", "!!set ", "!!binary ", "!custom ",
    "%YAML 1.1\n", "---\n", "...\n", "\t", "\x00", "\x07", "\ufeff", "\u2028", "\x85", "é",
    *VALUES,
]  # fmt: skip
BOMB = 'b0: &b0 ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"b{i}: &b{i} [{','.join([f'*b{i - 1}'] * 9)}]\n" for i in range(1, 9)
)


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True) or [""]


def _delete_line(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    del lines[rng.randrange(len(lines))]
    return "".join(lines)


def _duplicate_line(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return "".join(lines)


def _swap_lines(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


def _indent(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    shift = rng.choice([-4, -2, -1, 1, 2, 4])
    lines[i] = " " * shift + lines[i] if shift > 0 else lines[i][-shift:]
    return "".join(lines)


def _insert_token(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + rng.choice(TOKENS) + text[at:]


def _replace_value(rng: random.Random, text: str) -> str:
    """A value after some ``key:`` replaced by a hostile one."""
    spots = [i for i, line in enumerate(_lines(text)) if ": " in line and not line.lstrip().startswith("#")]
    if not spots:
        return text
    lines = _lines(text)
    i = rng.choice(spots)
    key = lines[i].split(": ", 1)[0]
    value = rng.choice(VALUES)
    lines[i] = f"{key}: {value}\n"
    return "".join(lines)


def _truncate(rng: random.Random, text: str) -> str:
    return text[: rng.randrange(len(text) + 1)]


def _flip_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _append_bomb(rng: random.Random, text: str) -> str:
    return text + BOMB if rng.random() < 0.5 else BOMB + text


TEXT_MUTATIONS: list[Callable[[random.Random, str], str]] = [
    _delete_line,
    _duplicate_line,
    _swap_lines,
    _indent,
    _insert_token,
    _insert_token,
    _replace_value,
    _truncate,
    _append_bomb,
]


def mutate(rng: random.Random, text: str) -> bytes:
    """One to three mutations of ``text`` (sometimes at the byte level)."""
    for _ in range(rng.randint(1, 3)):
        text = rng.choice(TEXT_MUTATIONS)(rng, text)
    data = text.encode("utf-8", "surrogatepass")
    return _flip_bytes(rng, data) if rng.random() < 0.1 else data


def mutations(example: Path, count: int, seed: int) -> Iterator[tuple[int, bytes]]:
    rng = random.Random(f"{example.name}:{seed}")
    text = example.read_text()
    for i in range(count):
        yield i, mutate(rng, text)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A staged root with the repository's configs, models and samples at their own paths and the
    CA the TLS examples name: ``validate --root`` takes every example as valid there."""
    return staged_repository(tmp_path)


def _validate(root: Path, data: bytes, name: str, runner: Callable[..., CliResult]) -> CliResult:
    """``validate --root ROOT`` of ``data`` written as configs/NAME in the staged repository."""
    target = ROOT / "configs" / name
    (root / target.relative_to("/")).write_bytes(data)
    return runner("validate", "--root", root, target)


class HangError(Exception):
    """A file took longer than HANG_S."""


@contextmanager
def hang_guard(what: str) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs longer than HANG_S."""

    def on_alarm(_signum: int, _frame: FrameType | None) -> None:
        raise HangError(f"{what}: still running after {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _check(result: CliResult, what: str) -> None:
    assert result.code in (0, 2), f"{what}: exit {result.code}\n{result.err[-3000:]}"
    assert "Traceback" not in result.err and "internal error" not in result.err, (
        f"{what}\n{result.err[-3000:]}"
    )
    if result.code == 2:
        assert result.err.strip(), f"{what}: exit 2 without a reason"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_mutated_examples_validate_in_process(root: Path, example: Path) -> None:
    """IN_PROCESS mutations of the example: each exits 0 or 2, with a reason, quickly."""
    assert _validate(root, example.read_bytes(), example.name, run_cli).code == 0
    codes = {0: 0, 2: 0}
    slowest = 0.0
    for i, data in mutations(example, IN_PROCESS, seed=1):
        what = f"{example.name} mutation {i}"
        start = time.monotonic()
        with hang_guard(what):
            result = _validate(root, data, f"{example.stem}-{i}.yaml", run_cli)
        slowest = max(slowest, time.monotonic() - start)
        _check(result, what)
        codes[result.code] += 1
    assert codes[2] > 0, codes  # the mutations do break files
    print(f"{example.name}: exit codes {codes}, slowest {slowest:.2f} s")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_mutated_examples_through_the_command_line(root: Path, example: Path) -> None:
    """The real process (its own stderr and exit status): 0 or 2, never a traceback or exit 1."""
    for i, data in mutations(example, THROUGH_CLI, seed=2):
        result = _validate(root, data, f"{example.stem}-{i}.yaml", run_cli_process)
        _check(result, f"{example.name} mutation {i}")
