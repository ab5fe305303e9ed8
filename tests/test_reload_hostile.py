"""SIGHUP with hostile config files: the daemon keeps running its config, logs one short line each.

One real daemon under a fake systemd (tests/test_notify.py has the happy paths) is sent SIGHUP
after each of the files that used to hang ``validate`` or end it in a traceback: every reload must
answer ``RELOADING=1`` then ``READY=1``, log why the file was refused (``FILE:LINE: ...``), and the
pipeline must go on publishing with the old config.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .broker import Broker, Recorder, wait_for
from .config.test_hostile_configs import HOSTILE
from .daemon import DaemonProcess, synthetic_config
from .test_notify import FakeSystemd

# the kinds that used to hang or crash, and a few that are odd rather than malicious
KINDS = [
    "billion laughs",
    "recursive alias (mapping)",
    "30,000-deep flow nesting",
    "depth through aliases",
    "merge key of a scalar",
    "5,000-digit integer",
    "python object tag",
    "not UTF-8",
    "infinite interval",
    "two documents",
]
KEPT = "reload: keeping the running config"


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd(f"@edge-runtime-test-{uuid.uuid4().hex}")
    yield fake
    fake.close()


def test_sighup_with_hostile_files_keeps_the_running_config(
    tmp_path: Path, broker: Broker, recorder: Recorder, systemd: FakeSystemd
) -> None:
    config = synthetic_config(tmp_path, broker.port)
    good = config.read_bytes()
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env=systemd.env())
    assert wait_for(lambda: bool(systemd.times("READY=1")), 90), daemon.log()[-3000:]
    assert wait_for(lambda: len(recorder.on("/predictions/front")) >= 2, 30)

    def reload_refused(*expected: str) -> None:
        readies, kept = len(systemd.times("READY=1")), daemon.log().count(KEPT)
        daemon.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: len(systemd.times("READY=1")) > readies, 30), daemon.log()[-3000:]
        assert wait_for(lambda: daemon.log().count(KEPT) > kept, 10), daemon.log()[-3000:]
        line = [ln for ln in daemon.log().splitlines() if KEPT in ln][-1]
        assert all(e in line for e in expected) and len(line) < 1000, line
        assert daemon.proc.poll() is None

    for kind in KINDS:
        content, line, fragment = HOSTILE[kind]
        config.write_bytes(content if isinstance(content, bytes) else content.encode())
        reload_refused(f"{config}:{line}: ", fragment)

    config.unlink()  # the file gone, then a directory or a FIFO in its place
    reload_refused(f"{config}: file not found")
    config.mkdir()
    reload_refused(f"{config}: a directory, not a file")
    config.rmdir()
    os.mkfifo(config)  # opening it would block the daemon's main loop
    reload_refused(f"{config}: not a regular file")
    config.unlink()
    config.write_bytes(good)

    before = len(recorder.on("/predictions/front"))
    assert wait_for(lambda: len(recorder.on("/predictions/front")) >= before + 3, 30), daemon.log()[-3000:]
    assert "Traceback" not in daemon.log()
    assert daemon.terminate() == 0
