"""Under journald every reason for a failure carries a priority of warning or above.

journald reads a ``<N>`` prefix at the start of each line of a service's stderr and files a line
without one at info, where ``journalctl -p warning`` does not show it. What the logging module
writes has the prefix (test_notify.py); these tests cover what does not go through it: the CLI's
fatal error, the fault handler's stack dump (written from C when systemd's watchdog sends
SIGABRT), and OpenCV's and FFmpeg's own lines. As in test_notify.py, stderr is a file that
``JOURNAL_STREAM`` names, which is how the daemon knows its stderr is the journal; journald's
stream socket is played by a listening socket of the test's own.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import yaml

from tests.timeouts import scaled

from .broker import Broker, Recorder, free_port, wait_for
from .daemon import ROOT, DaemonProcess, synthetic_config

PRIORITY = re.compile(r"<[0-7]>")


def journal_env(stderr_file: Path) -> dict[str, str | None]:
    """The environment of a service whose stderr is ``stderr_file`` connected to the journal."""
    st = stderr_file.stat()
    return {
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
        "INVOCATION_ID": None,
        "NOTIFY_SOCKET": None,
        "WATCHDOG_USEC": None,
        "WATCHDOG_PID": None,
    }


def run_edge_runtime(args: list[str], stderr_file: Path, env: dict[str, str | None]) -> int:
    child_env = dict(os.environ)
    for name, value in env.items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
    with stderr_file.open("ab") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_runtime", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=child_env,
            cwd=ROOT,
            timeout=scaled(120),
            check=False,
        )
    return proc.returncode


def test_a_fatal_start_error_is_priority_err_under_journald(tmp_path: Path) -> None:
    """``edge-runtime: error: ...`` of a start that fails, with ``<3>`` on each of its lines."""
    config = tmp_path / "config.yaml"
    config.write_text("mqtt: {port: not-a-port}\npipelines: []\n")  # three problems, three lines
    stderr = tmp_path / "stderr"
    stderr.touch()
    assert run_edge_runtime(["run", str(config)], stderr, journal_env(stderr)) == 2
    lines = stderr.read_text().splitlines()
    assert lines[0].startswith(f"<3>edge-runtime: error: {config}:1: mqtt.port: "), lines
    assert len(lines) == 3 and all(line.startswith("<3>") for line in lines), lines

    terminal = tmp_path / "terminal"  # not the journal: the plain line, as before
    terminal.touch()
    off = {"JOURNAL_STREAM": None, "INVOCATION_ID": None}
    assert run_edge_runtime(["run", str(config)], terminal, off) == 2
    assert terminal.read_text().startswith(f"edge-runtime: error: {config}:1: mqtt.port: ")


def test_the_fault_handlers_dump_goes_to_a_journal_stream_at_priority_err(tmp_path: Path) -> None:
    """SIGABRT (what systemd's watchdog sends): every thread's stack, on a stream whose header
    says priority 3 and the identifier edge-runtime; nothing of it on the plain stderr."""
    stderr = tmp_path / "stderr"
    stderr.touch()
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # AF_UNIX paths are at most 107 bytes
        journald = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        journald.bind(str(Path(short) / "stdout"))
        journald.listen(4)
        journald.settimeout(60)
        child = textwrap.dedent(
            f"""
            import os, signal, threading
            from edge_runtime.health.logformat import send_fault_dumps_to_journal
            assert send_fault_dumps_to_journal(path={str(Path(short) / "stdout")!r})
            threading.Thread(target=threading.Event().wait, name="stuck", daemon=True).start()
            os.kill(os.getpid(), signal.SIGABRT)
            """
        )
        env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID",)}
        env |= {"PYTHONFAULTHANDLER": "1", "JOURNAL_STREAM": journal_env(stderr)["JOURNAL_STREAM"] or ""}
        with stderr.open("ab") as err:
            proc = subprocess.Popen([sys.executable, "-c", child], stderr=err, env=env, cwd=ROOT)
        conn, _ = journald.accept()
        conn.settimeout(60)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        conn.close()
        journald.close()
    assert proc.wait(scaled(60)) == -signal.SIGABRT
    header, dump = received.decode().split("\n")[:7], received.decode().split("\n")[7:]
    assert header == ["edge-runtime", "", "3", "0", "0", "0", "0"]  # identifier, unit, priority err
    text = "\n".join(dump)
    assert "Fatal Python error: Aborted" in text
    assert text.count("(most recent call first)") >= 2  # every thread, the stuck one too
    assert "most recent call first" not in stderr.read_text()


def test_no_library_writes_a_line_without_a_priority_while_a_camera_is_away(
    tmp_path: Path, broker: Broker, recorder: Recorder
) -> None:
    """A refused RTSP camera, tried again and again: OpenCV and FFmpeg used to write two lines of
    their own per attempt; now every line is ours, and the lost camera is a warning."""
    config = synthetic_config(tmp_path, broker.port)
    data = yaml.safe_load(config.read_text())
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    gate = {"type": "rtsp", "url": url, "reconnect": {"initial_s": 0.1, "max_s": 0.2}}
    data["pipelines"].append({"name": "gate", "model": "person", "source": gate})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    log = tmp_path / "daemon.log"
    log.touch()
    daemon = DaemonProcess(config, log, env=journal_env(log))

    def attempts() -> int:
        health = recorder.on("/health")
        return int(health[-1]["pipelines"]["gate"]["reconnects"]) if health else 0

    assert wait_for(lambda: attempts() >= 10, 90), daemon.log()[-3000:]
    assert daemon.terminate() == 0
    lines = daemon.log().splitlines()
    assert [ln for ln in lines if not PRIORITY.match(ln)] == []
    assert any(ln.startswith("<4>edge_runtime.capture.base: source gate: reconnecting (") for ln in lines)


def test_pythons_own_last_resort_reports_carry_a_priority(tmp_path: Path) -> None:
    """An exception that ends a thread (error) and one raised in ``__del__`` (warning) go through
    logging instead of Python's bare stderr print."""
    child = textwrap.dedent(
        """
        import logging, threading
        from edge_runtime.health.logformat import configure_logging
        configure_logging(logging.INFO)
        class Leaky:
            def __del__(self):
                raise RuntimeError("in __del__")
        Leaky()
        thread = threading.Thread(target=lambda: 1 / 0, name="worker")
        thread.start()
        thread.join()
        """
    )
    stderr = tmp_path / "stderr"
    stderr.touch()
    env = {k: v for k, v in os.environ.items() if k != "INVOCATION_ID"}
    env["JOURNAL_STREAM"] = journal_env(stderr)["JOURNAL_STREAM"] or ""
    with stderr.open("ab") as err:
        subprocess.run(
            [sys.executable, "-c", child], stderr=err, env=env, cwd=ROOT, timeout=scaled(60), check=True
        )
    lines = stderr.read_text().splitlines()
    assert [ln for ln in lines if not PRIORITY.match(ln)] == []
    assert any(ln.startswith("<4>edge_runtime: Exception ignored in: ") for ln in lines), lines
    assert "<3>edge_runtime: thread worker ended by an exception" in lines, lines
    assert "<3>ZeroDivisionError: division by zero" in lines
