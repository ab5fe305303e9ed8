"""The Dockerfile's steps, run here (no container engine on these machines): its base is a
multi-arch image, it runs as an unprivileged user, the files it copies build the package, and the
config it starts validates in the layout it gives them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .daemon import ROOT
from .timeouts import scaled

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", text, re.MULTILINE)]


def test_base_is_one_multi_arch_debian_python_and_the_user_is_not_root() -> None:
    # the official python images are multi-arch (amd64, arm64/v8, arm/v7): one tag for every board
    assert _instructions("FROM") == ["python:3.11-slim-bookworm"]
    assert _instructions("USER") == ["edge-runtime"]
    (useradd,) = [r for r in _instructions("RUN") if "useradd" in r]
    assert "--system" in useradd and "video,plugdev,apex" in useradd
    assert _instructions("ENTRYPOINT") == ['["edge-runtime"]']


@pytest.mark.slow  # pip fetches the build backend (setuptools >= 77) from the index
def test_the_copied_files_build_the_package_with_its_extras(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    copies = [c.split() for c in _instructions("COPY") if c.split()[-1].startswith("/src")]
    for *sources, _dest in copies:
        for name in sources:
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    (install,) = [r for r in _instructions("RUN") if "pip install" in r]
    extras = re.search(r'"/src\[([a-z,]+)\]"', install)
    assert extras is not None and extras.group(1) == "all"
    pyproject = (src / "pyproject.toml").read_text()
    assert re.search(r"^all = \[", pyproject, re.MULTILINE)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=scaled(300),
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("edge_runtime-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edge_runtime/cli.py" in names and "edge_runtime/py.typed" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_the_default_command_validates_in_the_image_layout(tmp_path: Path) -> None:
    prefix = tmp_path / "opt" / "edge-runtime"
    for *sources, dest in (c.split() for c in _instructions("COPY") if c.split()[-1].startswith("/opt")):
        (name,) = sources
        shutil.copytree(ROOT / name, prefix / Path(dest).name)
    (cmd,) = _instructions("CMD")
    args = re.findall(r'"([^"]+)"', cmd)
    assert args[0] == "run"
    config = tmp_path / args[1].lstrip("/")
    env_state = dict(re.findall(r"(EDGE_STATE_DIR)=(\S+)", DOCKERFILE))
    assert env_state == {"EDGE_STATE_DIR": "/var/lib/edge-runtime"}
    done = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        env={"PATH": "/usr/bin:/bin", "EDGE_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(": ok")
