"""The real daemon on a damaged outbox and on a full disk: it keeps working and says so."""

from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.publish.outbox import Outbox

from ..broker import Broker, Recorder, wait_for
from ..daemon import ROOT, DaemonProcess, make_config, synthetic_config
from .conftest import fill
from .test_outbox_damage import DAMAGE

PRED = "/predictions/front"
OLD_TOPIC = "edge/cam-test/predictions/front"


def unique(payloads: list[Any]) -> list[dict[str, Any]]:
    """Parsed messages de-duplicated by id, in arrival order."""
    seen: dict[str, dict[str, Any]] = {}
    for p in payloads:
        seen.setdefault(p["id"], p)
    return list(seen.values())


def old_outbox(path: Path, count: int) -> list[dict[str, Any]]:
    """An outbox a previous run left with ``count`` results waiting for the broker."""
    box = Outbox(path)
    made = []
    for _ in range(count):

        def payload(seq: int) -> bytes:
            made.append({"id": uuid.uuid4().hex, "seq": seq, "old": True, "pad": "x" * 300})
            return json.dumps(made[-1]).encode()

        box.put(OLD_TOPIC, payload)
    box.close()
    return made


@pytest.mark.parametrize("variant", [*DAMAGE, "garbage WAL"])
def test_the_daemon_starts_on_a_damaged_outbox_and_keeps_the_damaged_file(
    tmp_path: Path, broker: Broker, recorder: Recorder, variant: str
) -> None:
    """Whatever the damage, the first new result reaches the broker, the damaged file is kept
    next to the outbox, health says so (``outbox.recovered``), and the rows that could be read
    are sent with their seqs, which new results continue."""
    db = tmp_path / "state" / "outbox.db"
    db.parent.mkdir()
    old = old_outbox(db, 60)
    if variant == "garbage WAL":
        Path(f"{db}-wal").write_bytes(random.Random(3).randbytes(32 * 1024))
    else:
        db.write_bytes(DAMAGE[variant](db.read_bytes()))
    daemon = DaemonProcess(synthetic_config(tmp_path, broker.port), tmp_path / "daemon.log")
    try:
        assert wait_for(lambda: any("frame" in p for p in recorder.on(PRED)), 60), daemon.log()[-3000:]
        assert wait_for(lambda: any(h["outbox"]["recovered"] for h in recorder.on("/health")), 10)
    finally:
        assert daemon.terminate() == 0
    report = next(h for h in recorder.on("/health") if h["outbox"]["recovered"])["outbox"]["recovered"]
    kept = Path(report["kept_as"])
    assert kept.parent == db.parent and kept.name.startswith("outbox.db.damaged-") and kept.exists()
    preds = unique(recorder.on(PRED))
    again = [p for p in preds if p.get("old")]
    new = [p for p in preds if "frame" in p]
    assert len(again) == report["rows"] and again == [p for p in old if p in again]
    if variant == "garbage WAL":  # the database itself was sound
        assert again == old
    last_old = max((p["seq"] for p in again), default=0)
    assert new[0]["seq"] > last_old and [p["seq"] for p in new] == list(
        range(new[0]["seq"], new[-1]["seq"] + 1)
    )
    log = daemon.log()
    assert "damaged" in log and "Traceback" not in log


@pytest.mark.slow
def test_a_full_disk_drops_live_results_visibly_pauses_file_sources_and_recovers(
    tmp_path: Path, small_fs: Path, broker: Broker, recorder: Recorder
) -> None:
    """The outbox's file system fills up while a live and a file pipeline run.

    Health still arrives (directly, without seq) and says why (``outbox.error``); the live
    pipeline's results are dropped and counted, so ``outbox.dropped`` equals the gaps in seq;
    the file pipeline pauses and loses no frame; one log line when it starts and one when it
    ends; everything resumes by itself when space returns.
    """
    live = {"type": "synthetic", "width": 160, "height": 120, "fps": 4}
    files = {"type": "images", "path": str(ROOT / "tests" / "data" / "*.jpg"), "fps": 4, "loop": True}
    config = make_config(
        tmp_path,
        broker.port,
        tmp_path / "unused.mp4",
        pipelines=[
            {"name": "live", "model": "person", "source": live},
            {"name": "files", "model": "person", "source": files},
        ],
        outbox={"path": str(small_fs / "outbox.db"), "reserve_bytes": 1 << 20},
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")

    def arrived(pipeline: str) -> int:
        return len(unique(recorder.on(f"/predictions/{pipeline}")))

    def health_where(test: Any, after: int) -> bool:
        return any(test(h) for h in recorder.on("/health")[after:])

    try:
        assert wait_for(lambda: arrived("live") >= 3 and arrived("files") >= 3, 60), daemon.log()[-3000:]
        filler = fill(small_fs)
        full_at = len(recorder.on("/health"))
        assert wait_for(lambda: health_where(lambda h: h["outbox"]["error"], full_at), 10), daemon.log()[
            -3000:
        ]
        direct = next(h for h in recorder.on("/health")[full_at:] if h["outbox"]["error"])
        assert direct["seq"] is None and "disk" in direct["outbox"]["error"]  # full or nearly
        time.sleep(3)  # results go on meanwhile: the live ones are dropped, the file source waits
        before = arrived("live")
        filler.unlink()
        back_at = len(recorder.on("/health"))
        assert wait_for(
            lambda: health_where(lambda h: h["outbox"]["error"] is None and h["seq"], back_at), 15
        ), daemon.log()[-3000:]
        assert wait_for(lambda: arrived("live") >= before + 3, 20)
    finally:
        assert daemon.terminate() == 0
    gaps = 0
    for pipeline in ("live", "files"):
        preds = unique(recorder.on(f"/predictions/{pipeline}"))
        seqs = sorted(p["seq"] for p in preds)
        gaps += seqs[-1] - len(seqs)
        if pipeline == "files":  # paused, not dropped: every frame once, seqs contiguous
            assert [p["frame"]["index"] for p in preds] == list(range(len(preds)))
            assert seqs == list(range(1, len(seqs) + 1))
    health = unique([h for h in recorder.on("/health") if h["seq"] is not None])
    assert [h["seq"] for h in health] == list(range(1, len(health) + 1))  # health is never dropped
    assert gaps > 0 and health[-1]["outbox"]["dropped"] == gaps
    log = daemon.log()
    assert log.count("new messages are dropped and counted") == 1 and log.count("writes again") == 1, log
    assert "Traceback" not in log
