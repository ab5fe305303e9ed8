"""A small client of systemd's notification protocol (``sd_notify``), without libsystemd.

systemd passes ``NOTIFY_SOCKET`` to a ``Type=notify`` service: the address of an ``AF_UNIX``
datagram socket, either a path or, when it starts with ``@``, a name in the abstract namespace.
Each message is one datagram of newline-separated ``KEY=VALUE`` fields (``READY=1``,
``STATUS=...``, ``WATCHDOG=1``, ...). Without ``NOTIFY_SOCKET`` every call here does nothing, so
the daemon runs the same from a terminal.

``WATCHDOG_USEC`` (set from ``WatchdogSec=``) is the interval within which systemd wants a
``WATCHDOG=1``; when ``WATCHDOG_PID`` is also set, the watchdog is meant for that process only
(a helper started by the service must not ping for it). What the daemon pings for, and when it
stops, is the business of :mod:`edge_runtime.health.watchdog`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

logger = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog interval in seconds that systemd asks of process ``pid``; None when off.

    Off when ``WATCHDOG_USEC`` is unset, zero or not a number, and when ``WATCHDOG_PID`` names
    another process.
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC", "").strip()
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(raw)
    except ValueError:
        logger.warning("ignoring WATCHDOG_USEC=%r: not a whole number of microseconds", raw)
        return None
    return usec / 1e6 if usec > 0 else None


def _address(value: str) -> str | bytes | None:
    """The ``sendto`` address of a ``NOTIFY_SOCKET`` value (None: a kind we do not speak)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace: a leading NUL instead of '@'
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:CID:PORT" (VMs); not used on the boards we run on


class Notifier:
    """Sends notifications to ``NOTIFY_SOCKET``; every method is a no-op when it is not set.

    Safe to call from several threads (one datagram per call). A failed send is logged once and
    never raises: the service manager going away must not take the daemon down with it.
    """

    def __init__(self, notify_socket: str | None) -> None:
        self.address = _address(notify_socket) if notify_socket else None
        self._sock: socket.socket | None = None
        self._warned = False
        if notify_socket and self.address is None:
            logger.warning("NOTIFY_SOCKET=%s: unsupported address; not notifying", notify_socket)
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for this process's ``NOTIFY_SOCKET`` (a no-op one when unset)."""
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        """True when messages actually go somewhere."""
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=VALUE`` each) as one message; True when it was sent."""
        sock = self._sock
        if sock is None or self.address is None:
            return False
        try:
            sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                logger.warning("cannot notify the service manager: %s", exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up or a reload is complete."""
        return self.send("READY=1", *([_status(status)] if status else []))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with the monotonic time systemd 253+ matches reloads by (older ones ignore it)."""
        stamp = f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        return self.send("RELOADING=1", stamp, *([_status(status)] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.send("STOPPING=1", *([_status(status)] if status else []))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: we are alive and making progress."""
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """``STATUS=``: one line shown by ``systemctl status``."""
        return self.send(_status(text))

    def close(self) -> None:
        """Close the socket; later calls do nothing."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    # a newline would start a new field of the message
    return "STATUS=" + " ".join(text.split("\n"))
