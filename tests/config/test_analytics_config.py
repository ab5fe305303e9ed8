"""motion, tracking, zones, lines and output: validated with FILE:LINE: key, in the schema."""

from __future__ import annotations

import json
from pathlib import Path

from edge_runtime.config.loader import collect_problems

from ..conftest import run_cli
from .test_config import MINIMAL

BASE = MINIMAL  # the smallest valid config; the tests append a pipeline's keys to it


def _problems(tmp_path: Path, extra: str) -> tuple[Path, list[str]]:
    path = tmp_path / "edge.yaml"
    path.write_text(BASE + extra)
    _cfg, problems = collect_problems(path)
    return path, problems


def test_a_full_analytics_section_loads_and_turns_tracking_on(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(
        BASE
        + "    motion: {enabled: true, keyframe_every: 30, masks: [[[0, 0], [0.2, 0], [0.2, 0.2]]]}\n"
        + "    zones:\n      driveway:\n        points: [[0.1, 0.5], [0.9, 0.5], [0.9, 1], [0.1, 1]]\n"
        + "        labels: [person]\n"
        + "    lines:\n      gate: {points: [[0.5, 1], [0.5, 0]]}\n"
        + "    output: events\n"
    )
    cfg, problems = collect_problems(path)
    assert problems == [] and cfg is not None
    pc = cfg.pipelines[0]
    assert (
        pc.tracks
        and pc.motion.enabled
        and pc.output == "events"
        and pc.zones["driveway"].labels == ["person"]
    )


def test_bad_analytics_keys_are_reported_with_their_lines(tmp_path: Path) -> None:
    path, problems = _problems(
        tmp_path,
        "    motion: {enabled: true, threshold: 0}\n"
        "    zones:\n      yard: {points: [[0.1, 0.1], [0.5, 0.5]]}\n"
        "      'bad/name': {points: [[0, 0], [1, 0], [1, 1]]}\n"
        "    lines:\n      gate: {points: [[0.5, 1.5], [0.5, 0]]}\n"
        "      dot: {points: [[0.5, 0.5], [0.5, 0.5]]}\n"
        "    output: sometimes\n",
    )
    joined = "\n".join(problems)
    assert f"{path}:9: pipelines.0.motion.threshold:" in joined
    assert (
        f"{path}:11: pipelines.0.zones.yard.points: Value error, a polygon needs at least 3 points" in joined
    )
    assert f"{path}:12: pipelines.0.zones.bad/name" in joined
    assert f"{path}:14: pipelines.0.lines.gate.points.0.1:" in joined
    assert (
        f"{path}:15: pipelines.0.lines.dot.points: Value error, the two points of a line must differ"
        in joined
    )
    assert f"{path}:16: pipelines.0.output:" in joined


def test_lines_with_tracking_turned_off_are_refused(tmp_path: Path) -> None:
    path, problems = _problems(
        tmp_path, "    tracking: {enabled: false}\n    lines:\n      gate: {points: [[0, 0], [1, 1]]}\n"
    )
    assert any("zones, lines and output: events need tracking" in p and f"{path}:5:" in p for p in problems)


def test_the_schema_has_the_analytics_keys() -> None:
    result = run_cli("config-schema")
    schema = json.loads(result.out)
    pipeline = schema["$defs"]["PipelineConfig"]["properties"]
    assert {"motion", "tracking", "zones", "lines", "output"} <= set(pipeline)
    assert {"keyframe_every", "masks", "recalibrate"} <= set(schema["$defs"]["MotionConfig"]["properties"])


def test_a_sensor_pipeline_refuses_image_analytics(tmp_path: Path) -> None:
    sensor = "      type: sensor\n      driver: stream\n      path: /dev/null\n      channels: [x]\n"
    sensor += "      rate_hz: 100\n      window: 10\n"
    path = tmp_path / "edge.yaml"
    path.write_text(BASE.replace("      type: synthetic\n", sensor) + "    output: changes\n")
    _cfg, problems = collect_problems(path)
    assert any(f"{path}:5: pipelines.0: Value error, motion, tracking" in p for p in problems), problems
