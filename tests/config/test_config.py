"""The daemon's config: strict keys, ${ENV}, secrets files, every problem with FILE:LINE: key."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.config.loader import collect_problems, load_config
from edge_runtime.errors import ConfigError

from ..certs import make_ca
from ..conftest import ROOT, run_cli

MINIMAL = f"""\
models:
  person:
    path: {ROOT / "models" / "ssdlite_mobilenet_v2_person"}
pipelines:
  - name: front
    model: person
    source:
      type: synthetic
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def staged_repository(tmp_path: Path) -> Path:
    """A root holding this repository's configs (copies), models and samples at their own paths,
    and a CA at /etc/edge-runtime/ca.crt (the TLS examples name it): ``validate --root`` checks
    the examples as a device with that CA would."""
    root = tmp_path / "root"
    repo = root / ROOT.relative_to("/")
    shutil.copytree(ROOT / "configs", repo / "configs")
    for folder in ("models", "samples"):
        (repo / folder).symlink_to(ROOT / folder)
    (root / "etc/edge-runtime").mkdir(parents=True)
    make_ca(root / "etc/edge-runtime", "ca")
    return root


@pytest.mark.parametrize("name", ["demo", "jetson", "rpi-coral", "generic-arm", "sensor-demo"])
def test_every_example_config_validates(tmp_path: Path, name: str) -> None:
    result = run_cli("validate", "--root", staged_repository(tmp_path), ROOT / "configs" / f"{name}.yaml")
    assert result.code == 0, result.err


def test_defaults_work_and_state_goes_under_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.mqtt.port == 1883 and cfg.mqtt.qos == 1 and cfg.mqtt.topic_prefix == "edge"
    assert cfg.outbox.path == tmp_path / "state" / "outbox.db" and cfg.outbox.drop_policy == "oldest"
    assert cfg.device.id  # the hostname


def test_env_substitution_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER", "broker.local")
    text = MINIMAL + "mqtt:\n  host: ${BROKER}\n  port: ${PORT:-8883}\n"
    cfg = load_config(_write(tmp_path, text))
    assert cfg.mqtt.host == "broker.local" and cfg.mqtt.port == 8883


def test_password_file_from_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = load_config(_write(tmp_path, MINIMAL + "mqtt:\n  username: edge\n  password_file: mqtt_password\n"))
    assert cfg.mqtt.password == "s3cret"


def test_every_problem_is_reported_at_once_with_file_line_and_key(tmp_path: Path) -> None:
    text = MINIMAL.replace("      type: synthetic", "      type: synthetic\n      fps: -3") + (
        "mqtt:\n  port: 99999\n  hots: typo\n  password: ${NOT_SET_ANYWHERE}\n"
        "outbox:\n  drop_policy: random\n"
    )
    path = _write(tmp_path, text)
    cfg, problems = collect_problems(path)
    assert cfg is None
    joined = "\n".join(problems)
    assert f"{path}:9: pipelines.0.source.fps:" in joined
    assert f"{path}:11: mqtt.port:" in joined
    assert f"{path}:12: mqtt.hots: unknown key" in joined
    assert f"{path}:13: mqtt.password: environment variable NOT_SET_ANYWHERE is not set" in joined
    assert f"{path}:15: outbox.drop_policy:" in joined


def test_unknown_key_names_the_closest_key_of_its_own_level(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("    path:", "    thread: 2\n    path:").replace(
            "      type: synthetic", "      type: synthetic\n      frame: 10\n      colour: red"
        )
        + "mqt:\n  host: broker\n"
    )
    path = _write(tmp_path, text)
    result = run_cli("validate", path)
    assert result.code == 2
    assert result.err.splitlines() == [
        f"{path}:3: models.person.thread: unknown key; did you mean 'threads'?",
        f"{path}:10: pipelines.0.source.frame: unknown key; did you mean 'frames'?",
        f"{path}:11: pipelines.0.source.colour: unknown key",
        f"{path}:12: mqt: unknown key; did you mean 'mqtt'?",
    ]


def test_pipeline_with_unknown_model_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("    model: person", "    model: persn"))
    with pytest.raises(ConfigError, match=rf"{path}:6: pipelines\.0\.model: unknown model 'persn'"):
        load_config(path)


def test_validate_command_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "mqtt:\n  port: nope\n  qos: 2\n")
    result = run_cli("validate", path)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{path}:") for line in lines)
    assert "Traceback" not in result.err


def test_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    result = run_cli("run", _write(tmp_path, "pipelines: 3\n"))
    assert result.code == 2 and "pipelines" in result.err


def test_config_schema_is_json_schema() -> None:
    result = run_cli("config-schema")
    schema = json.loads(result.out)
    assert result.code == 0 and {"device", "mqtt", "outbox", "models", "pipelines"} <= set(
        schema["properties"]
    )


def _properties(node: Any, at: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``properties`` entry anywhere in a JSON Schema, with where it is."""
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            yield f"{at}.{name}", prop
        for key, value in node.items():
            yield from _properties(value, f"{at}.{key}" if key != "properties" else at)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _properties(item, f"{at}[{i}]")


def test_config_schema_describes_every_key_and_lists_the_top_level_before_its_defs() -> None:
    result = run_cli("config-schema")
    assert result.code == 0
    schema = json.loads(result.out)
    properties = list(_properties(schema))
    assert len(properties) > 100
    assert [where for where, prop in properties if not prop.get("description")] == []
    keys = list(schema)
    assert keys[:4] == ["title", "description", "type", "properties"] and keys[-1] == "$defs"
