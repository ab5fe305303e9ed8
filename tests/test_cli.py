"""The CLI contract: exit codes, one-line reasons without tracebacks, JSON shapes."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.cli import build_parser
from tests.timeouts import scaled

from .conftest import CLASSIFIER, DATA, DETECTOR, ROOT, image, run_cli, run_cli_process


def _one_line_reason(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("edge-runtime: error:")]
    assert len(lines) >= 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_model_exits_2_naming_it(tmp_path: Path) -> None:
    result = run_cli("infer", tmp_path / "nope.onnx", image("coffee"))
    assert result.code == 2
    _one_line_reason(result.err, "nope.onnx", "no such model")


def test_missing_image_exits_2_naming_it() -> None:
    result = run_cli("infer", CLASSIFIER, DATA / "missing.jpg")
    assert result.code == 2
    _one_line_reason(result.err, "missing.jpg")


def test_file_that_is_not_an_image_exits_2_and_other_images_still_run(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("not a picture")
    result = run_cli("infer", CLASSIFIER, bogus, image("coffee"), "--json")
    assert result.code == 2
    _one_line_reason(result.err, "notes.jpg", "not an image")
    assert [line["image"] for line in result.json_lines()] == [str(image("coffee"))]


@pytest.mark.parametrize("name", ["demo.mp4", "clip.bin"])
def test_a_video_given_to_infer_is_named_a_video_and_run_is_pointed_to(tmp_path: Path, name: str) -> None:
    """By its suffix, or by its container's first bytes."""
    video = tmp_path / name
    shutil.copy(ROOT / "samples" / "demo.mp4", video)
    result = run_cli("infer", CLASSIFIER, video)
    assert result.code == 2
    _one_line_reason(
        result.err, f"{video}: a video file, not an image", "edge-runtime run", "configs/demo.yaml"
    )


def test_a_truncated_jpeg_is_inferred_with_a_warning(tmp_path: Path) -> None:
    data = image("coffee").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 4 // 5])
    result = run_cli_process("-q", "infer", CLASSIFIER, cut, "--json")
    assert result.code == 0, result.err
    assert f"edge-runtime: warning: {cut}: truncated JPEG" in result.err
    assert result.json_lines()[0]["classes"][0]["label"] == "espresso"
    whole = run_cli_process("-q", "infer", CLASSIFIER, image("coffee"))
    assert whole.code == 0 and whole.err == ""


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_corrupt_model_exits_2(tmp_path: Path, suffix: str) -> None:
    bad = tmp_path / f"broken{suffix}"
    bad.write_bytes(b"\x00garbage" * 100)
    result = run_cli("infer", bad, image("coffee"))
    assert result.code == 2
    _one_line_reason(result.err, f"broken{suffix}", "cannot load")


def test_model_whose_outputs_fit_no_family_exits_2_saying_what_to_add() -> None:
    result = run_cli("infer", DATA / "no_family.onnx", image("coffee"))
    assert result.code == 2
    _one_line_reason(result.err, "fit no known family", "model.yaml")


def test_labels_of_the_wrong_length_exit_2(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(CLASSIFIER, bundle)
    labels = (bundle / "labels.txt").read_text().splitlines()
    (bundle / "labels.txt").write_text("\n".join(labels[:-3]) + "\n")
    spec = (bundle / "model.yaml").read_text()  # a user's own bundle: no recorded hashes
    (bundle / "model.yaml").write_text(spec.split("\nsha256:")[0] + "\n")
    result = run_cli("infer", bundle, image("coffee"))
    assert result.code == 2
    _one_line_reason(result.err, "997 labels", "1000 classes")


def test_tampered_labels_are_refused_by_their_sha256(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(CLASSIFIER, bundle)
    (bundle / "labels.txt").write_text((bundle / "labels.txt").read_text().replace("espresso", "tea"))
    result = run_cli("infer", bundle, image("coffee"))
    assert result.code == 2
    _one_line_reason(result.err, "labels.txt", "does not match")


def test_tampered_model_file_is_refused_by_its_sha256(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(DETECTOR, bundle)
    onnx_file = next(bundle.glob("*.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\x00")
    result = run_cli("infer", bundle, image("coffee"), "--backend", "onnx")
    assert result.code == 2
    _one_line_reason(result.err, "sha256", "does not match")


def test_bad_model_yaml_exits_2_with_file_line_and_key(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(CLASSIFIER, bundle)
    text = (bundle / "model.yaml").read_text().replace("task: classification", "task: segmentation")
    (bundle / "model.yaml").write_text(text)
    result = run_cli("infer", bundle, image("coffee"))
    assert result.code == 2
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("task:"))
    _one_line_reason(result.err, f"model.yaml:{line_no}: task:")


def test_bad_usage_exits_2() -> None:
    assert run_cli("infer", CLASSIFIER).code == 2
    assert run_cli("infer", CLASSIFIER, image("coffee"), "--top-k", "0").code == 2


def test_console_entry_point_runs_as_a_module_with_real_exit_codes(tmp_path: Path) -> None:
    ok = run_cli_process("-q", "infer", CLASSIFIER, image("coffee"), "--json")
    assert ok.code == 0, ok.err
    assert ok.json_lines()[0]["classes"][0]["label"] == "espresso"
    bad = run_cli_process("infer", tmp_path / "missing.tflite", image("coffee"))
    assert bad.code == 2 and "Traceback" not in bad.err


def test_infer_json_line_has_the_contract_fields() -> None:
    result = run_cli("-q", "infer", DETECTOR, image("astronaut"), "--json")
    assert result.code == 0, result.err
    (line,) = result.json_lines()
    assert set(line) == {"image", "task", "model", "detections", "latency_ms"}
    assert set(line["model"]) == {"name", "version", "sha256", "backend", "accelerator"}
    assert set(line["latency_ms"]) == {"preprocess", "inference", "postprocess"}
    det = line["detections"][0]
    assert set(det) == {"class_id", "label", "score", "box"} and det["label"] == "person"
    assert all(0.0 <= v <= 1.0 for v in det["box"])


def test_text_output_and_annotated_images(tmp_path: Path) -> None:
    result = run_cli("-q", "infer", DETECTOR, image("astronaut"), image("coffee"), "--annotate", tmp_path)
    assert result.code == 0, result.err
    assert "person" in result.out and "nothing above the threshold" in result.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astronaut.jpg", "coffee.jpg"]


def test_bench_reports_percentiles_for_both_backends() -> None:
    result = run_cli(
        "-q", "bench", CLASSIFIER, "--seconds", "0.3", "--warmup", "2", "--threads", "1", "--json"
    )
    assert result.code == 0, result.err
    lines = result.json_lines()
    assert {line["model"]["backend"] for line in lines} == {"onnx", "tflite"}
    for line in lines:
        lat = line["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert line["runs"] >= 10 and line["throughput_per_s"] > 0


def test_models_lists_bundles_and_runtimes() -> None:
    result = run_cli("models", "--json")
    assert result.code == 0
    report = json.loads(result.out)
    names = {m["name"]: m for m in report["models"]}
    assert set(names) >= {"efficientnet_lite0", "ssdlite_mobilenet_v2_person"}
    assert names["efficientnet_lite0"]["runnable_with"] == ["onnx", "tflite"]
    assert "CPUExecutionProvider" in report["runtimes"]["onnx"]["providers"]


def test_quiet_hides_litert_info_lines_but_not_its_errors(tmp_path: Path) -> None:
    """LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" on fd 2; ``-q`` hides it."""
    quiet = run_cli_process("-q", "infer", CLASSIFIER, image("coffee"), "--backend", "tflite")
    assert quiet.code == 0, quiet.err
    assert "espresso" in quiet.out
    assert "XNNPACK" not in quiet.err and "INFO" not in quiet.err
    bad = run_cli_process(
        "-q",
        "infer",
        CLASSIFIER,
        image("coffee"),
        "--backend",
        "tflite",
        "--accelerator",
        "external",
        "--delegate",
        tmp_path / "nope.so",
    )
    assert bad.code == 1
    # (LiteRT's half-made Delegate then prints an ignored AttributeError from its __del__)
    assert "edge-runtime: error: tflite: cannot load the external delegate" in bad.err
    assert "nope.so: cannot open shared object file" in bad.err


def test_native_lines_other_than_info_still_reach_stderr() -> None:
    """What the runtime writes to fd 2 while its INFO lines are hidden is passed on, even on error."""
    code = (
        "import logging, os\n"
        "from edge_runtime.inference.tflite import native_info_hidden\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "try:\n"
        "    with native_info_hidden():\n"
        "        os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "        os.write(2, b'ERROR: a native error\\n')\n"
        "        raise RuntimeError('from the runtime')\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(60), check=True
    )
    assert proc.stdout == "from the runtime\n"
    assert proc.stderr == "ERROR: a native error\n"


def _actions(parser: argparse.ArgumentParser, command: str) -> list[tuple[str, argparse.Action]]:
    """Every argument of ``parser`` and of its subcommands, with the command it belongs to."""
    out: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        out.append((command, action))
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _actions(sub, f"{command} {name}")
    return out


def test_every_argument_of_every_command_has_help() -> None:
    actions = _actions(build_parser(), "edge-runtime")
    assert len(actions) > 60
    missing = [
        f"{command} {'/'.join(action.option_strings) or action.metavar or action.dest}"
        for command, action in actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert missing == []
