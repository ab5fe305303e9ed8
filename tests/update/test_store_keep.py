"""``updates.keep``: how many previous versions the store keeps for rollback after a commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.update.store import BASE, Active, ModelStore


@pytest.mark.parametrize(("keep", "left"), [(1, ["4", "5"]), (2, ["3", "4", "5"]), (5, ["2", "3", "4", "5"])])
def test_a_commit_prunes_to_the_active_version_and_keep_previous_ones(
    tmp_path: Path, keep: int, left: list[str]
) -> None:
    store = ModelStore(tmp_path, keep=keep)
    for version in ("2", "3", "4", "5", "9"):  # 9: installed by an attempt that never became active
        extracted = tmp_path / f"x{version}"
        extracted.mkdir()
        (extracted / "model.yaml").write_text(f"version: {version}\n")
        store.install("m", version, extracted)
    store.set_active("m", Active(version="5", previous=["4", "3", "2", BASE]))
    removed = store.prune("m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir() if p.is_dir()) == left
    assert sorted(removed) == sorted({"2", "3", "4", "9"} - set(left))
    store.roll_back("m", store.active("m"))  # type: ignore[arg-type]
    assert store.active("m").version == "4"  # type: ignore[union-attr]  # the newest kept one serves
