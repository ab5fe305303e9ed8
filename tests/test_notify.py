"""systemd integration: sd_notify (READY, STATUS, WATCHDOG, RELOADING, STOPPING), the progress
rule behind the watchdog, SIGHUP reload, and journald log lines.

The daemon tests play systemd's part with a datagram socket of their own (``NOTIFY_SOCKET``) and
``WATCHDOG_USEC`` = 1 s, against a real mosquitto and the daemon as a child process.

A capture thread is made to hang by a real mechanism, not a hook in the daemon: an ``images``
source reads its files by name, and one of them is swapped (atomically) for a FIFO that nobody
writes to, so opening it blocks forever, as a wedged driver call would. A hung inference call
cannot be produced that way from outside the process, so it is covered by the unit tests at the
end, with a real Pipeline and a fake model whose call blocks.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from edge_runtime.capture.files import ImagesSource
from edge_runtime.capture.synthetic import SyntheticSource
from edge_runtime.health.logformat import JournalFormatter, make_formatter, syslog_priority, under_journald
from edge_runtime.health.notify import Notifier, watchdog_interval
from edge_runtime.health.watchdog import Progress, Watchdog, stalls
from edge_runtime.model import ModelSlot
from edge_runtime.pipeline import Pipeline
from edge_runtime.publish.outbox import Outbox
from edge_runtime.service import StatusLine, progress
from tests.timeouts import scaled

from .broker import Broker, Recorder, free_port, wait_for
from .daemon import ROOT, DaemonProcess, make_config, make_video, synthetic_config

INTERVAL = 1.0  # WATCHDOG_USEC of the daemon tests, in seconds
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


class FakeSystemd:
    """The notify socket of a service manager: records every message with its arrival time."""

    def __init__(self, address: str, on_message: Callable[[list[str]], None] | None = None) -> None:
        self.address, self.on_message = address, on_message
        self.messages: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = data.decode().split("\n")
            if self.on_message is not None:
                self.on_message(fields)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def env(self, watchdog_s: float | None = INTERVAL) -> dict[str, str | None]:
        """The child's environment: our socket, the watchdog, and no stray systemd variables."""
        return {
            "NOTIFY_SOCKET": self.address,
            "WATCHDOG_USEC": str(int(watchdog_s * 1e6)) if watchdog_s else None,
            "WATCHDOG_PID": None,
            "JOURNAL_STREAM": None,
            "INVOCATION_ID": None,
        }

    def times(self, field: str, after: float = 0.0) -> list[float]:
        """Arrival times of messages carrying ``field`` (e.g. ``READY=1``), after ``after``."""
        with self._lock:
            return [t for t, fields in self.messages if field in fields and t > after]

    def values(self, key: str) -> list[str]:
        """Values of ``KEY=`` fields in arrival order."""
        with self._lock:
            return [
                f.split("=", 1)[1] for _, fields in self.messages for f in fields if f.startswith(key + "=")
            ]

    def close(self) -> None:
        """Stop receiving and close the socket."""
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    """A fake systemd on an abstract socket (what systemd itself uses in containers)."""
    fake = FakeSystemd(f"@edge-runtime-test-{uuid.uuid4().hex}")
    yield fake
    fake.close()


def gaps(times: list[float]) -> list[float]:
    """Seconds between consecutive events."""
    return [b - a for a, b in itertools.pairwise(times)]


def wait_pings(fake: FakeSystemd, after: float, count: int, timeout: float = 20) -> list[float]:
    """Wait until ``count`` pings came after ``after``; their times."""
    assert wait_for(lambda: len(fake.times("WATCHDOG=1", after)) >= count, timeout)
    return fake.times("WATCHDOG=1", after)


# -- the daemon under a fake systemd ------------------------------------------------------------


def test_ready_after_models_outbox_and_sources_then_status_pings_and_stopping(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """The check systemd makes: READY once really up, regular pings, STOPPING and exit 0 on SIGTERM."""
    config = synthetic_config(tmp_path, broker.port)
    log = tmp_path / "daemon.log"
    outbox = tmp_path / "state" / "outbox.db"
    seen_at_ready: list[tuple[str, bool]] = []

    def on_message(fields: list[str]) -> None:
        if "READY=1" in fields and not seen_at_ready:  # what had happened when READY was sent
            seen_at_ready.append((log.read_text(), outbox.exists()))

    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # AF_UNIX paths are at most 107 bytes
        fake = FakeSystemd(str(Path(short) / "notify.sock"), on_message)
        try:
            daemon = DaemonProcess(config, log, env=fake.env())
            assert wait_for(lambda: bool(fake.times("READY=1")), 90), daemon.log()[-3000:]
            text, outbox_open = seen_at_ready[0]
            assert "model person: ssdlite_mobilenet_v2_person" in text  # models loaded
            assert outbox_open
            assert "pipeline front: synthetic -> person" in text  # sources started
            ready = fake.times("READY=1")[0]

            pings = wait_pings(fake, ready, 9)  # ~4 s at one ping per half interval
            assert max(gaps(pings)) < 1.5 * INTERVAL  # regular, with room for a noisy machine
            assert wait_for(lambda: len(recorder.on("/predictions/front")) >= 5, 30)
            statuses = fake.values("STATUS")
            assert any(
                re.search(r"mqtt connected; front \d+\.\d fps \(streaming\); outbox \d+", s) for s in statuses
            )

            assert daemon.terminate() == 0
            assert fake.times("STOPPING=1") and fake.times("STOPPING=1")[0] > ready
        finally:
            fake.close()
    assert fake.times("READY=1") == [ready]  # exactly one READY in a run without reloads
    first = daemon.log().splitlines()[0]
    assert TIMESTAMP.match(first) and " INFO " in first  # human lines outside systemd's journal
    assert "stopped cleanly" in daemon.log()


def test_a_hung_capture_thread_stops_the_pings_within_two_intervals(
    tmp_path: Path, broker: Broker, systemd: FakeSystemd
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        shutil.copy(ROOT / "tests" / "data" / f"{name}.jpg", folder / f"{name}.jpg")
    source = {"type": "images", "path": str(folder), "fps": 10, "loop": True}
    config = make_config(
        tmp_path,
        broker.port,
        tmp_path / "unused.mp4",
        pipelines=[{"name": "front", "model": "person", "source": source}],
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env=systemd.env())
    assert wait_for(lambda: bool(systemd.times("READY=1")), 90), daemon.log()[-3000:]
    wait_pings(systemd, systemd.times("READY=1")[0], 4)

    fifo = tmp_path / "hang.fifo"
    os.mkfifo(fifo)
    hung_at = time.monotonic()
    fifo.replace(folder / "chelsea.jpg")  # atomic: the source never sees the file missing

    def quiet_for(seconds: float) -> bool:
        last = systemd.times("WATCHDOG=1")[-1]
        return time.monotonic() - last > seconds

    assert wait_for(lambda: quiet_for(3 * INTERVAL), 20), daemon.log()[-3000:]
    last_ping = systemd.times("WATCHDOG=1")[-1]
    # the source reaches the FIFO within one round of 3 images at 10 fps, then the stall limit
    # (one interval) runs out: the last ping is at most two intervals after the swap
    assert last_ping - hung_at < 2 * INTERVAL + 0.5
    log = daemon.log()
    assert re.search(r"WARNING edge_runtime\.health\.watchdog: .*pipeline front: source stuck", log), log[
        -3000:
    ]
    assert any(s.startswith("STALLED: pipeline front: source") for s in systemd.values("STATUS"))
    assert daemon.proc.poll() is None  # still running: killing it is systemd's job
    assert daemon.terminate() == 0  # the stuck thread does not block an orderly stop
    assert systemd.times("STOPPING=1")


def test_a_reconnecting_camera_and_an_ended_file_are_not_hangs(
    tmp_path: Path, broker: Broker, systemd: FakeSystemd
) -> None:
    video = make_video(tmp_path / "v.mp4", 10)
    dead = f"rtsp://127.0.0.1:{free_port()}/stream"
    gate = {
        "type": "rtsp",
        "url": dead,
        "open_timeout_s": 0.3,
        "read_timeout_s": 0.3,
        "reconnect": {"initial_s": 0.2, "max_s": 0.5},
    }
    config = make_config(
        tmp_path,
        broker.port,
        video,
        pipelines=[
            {"name": "gate", "model": "person", "source": gate},
            {"name": "front", "model": "person", "source": {"type": "video", "path": str(video)}},
        ],
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env=systemd.env())
    assert wait_for(lambda: bool(systemd.times("READY=1")), 90), daemon.log()[-3000:]
    assert wait_for(lambda: "source front: ended" in daemon.log(), 60), daemon.log()[-3000:]
    assert wait_for(lambda: "source gate: reconnecting" in daemon.log(), 30), daemon.log()[-3000:]
    after = time.monotonic()
    pings = wait_pings(systemd, after, 7)
    assert max(gaps(pings)) < 1.5 * INTERVAL
    assert daemon.proc.poll() is None
    assert daemon.terminate() == 0
    log = daemon.log()
    assert "holding pings" not in log
    assert "reach the watchdog's stall limit" not in log  # its timeouts are below the limit


def test_sighup_with_a_valid_changed_config_reloads_it(
    tmp_path: Path, broker: Broker, recorder: Recorder, systemd: FakeSystemd
) -> None:
    config = synthetic_config(tmp_path, broker.port, "front")
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env=systemd.env())
    assert wait_for(lambda: bool(systemd.times("READY=1")), 90), daemon.log()[-3000:]
    assert wait_for(lambda: len(recorder.on("/predictions/front")) >= 2, 30)

    synthetic_config(tmp_path, broker.port, "back")  # same file, pipeline renamed
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(systemd.times("READY=1")) >= 2, 90), daemon.log()[-3000:]
    reloading, ready = systemd.times("RELOADING=1"), systemd.times("READY=1")[1]
    assert len(reloading) == 1 and sent < reloading[0] < ready
    # MONOTONIC_USEC is the daemon's CLOCK_MONOTONIC when it began reloading (same clock as ours)
    (usec,) = systemd.values("MONOTONIC_USEC")
    assert sent - 0.5 < int(usec) / 1e6 < reloading[0] + 0.5

    assert wait_for(lambda: len(recorder.on("/predictions/back")) >= 2, 60), daemon.log()[-3000:]
    births = [s for s in recorder.on("/status") if s.get("state") == "online"]
    assert births[-1]["pipelines"] == ["back"]
    wait_pings(systemd, ready, 3)
    assert "reload: running" in daemon.log()
    assert daemon.terminate() == 0


def test_sighup_with_a_broken_config_keeps_the_running_one(
    tmp_path: Path, broker: Broker, recorder: Recorder, systemd: FakeSystemd
) -> None:
    config = synthetic_config(tmp_path, broker.port)
    good = config.read_text()
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env=systemd.env())
    assert wait_for(lambda: bool(systemd.times("READY=1")), 90), daemon.log()[-3000:]
    assert wait_for(lambda: len(recorder.on("/predictions/front")) >= 2, 30)

    data = yaml.safe_load(good)
    data["mqtt"]["port"] = "not-a-port"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    line = config.read_text().splitlines().index("  port: not-a-port") + 1
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(systemd.times("READY=1")) >= 2, 30), daemon.log()[-3000:]
    assert systemd.times("RELOADING=1")[0] < systemd.times("READY=1")[1]

    reasons = [ln for ln in daemon.log().splitlines() if "reload: keeping the running config" in ln]
    assert len(reasons) == 1 and " ERROR " in reasons[0], daemon.log()[-3000:]
    assert f"{config}:{line}: mqtt.port: " in reasons[0]
    before = len(recorder.on("/predictions/front"))
    assert wait_for(lambda: len(recorder.on("/predictions/front")) >= before + 3, 30)  # still running
    wait_pings(systemd, systemd.times("READY=1")[1], 3)
    assert daemon.terminate() == 0


def test_journald_lines_when_stderr_is_the_journal(tmp_path: Path, broker: Broker) -> None:
    """``<N>`` priority prefixes and no timestamps when JOURNAL_STREAM names our stderr."""
    slow = {"type": "rtsp", "url": f"rtsp://127.0.0.1:{free_port()}/x", "open_timeout_s": 5}
    config = synthetic_config(tmp_path, broker.port)
    data = yaml.safe_load(config.read_text())
    data["pipelines"].append({"name": "gate", "model": "person", "source": slow})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    log = tmp_path / "daemon.log"
    log.touch()
    st = log.stat()
    env: dict[str, str | None] = {
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
        "NOTIFY_SOCKET": None,
        "WATCHDOG_USEC": str(int(INTERVAL * 1e6)),  # the gate's 5 s timeout gets a WARNING
        "WATCHDOG_PID": None,
        "INVOCATION_ID": None,
    }
    daemon = DaemonProcess(config, log, env=env)
    assert wait_for(lambda: "edge-runtime running" in daemon.log(), 90), daemon.log()[-3000:]
    assert daemon.terminate() == 0
    # FFmpeg and OpenCV write to the same stderr from C; only our own lines are checked (a
    # traceback's lines name our files, and each carries the prefix too)
    lines = [ln for ln in daemon.log().splitlines() if "edge_runtime" in ln]
    assert len(lines) >= 5 and all(re.match(r"<[2-7]>", ln) for ln in lines), lines
    assert not any(TIMESTAMP.search(ln) for ln in lines)
    assert "<6>edge_runtime.app: model person: ssdlite_mobilenet_v2_person" in lines[0] or any(
        ln.startswith("<6>edge_runtime.app: model person:") for ln in lines
    )
    assert any(ln.startswith("<4>edge_runtime.service: pipeline gate: source timeouts") for ln in lines)


# -- unit tests: the notify client ----------------------------------------------------------------


def test_notifier_without_notify_socket_does_nothing() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.watchdog() is False and notifier.stopping() is False


def test_notifier_sends_one_datagram_per_call_to_a_path_and_to_an_abstract_name() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        for address in (str(Path(short) / "n.sock"), f"@edge-runtime-unit-{uuid.uuid4().hex}"):
            fake = FakeSystemd(address)
            notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
            try:
                assert notifier.ready("up\nand running")
                assert notifier.watchdog()
                assert wait_for(lambda fake=fake: len(fake.messages) == 2, 5)  # type: ignore[misc]
                assert [m for _, m in fake.messages] == [["READY=1", "STATUS=up and running"], ["WATCHDOG=1"]]
            finally:
                notifier.close()
                fake.close()


def test_notifier_keeps_quiet_when_the_manager_is_gone() -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": f"@edge-runtime-nobody-{uuid.uuid4().hex}"})
    assert notifier.enabled
    assert notifier.ready() is False  # no listener: logged once, never raised
    assert Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled is False


def test_reloading_carries_the_monotonic_clock_in_microseconds() -> None:
    fake = FakeSystemd(f"@edge-runtime-unit-{uuid.uuid4().hex}")
    notifier = Notifier.from_env({"NOTIFY_SOCKET": fake.address})
    try:
        before = time.monotonic()
        assert notifier.reloading()
        assert wait_for(lambda: bool(fake.messages), 5)
        fields = fake.messages[0][1]
        assert fields[0] == "RELOADING=1"
        assert before <= int(fields[1].removeprefix("MONOTONIC_USEC=")) / 1e6 <= time.monotonic()
    finally:
        notifier.close()
        fake.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}, 1.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_from_the_environment(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


# -- unit tests: the progress rule ----------------------------------------------------------------

NOW, LIMIT = 1000.0, 2.0


def source(state: str, *, running: bool = True, waiting: bool = False, quiet: float = 0.0) -> Progress:
    return Progress("p", state, running, waiting, NOW - quiet, None)


@pytest.mark.parametrize(
    ("case", "hung"),
    [
        (source("streaming", quiet=0.5), False),  # frames flowing
        (source("streaming", quiet=5), True),  # stuck in read()
        (source("starting", quiet=5), True),  # stuck opening the device
        (source("reconnecting", waiting=True, quiet=30), False),  # backing off between attempts
        (source("streaming", waiting=True, quiet=60), False),  # pacing a slow fps, or back-pressure
        (source("ended", running=False, quiet=600), False),  # a file that ended
        (source("failed", running=False, quiet=600), False),  # gave up; health says so
        (source("streaming", running=False, quiet=600), False),  # thread gone: nothing to wait for
    ],
)
def test_source_rule(case: Progress, hung: bool) -> None:
    assert bool(stalls([case], NOW, LIMIT)) is hung


def test_pipeline_rule_busy_too_long_is_hung_idle_is_not() -> None:
    healthy = source("streaming")
    paused = Progress("idle", "streaming", True, True, NOW - 60, None)  # waiting for frames
    working = Progress("ok", "streaming", True, False, NOW, NOW - LIMIT / 2)
    stuck = Progress("stuck", "streaming", True, True, NOW - 60, NOW - 3 * LIMIT)
    found = stalls([healthy, paused, working, stuck], NOW, LIMIT)
    assert [(s.pipeline, s.stage) for s in found] == [("stuck", "processing")]
    assert str(found[0]) == "pipeline stuck: one frame in processing for 6.0s"


def test_watchdog_pings_only_while_all_progress_and_logs_a_stall_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [NOW]
    state = [source("streaming")]
    pings: list[float] = []
    reports: list[str] = []
    dog = Watchdog(
        lambda: state,
        lambda: pings.append(clock[0]),
        interval_s=2 * LIMIT,
        stall_limit_s=LIMIT,
        report=reports.append,
        clock=lambda: clock[0],
    )
    with caplog.at_level(logging.INFO, "edge_runtime.health.watchdog"):
        assert dog.check()
        state = [Progress("p", "streaming", True, False, NOW, None)]
        for step in (1, 3, 4, 5):
            clock[0] = NOW + step
            dog.check()
        assert pings == [NOW, NOW + 1]  # nothing once the source is stuck past the limit
        assert len(reports) == 3 and reports[0].startswith("STALLED: pipeline p: source stuck")
        state = [source("streaming")]
        clock[0] = NOW
        assert dog.check()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pipeline p: source stuck" in warnings[0].getMessage()
    assert any("progress again" in r.getMessage() for r in caplog.records)


def test_watchdog_thread_pings_every_half_interval() -> None:
    pings: list[float] = []
    dog = Watchdog(list, lambda: pings.append(time.monotonic()), interval_s=0.2, stall_limit_s=0.2)
    dog.start()
    time.sleep(0.75)
    dog.stop()
    assert 5 <= len(pings) <= 10


class BlockingRunner:
    """A model whose calls block until released: a hung inference call, on demand."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.model = SimpleNamespace(describe=lambda: {"name": "m", "version": "1", "sha256": "x"})

    def prepare(self, image: Any) -> tuple[list[Any], None]:
        return [image], None

    def run(self, inputs: list[Any]) -> list[Any]:
        self.entered.set()
        self.release.wait(scaled(30))
        return inputs

    def finish(self, outputs: list[Any], context: Any) -> Any:
        return SimpleNamespace(task="classification", payload=dict)


def test_a_hung_inference_call_is_named_and_its_blocked_source_is_not(tmp_path: Path) -> None:
    """A real Pipeline and lossless source; only the model is fake (its call hangs)."""
    runner = BlockingRunner()
    model = ModelSlot("m", runner)  # type: ignore[arg-type]
    outbox = Outbox(tmp_path / "outbox.db")
    pipeline = Pipeline(
        "front",
        ImagesSource("front", str(ROOT / "tests" / "data"), fps=0, loop=True),
        model,
        outbox,
        topic="t",
        device="d",
    )
    daemon = SimpleNamespace(pipelines=[pipeline])
    pipeline.start()
    try:
        assert runner.entered.wait(scaled(10))
        time.sleep(0.6)  # the source fills the hand-off queue and waits on back-pressure
        found = stalls(progress(daemon), time.monotonic(), 0.3)  # type: ignore[arg-type]
        assert [(s.pipeline, s.stage) for s in found] == [("front", "processing")]
        runner.release.set()
        assert wait_for(lambda: pipeline.metrics.inferred >= 3, 10)
        assert stalls(progress(daemon), time.monotonic(), 0.3) == []  # type: ignore[arg-type]
    finally:
        runner.release.set()
        pipeline.stop(timeout=2)
        outbox.close()


def test_sources_pacing_polling_or_blocked_in_a_call() -> None:
    """Waiting for the next frame time or polling a quiet device is progress; a stuck call is not."""

    class Stuck(SyntheticSource):
        def produce(self) -> None:
            self.set_state("streaming")
            gate.wait()  # a driver call that does not return (not the stop flag)

    class Polling(SyntheticSource):
        def produce(self) -> None:
            self.set_state("streaming")
            while not self.stop_event.is_set():  # e.g. poll() on a quiet sensor FIFO
                gate.wait(0.05)

    gate = threading.Event()
    slow = SyntheticSource("slow", 32, 32, fps=0.1, frames=None)  # one frame per 10 s
    stuck = Stuck("stuck", 32, 32, fps=1, frames=None)
    polling = Polling("polling", 32, 32, fps=1, frames=None)
    sources = (slow, stuck, polling)
    pipelines = [SimpleNamespace(name=s.name, source=s, busy_since=None) for s in sources]
    for s in sources:
        s.start()
    try:
        time.sleep(0.6)
        found = stalls(progress(SimpleNamespace(pipelines=pipelines)), time.monotonic(), 0.3)  # type: ignore[arg-type]
        assert [(s.pipeline, s.stage) for s in found] == [("stuck", "source")]
    finally:
        gate.set()
        for s in sources:
            s.stop(1)


def test_status_line_names_broker_fps_per_pipeline_and_backlog() -> None:
    clock = [0.0]
    metrics = SimpleNamespace(inferred=0)
    pipeline = SimpleNamespace(name="front", metrics=metrics, source=SimpleNamespace(state="streaming"))
    connected = threading.Event()
    daemon = SimpleNamespace(
        pipelines=[pipeline],
        failed_pipelines={"back": "model x did not load"},
        link=SimpleNamespace(connected=connected),
        outbox=SimpleNamespace(pending=7),
    )
    line = StatusLine(clock=lambda: clock[0])
    assert line(daemon) == "mqtt disconnected; front 0.0 fps (streaming), back failed; outbox 7 pending"  # type: ignore[arg-type]
    clock[0], metrics.inferred = 2.0, 30
    connected.set()
    assert line(daemon).startswith("mqtt connected; front 15.0 fps (streaming)")  # type: ignore[arg-type]
    assert line(None) == "reloading"


# -- unit tests: log lines ------------------------------------------------------------------------


def test_journal_formatter_prefixes_every_line_with_the_priority() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "edge_runtime.x", logging.ERROR, __file__, 1, "failed %s", ("now",), sys.exc_info()
        )
    lines = JournalFormatter().format(record).splitlines()
    assert lines[0] == "<3>edge_runtime.x: failed now"
    assert len(lines) > 2 and all(ln.startswith("<3>") for ln in lines)
    assert [syslog_priority(n) for n in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 2]


def test_journal_detection_matches_our_stderr_not_just_any_journal_stream(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        assert under_journald(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not under_journald(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert under_journald(stream, {"INVOCATION_ID": "abc"})  # a unit, stderr not a terminal
        assert not under_journald(stream, {})
        assert isinstance(make_formatter("auto", stream, {}), logging.Formatter)
        assert not isinstance(make_formatter("auto", stream, {}), JournalFormatter)
        assert isinstance(make_formatter("journal", stream, {}), JournalFormatter)
    assert not under_journald(io.StringIO(), {"INVOCATION_ID": "abc"})  # no file descriptor
