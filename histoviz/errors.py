"""Exceptions raised by histoviz. Every message names the input and says what to do."""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "ConfigError",
    "DataError",
    "EncoderError",
    "LockedError",
    "HistovizError",
    "ImplausibleMppError",
    "MissingMppError",
    "MissingWeightsError",
    "WeightsMismatchError",
    "NoTissueError",
    "SlideOpenError",
    "StorageError",
]


class HistovizError(Exception):
    """Base class of all errors raised on bad user input."""


class SlideOpenError(HistovizError, OSError):
    """A slide file is missing, unreadable, truncated or in an unsupported format."""


class MissingMppError(HistovizError, ValueError):
    """A slide has no microns-per-pixel and the operation needs one."""


class ImplausibleMppError(MissingMppError):
    """An mpp value (recorded or given) is outside what a slide scan can have, or a target
    mpp would upsample the slide too far."""


class NoTissueError(HistovizError, ValueError):
    """The tissue mask of a slide is empty, so there is nothing to tile."""


class EncoderError(HistovizError, ValueError):
    """Unknown encoder name or bad encoder arguments."""


class MissingWeightsError(HistovizError, FileNotFoundError):
    """Pretrained weights for an encoder are not on this machine."""


class WeightsMismatchError(MissingWeightsError):
    """A weights file was found but its tensors do not fit the encoder (names or shapes),
    or it is not a readable state dict."""


class ConfigError(HistovizError, ValueError):
    """A configuration file or value is invalid (unknown key, wrong type, out of range)."""


class DataError(HistovizError, ValueError):
    """A table, feature bag or omics file does not satisfy its data contract."""


class StorageError(HistovizError, OSError):
    """A cache or output folder lacks space or cannot be written (``path``: where, when known)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class LockedError(HistovizError, RuntimeError):
    """Another live process holds the lock of an output (a slide being embedded)."""


class Cancelled(HistovizError):
    """Long work (embedding, prediction) was stopped through its ``cancel_event``."""
