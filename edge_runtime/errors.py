"""The project's exception hierarchy (a leaf module: imports nothing from the package).

Bad input (a missing file, a model that fits no decoder, a malformed config) raises a subclass of
:class:`InputError`; the CLI turns those into exit code 2 with a one-line message. Everything else
that derives from :class:`EdgeRuntimeError` is an internal or environmental failure (exit 1).
"""

from __future__ import annotations


class EdgeRuntimeError(Exception):
    """Base class of every error the package raises on purpose."""


class InputError(EdgeRuntimeError):
    """Something the user gave us is wrong: a path, a value, a file's content."""


class ConfigError(InputError):
    """A config file or a model.yaml is invalid."""


class ModelError(InputError):
    """A model file or bundle cannot be loaded or does not fit any known family."""


class ImageError(InputError):
    """An input image cannot be read or decoded."""


class UpdateError(InputError):
    """A model update is refused: bad signature, expired, a downgrade, bad bytes, failed tests."""


class BackendUnavailableError(EdgeRuntimeError):
    """The runtime a backend needs is not installed (say which extra to install)."""


class AcceleratorError(EdgeRuntimeError):
    """A requested accelerator (delegate / execution provider) cannot be used here."""


class BackendClosedError(EdgeRuntimeError):
    """A call reached a backend after it was closed (a model update replaced it)."""


class OutboxClosedError(EdgeRuntimeError):
    """A late thread reached the outbox after a stop or reload closed it; nothing was stored."""


class MalformedLineError(InputError, ValueError):
    """A sensor line that is not a sample in the configured format (skipped and counted)."""


class DeviceLostError(EdgeRuntimeError):
    """A sensor device or stream went away; the source reopens it with backoff."""


class StreamEndedError(EdgeRuntimeError):
    """A finite sensor stream (a regular file, stdin) is over; the source ends."""


class DriverUnavailableError(EdgeRuntimeError):
    """A sensor driver cannot work with this config or install (e.g. pyserial missing)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (third-party messages can be pages long)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


class OutboxUnavailableError(EdgeRuntimeError):
    """The outbox cannot store messages now (a full disk, an I/O error); nothing was stored."""


class ControlError(InputError):
    """A remote command or config document is refused: unsigned, stale, replayed, malformed."""
