"""model.yaml parsing: strict keys, cross-field rules, errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.config.yamlsource import load_yaml, parse_model
from edge_runtime.errors import ConfigError
from edge_runtime.model.spec import ModelSpec

GOOD = """\
name: demo
version: 3
task: detection
family: yolov8
files:
  onnx: model.onnx
preprocess:
  resize: letterbox
  mean: [0, 0, 0]
  std: [255, 255, 255]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


def test_valid_model_yaml_parses_with_defaults(tmp_path: Path) -> None:
    spec = parse_model(load_yaml(_write(tmp_path, GOOD)), ModelSpec)
    assert spec.version == "3" and spec.preprocess.pad_value == 114 and spec.postprocess.iou_threshold == 0.45


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("  resize: letterbox", "  resize: squash\n  colour: rgb").replace(
        "std: [255, 255, 255]", "std: [255, 0, 255]"
    )
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        parse_model(load_yaml(path), ModelSpec)
    lines = str(info.value).splitlines()
    assert f"{path}:8: preprocess.resize: " in lines[0]
    assert f"{path}:9: preprocess.colour: unknown key; did you mean 'color'?" in lines
    assert any(line.startswith(f"{path}:11: preprocess.std:") for line in lines)


def test_family_must_fit_task(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("task: detection", "task: classification"))
    with pytest.raises(ConfigError, match="does not fit task"):
        parse_model(load_yaml(path), ModelSpec)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nfiles: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: invalid YAML"):
        load_yaml(path)


def test_every_key_of_model_yaml_has_a_description() -> None:
    schema = ModelSpec.model_json_schema()
    models = [schema, *schema["$defs"].values()]
    undocumented = [
        f"{model['title']}.{name}"
        for model in models
        for name, prop in model.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undocumented == []


def test_num_classes_goes_with_yolov8_only(tmp_path: Path) -> None:
    spec = parse_model(load_yaml(_write(tmp_path, GOOD + "postprocess: {num_classes: 1}\n")), ModelSpec)
    assert spec.postprocess.num_classes == 1
    path = _write(tmp_path, GOOD.replace("yolov8", "yolov5") + "postprocess: {num_classes: 1}\n")
    with pytest.raises(ConfigError, match="num_classes goes with family 'yolov8'"):
        parse_model(load_yaml(path), ModelSpec)
