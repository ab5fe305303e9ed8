"""Motion gating: CPU per hour of video with and without it, the motion stage's own cost, and
whether the frames it lets through get the same detections.

    python scripts/bench/bench_motion.py [--minutes M] [--busy-frames N] [--threads T] [--out DIR]

Two generated 640x360 videos at 15 fps (tests/analytics/scenes.py: a person crop from the
astronaut photo pasted on a still scene): a mostly static one (``--minutes`` long, a 4-second walk
across the scene once a minute) and a busy one (someone walking back and forth the whole time).
Each runs through the daemon's own pipeline in this process (a video source as fast as it
decodes, the bundled person detector, a real outbox in a temp folder), with ``motion.enabled``
false and then true; CPU is the process's user + system time over the run (getrusage), so it
counts decoding, the motion stage, preprocessing, inference and publishing to the outbox alike.

Both runs track objects and count a line across the middle (``lines:``), as a pipeline with
analytics would. Printed side by side: CPU seconds, CPU seconds per hour of video, frames
inferred, the ratio; the tracks each run reported (from their ``end`` events);
on the busy scene, the motion stage's own CPU (MotionDetector.detect over the decoded frames,
timed alone) as a share of the ungated pipeline's CPU; and, on the static scene, how many frames
inferred in the gated run had detections different from the ungated run's for that frame.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_runtime.analytics.motion import MotionDetector  # noqa: E402
from edge_runtime.config.sections import Config  # noqa: E402
from edge_runtime.model import ModelSlot, load_runner  # noqa: E402
from edge_runtime.pipeline import build_pipeline  # noqa: E402
from edge_runtime.publish.outbox import open_outbox  # noqa: E402
from tests.analytics.scenes import frames_of, linear, render  # noqa: E402

FPS = 15.0
SIZE = (640, 360)


def static_scene(path: Path, minutes: float) -> int:
    """Still, except a 4 s walk across the scene starting at 20 s of every minute."""
    frames = round(minutes * 60 * FPS)
    per_minute, walk = round(60 * FPS), round(4 * FPS)

    def where(i: int) -> tuple[float, float] | None:
        start = (i // per_minute) * per_minute + round(20 * FPS)
        return linear((0.0, 0.25), (0.65, 0.25), start, start + walk)(i)

    render(path, frames, where, size=SIZE, person_h=260, fps=FPS, noise=3)
    return frames


def busy_scene(path: Path, frames: int) -> int:
    """Someone walking back and forth all the time (every frame moves)."""

    def where(i: int) -> tuple[float, float]:
        t = (i % 120) / 60
        x = 0.65 * (t if t <= 1 else 2 - t)
        return (x, 0.25)

    render(path, frames, where, size=SIZE, person_h=260, fps=FPS, noise=3)
    return frames


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(video: Path, work: Path, *, gated: bool, threads: int) -> dict[str, Any]:
    """The pipeline over the whole video; CPU seconds, frames inferred, detections by frame."""
    work.mkdir(parents=True)
    cfg = Config.model_validate(
        {
            "device": {"id": "bench"},
            "outbox": {"path": str(work / "outbox.db"), "max_messages": 1_000_000},
            "models": {
                "person": {"path": str(ROOT / "models" / "ssdlite_mobilenet_v2_person"), "threads": threads}
            },
            "pipelines": [
                {
                    "name": "cam",
                    "model": "person",
                    "source": {"type": "video", "path": str(video), "fps": 0},
                    "motion": {"enabled": gated},
                    # tracking and a counting line, to compare the events with and without gating
                    "lines": {"gate": {"points": [[0.5, 1.0], [0.5, 0.0]]}},
                }
            ],
            "updates": {"store": str(work / "models")},
        }
    )
    mc, pc = cfg.models["person"], cfg.pipelines[0]
    slot = ModelSlot("person", load_runner(mc, work / "cache"))
    outbox = open_outbox(cfg.outbox)
    pipeline = build_pipeline(pc, slot, outbox, cfg, "bench/predictions/cam")
    c0, t0 = cpu_s(), time.monotonic()
    pipeline.start()
    while not pipeline.done:  # the file ended and every frame reached the outbox
        time.sleep(0.05)
    cpu, wall = cpu_s() - c0, time.monotonic() - t0
    pipeline.stop(timeout=30)
    report = pipeline.analytics_report().get("motion", {})
    outbox.close()
    slot.runner.close()
    with sqlite3.connect(work / "outbox.db") as con:
        rows = [(t, json.loads(p)) for t, p in con.execute("SELECT topic, payload FROM messages")]
    predictions = [p for t, p in rows if "/predictions/" in t]
    detections = {r["frame"]["index"]: [(d["label"], d["box"]) for d in r["detections"]] for r in predictions}
    stories = [
        (p["label"], p["first_frame"], p["last_frame"], tuple(c["direction"] for c in p["lines"]))
        for t, p in rows
        if t.endswith("/events/cam") and p["type"] == "end"
    ]
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "inferred": len(detections),
        "detections": detections,
        "stories": sorted(stories, key=lambda s: s[1]),
        "motion": report,
    }


def motion_stage_cpu(video: Path) -> tuple[float, int]:
    """CPU seconds of the motion detector alone over every frame (decoded beforehand)."""
    frames = frames_of(video)
    detector = MotionDetector()
    c0 = time.process_time()
    for frame in frames:
        detector.detect(frame)
    return time.process_time() - c0, len(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="length of the static scene")
    ap.add_argument("--busy-frames", type=int, default=600, help="length of the busy scene")
    ap.add_argument("--threads", type=int, default=2, help="inference threads")
    ap.add_argument("--rounds", type=int, default=1, help="busy scene: runs of each, alternating (medians)")
    ap.add_argument("--busy-only", action="store_true", help="skip the static scene")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()
    cv2.setNumThreads(1)  # as the daemon does (commands/daemon.py): the pipelines run frames in parallel
    work = Path(tempfile.mkdtemp(prefix="bench-motion-", dir=args.out))
    if not args.busy_only:
        static(work, args)
    busy(work, args)
    print(f"work folder: {work}")


def static(work: Path, args: argparse.Namespace) -> None:
    """The static scene with and without gating: CPU per hour of video, same detections."""
    video = work / "static.mp4"
    n = static_scene(video, args.minutes)
    print(f"static scene: {n} frames ({n / FPS / 60:.1f} min at {FPS:g} fps), {SIZE[0]}x{SIZE[1]}")
    plain = run(video, work / "static-plain", gated=False, threads=args.threads)
    gated = run(video, work / "static-gated", gated=True, threads=args.threads)
    hours = n / FPS / 3600
    print(f"{'':24}{'no gating':>14}{'gating':>14}{'ratio':>10}")
    for name, key in (("CPU s", "cpu_s"), ("wall s", "wall_s"), ("frames inferred", "inferred")):
        a, b = plain[key], gated[key]
        print(f"{name:24}{a:14.1f}{b:14.1f}{a / max(b, 1e-9):10.2f}")
    a, b = plain["cpu_s"] / hours, gated["cpu_s"] / hours
    print(f"{'CPU s per hour of video':24}{a:14.0f}{b:14.0f}{a / b:10.2f}")
    print(f"gated run's motion report: {gated['motion']}")
    differ = [i for i, d in gated["detections"].items() if plain["detections"].get(i) != d]
    with_people = sum(bool(d) for d in gated["detections"].values())
    print(
        f"detections on the {gated['inferred']} gated frames ({with_people} with a person): "
        f"{len(differ)} differ from the ungated run's{' ' + str(differ[:10]) if differ else ''}"
    )
    missed = [i for i, d in plain["detections"].items() if d and i not in gated["detections"]]
    print(f"frames with a person in the ungated run that gating skipped: {len(missed)} {missed[:10]}")
    print("tracks (label, first frame, last frame, line crossings), from their end events:")
    print(f"  no gating: {plain['stories']}")
    print(f"  gating:    {gated['stories']}")
    print(f"  the same: {plain['stories'] == gated['stories']}")


def busy(work: Path, args: argparse.Namespace) -> None:
    """The busy scene: the pipeline with and without gating, and the motion stage alone."""
    video = work / "busy.mp4"
    n = busy_scene(video, args.busy_frames)
    print(f"\nbusy scene: {n} frames, every one moving; {args.rounds} round(s), medians")
    plain, gated = [], []
    for r in range(args.rounds):
        plain.append(run(video, work / f"busy-plain-{r}", gated=False, threads=args.threads)["cpu_s"])
        gated.append(run(video, work / f"busy-gated-{r}", gated=True, threads=args.threads)["cpu_s"])
    stage, frames = motion_stage_cpu(video)
    a, b = statistics.median(plain), statistics.median(gated)
    print(f"pipeline CPU without gating: {a:.2f} s ({a / n * 1e3:.2f} ms/frame)  runs {_list(plain)}")
    print(f"pipeline CPU with gating:    {b:.2f} s ({b / n * 1e3:.2f} ms/frame)  runs {_list(gated)}")
    print(
        f"motion stage alone: {stage:.3f} s ({stage / frames * 1e3:.3f} ms/frame) = "
        f"{100 * stage / a:.2f} % of the ungated pipeline's CPU"
    )


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
