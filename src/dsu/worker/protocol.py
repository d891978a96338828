"""Worker protocol version 1: parsing request lines, building reply lines, error codes.

Wire format (DESIGN §3, compatible with the seed workers ``dsu-demucs``/``dsu-bsroformer``):
one JSON object per line, UTF-8. A request has ``"cmd"`` and optionally ``"id"`` (a string
or an integer), which every reply and event for it echoes. Each request line gets exactly
one *terminal* reply; ``progress`` lines are events that may precede it. A line that is
empty after stripping ASCII whitespace is ignored (the seed did the same).

Where the seed and DESIGN's table differ, the seed's exact reply wins, so seed clients work
unchanged: ``load_model`` answers ``model_loaded``, ``exit`` answers ``exiting``, and the
seed's ``get_status`` is accepted beside ``status``.

``separate`` takes ``input``, ``output`` and optionally ``model`` — or, instead, ``pipeline``
(a preset name or a spec object, :mod:`dsu.pipeline.spec`) or ``models`` with
``ensemble`` and ``weights``; a pipeline's ``separating`` progress events carry the
``step`` that advanced and its ``done`` reply ``pipeline`` and ``models`` — ``stems``,
``two_stems``, ``format``, ``bit_depth``, ``bitrate``, the engine options ``overlap``,
``shifts``, ``batch_size`` and ``segment`` (for that request only; their ranges are
:mod:`dsu.engine.options`', and a value out of range is ``bad_request``), and ``device``:
a worker runs on the one device it was started with, so ``device`` is accepted only when
it names that device (as ``ready`` reports it, or as given to ``--device``) and is
otherwise ``bad_request``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dsu.errors import BadRequest, DSUError

PROTOCOL_VERSION = 1

# Reply statuses.
READY = "ready"
PONG = "pong"
MODELS = "models"
MODEL_LOADED = "model_loaded"
UNLOADED = "unloaded"
DONE = "done"
PROGRESS = "progress"
STATUS = "status"
CANCELLED = "cancelled"
CANCEL_REQUESTED = "cancel_requested"
EXITING = "exiting"
SHUTDOWN = "shutdown"
ERROR = "error"

EVENT_STATUSES = frozenset({PROGRESS})
"""Statuses that are not the final reply of a request (``ready`` is the first line and
``shutdown`` the last one a signal leaves)."""

CONTROL_COMMANDS = frozenset({"ping", "status", "get_status", "list_models", "cancel"})
"""Commands the reader thread can answer without waiting for the model runner."""

QUEUED_COMMANDS = frozenset({"load_model", "separate", "unload_model"})
"""Commands that use a model: they run one at a time, in arrival order."""

ALL_COMMANDS = CONTROL_COMMANDS | QUEUED_COMMANDS | {"exit"}

MAX_LINE_BYTES = 1 << 20


class UnknownCommand(BadRequest):
    """The ``cmd`` of a request is not part of the protocol."""

    code = "unknown_command"


@dataclass(frozen=True)
class Request:
    """One parsed request line.

    Attributes:
        cmd: the command name.
        fields: every member of the JSON object (``cmd`` and ``id`` included).
        id: the client's id, echoed in every reply; None when the client sent none.
    """

    cmd: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    id: str | int | None = None

    def reply(self, status: str, **fields: Any) -> dict[str, Any]:
        """A reply or event for this request, with its id echoed when it had one."""
        message: dict[str, Any] = {"status": status, **fields}
        if self.id is not None:
            message["id"] = self.id
        return message

    def text(self, name: str) -> str | None:
        """A string field, or None when absent (``null`` counts as absent)."""
        value = self.fields.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise BadRequest(f"field '{name}' must be a non-empty string, got {value!r}")
        return value

    def require(self, name: str) -> str:
        """A string field the command cannot do without."""
        value = self.text(name)
        if value is None:
            raise BadRequest(f"'{self.cmd}' needs the field '{name}' (a string)")
        return value

    def number(self, name: str) -> float | None:
        """A finite number field, or None when absent."""
        value = self.fields.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"field '{name}' must be a number, got {value!r}")
        return float(value)

    def integer(self, name: str) -> int | None:
        """An integer field (``2`` or ``2.0``), or None when absent."""
        value = self.number(name)
        if value is None:
            return None
        if not value.is_integer():
            raise BadRequest(f"field '{name}' must be an integer, got {value!r}")
        return int(value)

    def text_list(self, name: str) -> list[str] | None:
        """A list of strings, also accepted as one comma-separated string (the seed's CLI)."""
        value = self.fields.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise BadRequest(f"field '{name}' must be a list of names, got {value!r}")
        return value


class LineError(Exception):
    """A line that is not a valid request; ``request_id`` is echoed when one was readable."""

    def __init__(self, error: DSUError, request_id: Any = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.request_id = request_id


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_line(raw: bytes) -> Request:
    """Parse one request line (without its newline).

    Raises:
        LineError: the line is not UTF-8 JSON, not an object, lacks a string ``cmd``,
            names an unknown command or carries an id that is neither string nor integer.
    """
    try:
        obj = json.loads(
            raw.decode("utf-8"), parse_float=_finite_float, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LineError(BadRequest(f"not a JSON line: {detail[:200]}")) from None
    if not isinstance(obj, dict):
        raise LineError(BadRequest(f"a request is a JSON object, got {type(obj).__name__}"))
    request_id = obj.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, str | int)
    ):
        raise LineError(BadRequest("field 'id' must be a string or an integer"), request_id)
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise LineError(BadRequest("a request needs a string field 'cmd'"), request_id)
    if cmd not in ALL_COMMANDS:
        known = ", ".join(sorted(ALL_COMMANDS))
        error = UnknownCommand(f"unknown command {cmd[:100]!r}; known: {known}")
        raise LineError(error, request_id)
    return Request(cmd=cmd, fields=obj, id=request_id)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def error_code_and_message(exc: BaseException) -> tuple[str, str]:
    """The protocol's stable code and a one-line message for any exception."""
    if isinstance(exc, DSUError):
        code, message = exc.code, exc.message
    elif _is_out_of_memory(exc):
        code = "out_of_memory"
        message = f"out of memory ({exc}); retry with a smaller batch_size or segment"
    elif isinstance(exc, OSError):
        code, message = "io_error", str(exc)
    else:
        code, message = "internal", f"{type(exc).__name__}: {exc}"
    return code, " ".join(message.split())[:2000] or code


def error_reply(exc: BaseException, request_id: Any = None) -> dict[str, Any]:
    """``{"status": "error", "code", "message", "id"?}`` for an exception."""
    code, message = error_code_and_message(exc)
    reply: dict[str, Any] = {"status": ERROR, "code": code, "message": message}
    if request_id is not None:
        reply["id"] = request_id
    return reply


def encode(message: Mapping[str, Any]) -> bytes:
    """One protocol line: compact ASCII JSON (no NaN) and a newline."""
    try:
        text = json.dumps(message, allow_nan=False, ensure_ascii=True)
    except (TypeError, ValueError) as exc:
        fallback: dict[str, Any] = error_reply(exc)
        request_id = message.get("id")
        if isinstance(request_id, str | int):
            fallback["id"] = request_id
        text = json.dumps(fallback, ensure_ascii=True)
    return text.encode("ascii") + b"\n"
