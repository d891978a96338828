"""Typed errors a user can cause.

Each error carries a stable ``code`` (the worker protocol's and the HTTP API's error
codes, DESIGN §3) and a message that says what went wrong and what to do. Tracebacks are
for bugs; anything a user can trigger with a bad file, a bad name or a bad option raises
one of these.
"""

from __future__ import annotations


class DSUError(Exception):
    """Base class: a user-facing failure with a stable machine-readable code."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(DSUError):
    """A request or option is malformed or out of range."""

    code = "bad_request"


class ModelNotFound(DSUError):
    """No model of that name (or alias) is in the models directory or built in."""

    code = "model_not_found"


class UnsupportedModel(DSUError):
    """The model exists but its architecture or format cannot be run here."""

    code = "model_not_found"


class RegistryError(DSUError):
    """A models directory or ``models.json`` is invalid."""

    code = "bad_request"


class CorruptCheckpoint(RegistryError):
    """A weight file is missing, empty, truncated or not a checkpoint at all."""

    code = "io_error"


class ChecksumMismatch(RegistryError):
    """A weight file's sha256 does not match the registry or catalog."""

    code = "io_error"


class DownloadError(DSUError):
    """A model file could not be fetched."""

    code = "io_error"


class BadAudio(DSUError):
    """An input cannot be decoded or is not usable audio (empty, truncated, NaN, ...)."""

    code = "bad_audio"

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class AudioIOError(DSUError):
    """A file cannot be read or written for a reason outside the audio itself."""

    code = "io_error"


class PathNotAllowed(DSUError):
    """A path lies outside the allowed roots."""

    code = "bad_request"


class Cancelled(DSUError):
    """The operation was cancelled by its caller."""

    code = "cancelled"


class OutOfMemory(DSUError):
    """The device ran out of memory; retry with a smaller batch size or segment."""

    code = "out_of_memory"
