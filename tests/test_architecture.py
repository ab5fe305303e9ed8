"""The package's layering (docs/architecture.md), read from the import statements of every module.

Stage packages never import each other; the leaves import nothing of the package beyond other
leaves; only the composition modules (app, pipeline, service, cli, commands/, model/, and the operator-side
fleet/) cross stages.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edge_runtime"

STAGES = {
    "capture",
    "inference",
    "preprocess",
    "postprocess",
    "publish",
    "health",
    "update",
    "analytics",
    "control",
    "integrations",
}
LEAVES = {
    "config",
    "types",
    "errors",
    "hashing",
    "mqttclient",
    "backoff",
    "channel",
    "scheduling",
    "throttle",
    "durable",
    "boundedjson",
}
COMPOSITION = {"app", "pipeline", "service", "cli", "commands", "model", "fleet", "__main__", "__init__"}


def _unit(path: Path) -> str:
    """The top-level package or module a file belongs to (``capture``, ``app``, ...)."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """The package units a module imports (``edge_runtime.X``; the package uses no relative imports)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (write edge_runtime.X)"
            if node.module and node.module.startswith("edge_runtime"):
                names = node.module.split(".")
                if len(names) > 1:
                    found.add(names[1])
                else:  # from edge_runtime import X
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "edge_runtime" and len(names) > 1:
                    found.add(names[1])
    return found


def _graph() -> dict[Path, set[str]]:
    return {path: _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_top_level_unit_is_a_stage_a_leaf_or_composition() -> None:
    """No loose module at the top level that belongs in a stage or the model layer."""
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units - STAGES - LEAVES - COMPOSITION == set()


def test_stage_packages_do_not_import_each_other() -> None:
    crossings = [
        f"{path.relative_to(PACKAGE)} imports {other}"
        for path, imported in _graph().items()
        if _unit(path) in STAGES
        for other in imported
        if other != _unit(path) and other not in LEAVES and other != "__init__"
    ]
    assert crossings == []


def test_leaves_import_only_leaves() -> None:
    crossings = [
        f"{path.relative_to(PACKAGE)} imports {other}"
        for path, imported in _graph().items()
        if _unit(path) in LEAVES
        for other in imported
        if other not in LEAVES and other != "__version__"
    ]
    assert crossings == []


def test_the_import_reader_sees_every_form_of_import(tmp_path: Path) -> None:
    """A check that cannot fail proves nothing: the reader finds each kind of import statement."""
    module = tmp_path / "m.py"
    module.write_text(
        "import edge_runtime.capture.base\n"
        "from edge_runtime.model import Runner\n"
        "from edge_runtime import pipeline, __version__\n"
        "def f():\n    from edge_runtime.update.store import ModelStore\n"
    )
    assert _imports(module) == {"capture", "model", "pipeline", "__version__", "update"}
    assert {"model", "pipeline", "publish", "update"} <= _imports(PACKAGE / "app.py")
