"""Start, kill, pause and restart the real RTSP camera of ``rtsp_server.py`` (a child process)."""

from __future__ import annotations

import select
import signal
import subprocess
from pathlib import Path

import pytest

from tests.timeouts import scaled

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi; the venv has no GObject bindings


def rtsp_server_missing() -> str | None:
    """Why the RTSP server cannot run here (None when it can)."""
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst; "
        "Gst.init(None); missing = [e for e in ('videotestsrc', 'x264enc', 'rtph264pay') "
        "if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))"
    )
    try:
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=scaled(60), check=False
        )
    except FileNotFoundError:
        return f"{SYSTEM_PYTHON} not found"
    if proc.returncode != 0:
        return "no GStreamer RTSP server for the system python: apt-get install python3-gi " + (
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly (.ci/run)"
        )
    if proc.stdout.strip():
        return f"GStreamer elements missing: {proc.stdout.strip()} (gstreamer1.0-plugins-good/-ugly)"
    return None


def require_rtsp_server() -> None:
    """Skip the calling test, with the reason, when the RTSP server cannot run."""
    reason = rtsp_server_missing()
    if reason:
        pytest.skip(reason)


class RtspCamera:
    """``rtsp://127.0.0.1:PORT/cam``; each :meth:`start` is a new server process on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> RtspCamera:
        """Start the server and wait until it listens."""
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        started = select.select([self.proc.stdout], [], [], 60)[0]
        line = self.proc.stdout.readline().strip() if started else ""  # "ready", or "" if it died
        if line != "ready":
            self.kill()
            pytest.fail(f"the RTSP server on port {self.port} did not start")
        return self

    def kill(self) -> None:
        """Take the camera away at once (SIGKILL: its connections are reset)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused one must be able to die
            self.proc.kill()
            self.proc.wait(scaled(10))

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is sent, new ones are accepted and not answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
