"""The benchmark report: a Markdown summary and a PNG of latency distributions (drawn with OpenCV)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

COLOURS = [  # BGR
    (180, 119, 31),
    (14, 127, 255),
    (44, 160, 44),
    (40, 39, 214),
    (189, 103, 148),
    (75, 86, 140),
    (194, 119, 227),
    (34, 189, 188),
]


def _mb(value: Any) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _num(value: Any, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def summary_table(report: dict[str, Any]) -> list[str]:
    """One line per model and thread count: the headline ratios."""
    lines = [
        "| model | backend | threads | bare fps | edge-runtime fps | edge-runtime / bare | / serial "
        "| / naive | / peers | at 15 fps: capture-to-receipt p50 (ms) | of which beyond the inference call "
        "(p50, ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["pipelines"]:
        c, ratio = p["contenders"], p["ratios_edge_runtime_over"]
        peers = ", ".join(
            f"{k} {v['median']:.2f}" for k, v in ratio.items() if k not in ("bare", "serial", "naive")
        )
        paced = c.get("edge-runtime@15fps", {})
        lines.append(
            f"| {p['model']} | {p['backend']} | {p['threads']} "
            f"| {_num(c.get('bare', {}).get('fps_median'))} "
            f"| {_num(c.get('edge-runtime', {}).get('fps_median'))} "
            f"| **{_num(ratio.get('bare', {}).get('median'), '{:.3f}')}**{_spread(ratio.get('bare'))} "
            f"| {_num(ratio.get('serial', {}).get('median'), '{:.2f}')} "
            f"| {_num(ratio.get('naive', {}).get('median'), '{:.2f}')} | {peers or '-'} "
            f"| {_num((paced.get('latency_ms') or {}).get('p50'), '{:.2f}')} "
            f"| {_num((paced.get('beyond_inference_ms') or {}).get('p50'), '{:.2f}')} |"
        )
    return lines


def pipeline_section(p: dict[str, Any]) -> list[str]:
    """Every contender of one model and thread count."""
    lines = [
        f"### {p['model']} [{p['backend']}, {p['threads']} thread(s)]",
        "",
        f"Code: {p.get('code', '?')}. Machine load at start: {p.get('load', '?')}.",
        "",
        "| contender | fps (median) | runs | edge-runtime / this | latency p50 / p95 / p99 (ms) "
        "| beyond inference p50 (ms) | CPU % | machine CPU % | peak RSS (MB) | start to first result (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, s in p["contenders"].items():
        if "error" in s:
            lines.append(f"| {kind} | not run: {s['error'][:300]} | | | | | | | | |")
            continue
        lat = s.get("latency_ms") or {}
        ratio = p["ratios_edge_runtime_over"].get(kind, {}).get("median")
        lines.append(
            f"| {kind} | {_num(s['fps_median'])} | {', '.join(f'{x:.0f}' for x in s['fps_runs'])} "
            f"| {_num(ratio, '{:.3f}')} "
            f"| {' / '.join(_num(lat.get(q), '{:.2f}') for q in ('p50', 'p95', 'p99'))} "
            f"| {_num((s.get('beyond_inference_ms') or {}).get('p50'), '{:.2f}')} "
            f"| {_num(s['cpu_percent_median'], '{:.0f}')} | {_num(s['system_cpu_percent_median'], '{:.0f}')} "
            f"| {_rss(s)} | {_num(s['first_result_s_median'], '{:.2f}')} |"
        )
    for kind, s in p["contenders"].items():
        if s.get("stage_p50_ms"):
            stages = ", ".join(f"{k} {v:.2f}" for k, v in s["stage_p50_ms"].items())
            lines.append(
                f"\n{kind}: stage p50 inside the daemon (ms): {stages}; seq gaps {s.get('seq_gaps')}; "
                f"RSS slope {_num(s.get('rss_slope_mb_per_min_median'), '{:.2f}')} MB/min"
            )
        if s.get("own_stage_p50_ms"):
            stages = ", ".join(f"{k} {v:.2f}" for k, v in s["own_stage_p50_ms"].items())
            lines.append(f"\n{kind}: its own per-frame timings, p50 (ms): {stages}")
        for minutes in s.get("rss_mb_by_minute") or []:
            lines.append(f"\n{kind}: RSS by minute (MB, each minute's median): {minutes}")
        if s.get("note"):
            lines.append(f"\n{kind}: {s['note']}")
    return [*lines, ""]


def _spread(ratio: dict[str, Any] | None) -> str:
    """The lowest and highest round of a ratio: how much the machine moved it in this run."""
    rounds = (ratio or {}).get("rounds") or []
    return f" ({min(rounds):.2f}-{max(rounds):.2f})" if len(rounds) > 1 else ""


def _rss(s: dict[str, Any]) -> str:
    """Peak RSS, and for the daemon its anonymous and file-backed parts at the end of the window."""
    text = f"{s['peak_rss_mb_max']:.0f}"
    if s.get("rss_anon_mb_max") is not None and s.get("rss_file_mb_max") is not None:
        text += f" ({s['rss_anon_mb_max']:.0f} anon + {s['rss_file_mb_max']:.0f} file)"
    return text


def memory_section(m: dict[str, Any]) -> list[str]:
    """Step-by-step RSS and the daemon's RSS by mapping."""
    lines = ["## Memory (ONNX classifier pipeline)", ""]
    d = m.get("daemon", {})
    lines.append(
        f"Daemon peak RSS (VmHWM): **{_mb(d.get('peak_rss_bytes'))} MB** (target <= 150 MB); "
        f"RSS slope over the window {_num(d.get('rss_slope_mb_per_min'), '{:.2f}')} MB/min."
    )
    steps = m.get("steps_in_one_process", {})
    if steps.get("steps"):
        lines += [
            "",
            "| step (one process, the daemon's import order) | RSS (MB) | USS (MB) |",
            "|---|---|---|",
        ]
        lines += [f"| {s['step']} | {_mb(s['rss_bytes'])} | {_mb(s['uss_bytes'])} |" for s in steps["steps"]]
    if d.get("rss_by_mapping"):
        lines += ["", "| daemon RSS by mapping | MB |", "|---|---|"]
        lines += [f"| {row['mapping']} | {_mb(row['rss_bytes'])} |" for row in d["rss_by_mapping"]]
    return [*lines, ""]


def outbox_section(o: dict[str, Any]) -> list[str]:
    """Commit and replay rates."""
    lines = [
        "## Outbox",
        "",
        f"Payload {o['payload_bytes']} bytes. Target: >= 5,000 msg/s committed, >= 2,000 msg/s replayed.",
        "",
        "| commit (synchronous / call) | msg/s (median) |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v['median_per_s']:,.0f} |" for k, v in o["commit"].items()]
    lines += [
        "",
        "| replay after an outage | messages | max_inflight | drained msg/s | received msg/s "
        "| all received |",
        "|---|---|---|---|---|---|",
    ]
    for r in o["replay"]:
        lines.append(
            f"| broker down while filling, then started | {r['messages']:,} | {r['max_inflight']} "
            f"| {_num(r['median_drained_per_s'], '{:,.0f}')} | {_num(r['median_received_per_s'], '{:,.0f}')} "
            f"| {r['all_received']} |"
        )
    return [*lines, ""]


def markdown(report: dict[str, Any]) -> str:
    """The whole report."""
    m = report["machine"]
    lines = [
        f"# edge-runtime benchmark {report['started']}",
        "",
        f"{m['cpus']} CPUs, {m['platform']}, Python {m['python']}. Before: {m['load_before']}. "
        f"After: {m.get('load_after', '?')}.",
        "",
        f"Code: {m.get('code', '?')}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "",
    ]
    if report["pipelines"]:
        lines += ["## Summary", "", *summary_table(report), "", "## Details", ""]
        for p in report["pipelines"]:
            lines += pipeline_section(p)
    if "memory" in report:
        lines += memory_section(report["memory"])
    if "outbox" in report:
        lines += outbox_section(report["outbox"])
    if report.get("profile"):
        from bench_profile import markdown as profile_markdown

        lines += profile_markdown(report["profile"])
    lines += ["## Notes", "", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


def _cdf_panel(title: str, series: dict[str, list[float]], size: tuple[int, int]) -> np.ndarray:
    """Cumulative distribution of latency per contender, log-scale x axis."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, w - 170, 30, h - 40
    lo, hi = 0.5, 2000.0
    span = math.log10(hi) - math.log10(lo)

    def x_of(ms: float) -> int:
        ms = min(max(ms, lo), hi)
        return int(left + (math.log10(ms) - math.log10(lo)) / span * (right - left))

    def y_of(q: float) -> int:
        return int(bottom - q * (bottom - top))

    font = cv2.FONT_HERSHEY_SIMPLEX
    for ms in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000):
        x = x_of(ms)
        cv2.line(img, (x, top), (x, bottom), (225, 225, 225), 1)
        cv2.putText(img, str(ms), (x - 8, bottom + 15), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    for q in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y_of(q)
        cv2.line(img, (left, y), (right, y), (225, 225, 225), 1)
        cv2.putText(img, f"{q:.2f}", (left - 40, y + 4), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (right, bottom), (0, 0, 0), 1)
    cv2.putText(img, title, (left, 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "latency (ms, log)", (left + (right - left) // 2 - 50, h - 8), font, 0.4, (0, 0, 0), 1)
    legend_y = top + 10
    for i, (name, values) in enumerate(series.items()):
        if not values:
            continue
        colour = COLOURS[i % len(COLOURS)]
        v = np.sort(np.asarray(values))
        q = np.arange(1, len(v) + 1) / len(v)
        idx = np.unique(np.linspace(0, len(v) - 1, min(len(v), 400)).astype(int))
        pts = np.array([[x_of(float(v[j])), y_of(float(q[j]))] for j in idx], np.int32)
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        cv2.line(img, (right + 10, legend_y), (right + 30, legend_y), colour, 2)
        p50 = float(np.percentile(v, 50))
        cv2.putText(img, f"{name}", (right + 35, legend_y + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"p50 {p50:.1f} ms", (right + 35, legend_y + 18), font, 0.35, (80, 80, 80), 1)
        legend_y += 34
    return img


def latency_png(latencies: dict[str, dict[str, list[float]]], path: Path) -> None:
    """One CDF panel per model and thread count, two panels per row."""
    panels = [_cdf_panel(title, series, (760, 340)) for title, series in latencies.items()]
    if len(panels) % 2:
        panels.append(np.full_like(panels[0], 255))
    rows = [np.hstack(panels[i : i + 2]) for i in range(0, len(panels), 2)]
    cv2.imwrite(str(path), np.vstack(rows))
