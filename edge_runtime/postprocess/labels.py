"""Class labels: a text file with one label per line (line i = class id i)."""

from __future__ import annotations

from pathlib import Path

from edge_runtime.errors import ModelError


def read_labels(path: Path) -> list[str]:
    """Read a labels file; blank trailing lines are ignored, blank inner lines are kept as ''."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: labels file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read labels: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelError(f"{path}: labels file is empty")
    return [line.strip() for line in lines]


def label_for(labels: list[str] | None, class_id: int) -> str:
    """The label of ``class_id``, or its number when there are no labels for it."""
    if labels is not None and 0 <= class_id < len(labels):
        return labels[class_id]
    return str(class_id)
