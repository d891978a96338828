"""Error answers of the HTTP API: one JSON shape, one status per error code.

Every error answers ``{"error": {"code", "message"}}`` and none carries a traceback.

Status rule (applied by :data:`STATUS_OF_CODE` and the handlers below):

- **422** ``bad_request``: the request does not match the documented schema: a body that
  is not JSON, a missing or unknown-typed field, a value outside its pattern, enum or
  range (FastAPI's and pydantic's validation, and the same checks on multipart fields).
- **400**: a request that matches the schema but that this server cannot process: base64
  that does not decode, audio that does not decode (``bad_audio``), a model it does not
  have (``model_not_found``), a stem the model does not produce or an mp3 bitrate the
  audio's sample rate cannot take (``bad_request``), a URL it may not contact
  (``url_not_allowed``) or cannot reach (``fetch_failed``).
- 401, 404, 405, 408, 409, 410, 413, 415, 429 as their names say; 503 while the service
  starts or when it is out of memory; 504 when a separation runs past its time limit.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dsu.errors import DSUError
from dsu.service.jobs import QueueFull
from dsu.service.metrics import ServiceMetrics
from dsu.service.schemas import ErrorBody

log = logging.getLogger("dsu.service")

# HTTP status of each error code a user can cause; anything else is a 500.
STATUS_OF_CODE = {
    "bad_request": 400,
    "bad_audio": 400,
    "url_not_allowed": 400,
    "fetch_failed": 400,
    "model_not_found": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "conflict": 409,
    "cancelled": 409,
    "gone": 410,
    "payload_too_large": 413,
    "audio_too_long": 413,
    "unsupported_media_type": 415,
    "queue_full": 429,
    "starting": 503,
    "interrupted": 503,
    "out_of_memory": 503,
    "timeout": 504,
}
# Code of errors raised by Starlette itself (routing, form parsing), by status.
CODE_OF_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "bad_request",
    429: "queue_full",
}
# The documented error answers of the operations.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404, 409, 413, 422, 429)
}
SUBMISSIONS = frozenset({"/separate-sync", "/separate-async"})


class ApiError(StarletteHTTPException):
    """An error answer with a stable code.

    It is an HTTPException so that FastAPI passes it through unchanged even when it is
    raised while FastAPI reads a form body (body limits).
    """

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, message, headers)
        self.code = code
        self.message = message


def schema_error(message: str) -> ApiError:
    """A request that does not match the documented schema (422)."""
    return ApiError(422, "bad_request", message)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON answer of an error."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def api_error(exc: DSUError, message: str | None = None) -> ApiError:
    """The HTTP form of a typed error (``message``: a public rewording of its text)."""
    text = exc.message if message is None else message
    if isinstance(exc, QueueFull):
        return ApiError(429, exc.code, text, {"Retry-After": str(exc.retry_after)})
    return ApiError(STATUS_OF_CODE.get(exc.code, 500), exc.code, text)


def validation_message(errors: Any) -> str:
    """pydantic's error list as one line: ``field: problem; field: problem``."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body",))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Answer every error as ``{"error": {"code", "message"}}``; count refused submissions."""

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        if request.url.path in SUBMISSIONS and exc.status_code < 500:
            metrics.rejected.labels(exc.code).inc()
        return error_response(exc.status_code, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = CODE_OF_STATUS.get(
            exc.status_code, "internal" if exc.status_code >= 500 else "error"
        )
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await on_api_error(request, schema_error(validation_message(exc.errors())))

    @app.exception_handler(DSUError)
    async def on_dsu_error(request: Request, exc: DSUError) -> JSONResponse:
        return await on_api_error(request, api_error(exc))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal error (see the server log)")
