"""The FastAPI app of ``dsu serve`` (DESIGN §4), compatible with the seed's API.

``create_app(settings)`` builds it; uvicorn runs it (``dsu serve``, or
``uvicorn --factory dsu.service.app:create_app`` with the settings from the environment).
Handlers only parse, validate and talk to the queue; separation runs in the worker
thread, and every blocking step of a request (DNS, base64, probing, file copies, SQLite)
runs in a thread so the event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dsu import __version__
from dsu.errors import BadRequest, DSUError
from dsu.service.fetch import AddressPolicy, system_resolver, vet_url
from dsu.service.jobs import (
    COMPLETED,
    FAILED,
    QUEUED,
    TERMINAL,
    JobSpec,
    QueueFull,
    new_key,
)
from dsu.service.metrics import ServiceMetrics
from dsu.service.models import ModelCatalog
from dsu.service.queue import JobQueue, LocalQueue
from dsu.service.runner import check_duration, public_message
from dsu.service.schemas import (
    JOB_ID_PATTERN,
    MIME_TYPES,
    MODEL_PATTERN,
    STEM_PATTERN,
    DeleteResponse,
    ErrorBody,
    Health,
    JobView,
    ModelList,
    ModelView,
    OutputFormat,
    SubmitResponse,
    SyncRequest,
    SyncResponse,
    job_links,
    job_view,
    seed_field,
)
from dsu.service.settings import Settings
from dsu.service.storage import input_extension

log = logging.getLogger("dsu.service")

# HTTP status of each error code a user can cause; anything else is a 500.
STATUS_OF_CODE = {
    "bad_request": 400,
    "url_not_allowed": 400,
    "model_not_found": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "conflict": 409,
    "gone": 410,
    "payload_too_large": 413,
    "audio_too_long": 413,
    "unsupported_media_type": 415,
    "bad_audio": 422,
    "fetch_failed": 422,
    "queue_full": 429,
    "cancelled": 409,
    "timeout": 504,
    "interrupted": 503,
    "out_of_memory": 503,
}
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
# Module level: handler annotations are strings (PEP 563), resolved in module globals.
_bearer = HTTPBearer(auto_error=False, description="one of DSU_API_KEYS, when set")
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404, 409, 413, 422, 429)
}


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


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def api_error(exc: DSUError) -> ApiError:
    """The HTTP form of a typed error."""
    if isinstance(exc, QueueFull):
        return ApiError(429, exc.code, exc.message, {"Retry-After": str(exc.retry_after)})
    return ApiError(STATUS_OF_CODE.get(exc.code, 500), exc.code, exc.message)


# -- middleware ------------------------------------------------------------------------------


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` or slower than ``timeout`` seconds.

    A declared Content-Length over the cap is answered 413 before any byte is read; a
    body without one (chunked) is counted as it streams and stopped at the cap.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "bad_request", "invalid Content-Length")(
                    scope, receive, send
                )
                return
            if int(declared) > self.max_bytes:
                await error_response(
                    413,
                    "payload_too_large",
                    f"request body of {int(declared)} bytes is over the "
                    f"{self.max_bytes}-byte limit",
                )(scope, receive, send)
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        received = 0
        body_done = False

        async def limited() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except TimeoutError:
                raise ApiError(
                    408, "request_timeout", f"request body not received within {self.timeout:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(
                        413,
                        "payload_too_large",
                        f"request body is over the {self.max_bytes}-byte limit",
                    )
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)


class ApiKeys:
    """Require ``Authorization: Bearer <key>`` on every path but the open ones.

    Checked before the app runs, so an unauthenticated client cannot make the server read
    or parse a request body.
    """

    OPEN = frozenset({"/", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"})

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    def allowed(self, header: bytes | None) -> bool:
        scheme, _, given = (header or b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        # Compare with every key so the time taken says nothing about which one matched.
        return any([hmac.compare_digest(given.strip(), key) for key in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.keys
            and scope["path"] not in self.OPEN
            and not self.allowed(dict(scope["headers"]).get(b"authorization"))
        ):
            response = error_response(
                401,
                "unauthorized",
                "a valid API key is required: Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class MetricsMiddleware:
    """Count requests and time them by route template (never by raw path)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)


# -- the app ---------------------------------------------------------------------------------


@dataclass
class Service:
    """What the handlers share: settings, the queue, the model catalog, metrics."""

    settings: Settings
    catalog: ModelCatalog
    metrics: ServiceMetrics
    queue: JobQueue | None = None

    @property
    def jobs(self) -> JobQueue:
        if self.queue is None:
            raise ApiError(503, "starting", "the service is starting; retry in a moment")
        return self.queue


SYNC_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SyncRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string", "pattern": MODEL_PATTERN},
                        "output_format": {"type": "string", "enum": list(MIME_TYPES)},
                        "mp3_bitrate": {"type": "integer", "minimum": 32, "maximum": 320},
                        "two_stems": {"type": "string", "pattern": STEM_PATTERN},
                    },
                }
            },
        },
    }
}

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.IGNORECASE)


def decode_base64_audio(text: str, max_bytes: int) -> tuple[bytes, str | None]:
    """Bytes of a bare or data-URL base64 string, and the mime type a data URL names."""
    mime = None
    match = _DATA_URL.match(text)
    if match:
        mime = match.group(1)
        text = text[match.end() :]
    elif text.startswith("data:"):
        raise BadRequest("audio_base64 is a data URL without ';base64,'")
    if len(text) * 3 // 4 > max_bytes + 3:
        raise ApiError(
            413, "payload_too_large", f"audio_base64 decodes to more than {max_bytes} bytes"
        )
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("audio_base64 is not valid base64") from None
    if not data:
        raise BadRequest("audio_base64 is empty")
    if len(data) > max_bytes:
        raise ApiError(413, "payload_too_large", f"audio is over the {max_bytes}-byte limit")
    return data, mime


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service app; ``settings`` default to :meth:`Settings.from_env`."""
    settings = settings or Settings.from_env()
    catalog = ModelCatalog(settings.models_dir, settings.default_model)
    holder: list[Service] = []
    metrics = ServiceMetrics(
        queue_depth=lambda: float(holder[0].queue.depth()) if holder and holder[0].queue else 0.0
    )
    service = Service(settings, catalog, metrics)
    holder.append(service)
    policy = AddressPolicy(settings.allow_private_urls, settings.url_allowlist)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # torch is imported here, before the port opens, so /health never waits on it.
        await asyncio.to_thread(__import__, "torch")
        queue = await asyncio.to_thread(LocalQueue, settings, metrics)
        try:
            warm = await asyncio.to_thread(catalog.resolve, None)
        except DSUError as exc:
            log.error("default model unavailable: %s", exc.message)
            warm = None
        queue.start(asyncio.get_running_loop(), warm_model=warm)
        service.queue = queue
        log.info("dsu serve: data dir %s, default model %s", settings.data_dir, warm)
        try:
            yield
        finally:
            service.queue = None
            await asyncio.to_thread(queue.stop)

    app = FastAPI(
        title="DSU separation service",
        version=__version__,
        description="Music source separation over HTTP: synchronous base64 requests, "
        "asynchronous URL jobs with signed webhooks (DESIGN §4).",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(ApiKeys, keys=settings.api_keys)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _install_error_handlers(app, metrics)

    # Enforced by ApiKeys before any body is read; declared here for the OpenAPI docs.
    auth = [Depends(_bearer)]

    def base_url(request: Request) -> str:
        return settings.public_url or str(request.base_url)

    async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in a thread, turning typed errors into API errors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except DSUError as exc:
            raise api_error(exc) from None

    @app.get("/", summary="Service information")
    async def root() -> dict[str, Any]:
        return {
            "service": "DSU separation service",
            "version": __version__,
            "model": await asyncio.to_thread(catalog.default),
            "endpoints": {
                "/separate-sync": "POST - synchronous separation (base64 JSON or upload)",
                "/separate-async": "POST - asynchronous separation of audio_url, webhook",
                "/jobs/{job_id}": "GET - job status; DELETE - remove the job",
                "/jobs/{job_id}/files/{stem}": "GET - a result stem",
                "/models": "GET - available models",
                "/health": "GET - health check",
                "/metrics": "GET - Prometheus metrics",
                "/docs": "GET - OpenAPI documentation",
            },
        }

    @app.get("/health", response_model=Health, summary="Health check")
    async def health() -> Health:
        import torch

        queue = service.jobs
        status = queue.status()
        cuda = torch.cuda.is_available()
        hardware = "CPU"
        if status.device.startswith("cuda") and cuda:
            hardware = torch.cuda.get_device_name(torch.device(status.device))
        depth = await asyncio.to_thread(queue.depth)
        return Health(
            status="healthy",
            model=status.model_loaded or catalog.configured_default or "default",
            hardware=hardware,
            torch_version=torch.__version__,
            cuda_available=cuda,
            device=status.device,
            model_loaded=status.model_loaded is not None,
            model_error=status.load_error,
            queue_depth=depth,
            version=__version__,
        )

    @app.get("/models", response_model=ModelList, dependencies=auth, summary="Available models")
    def models() -> ModelList:
        return ModelList(
            default=catalog.default(),
            models=[
                ModelView(
                    name=m.name,
                    arch=m.arch,
                    stems=list(m.stems),
                    description=m.description,
                    aliases=list(m.aliases),
                    license=m.license,
                )
                for m in catalog.models()
            ],
        )

    @app.get("/metrics", dependencies=auth, summary="Prometheus metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post(
        "/separate-sync",
        response_model=SyncResponse,
        responses={**ERRORS, 504: {"model": ErrorBody}},
        dependencies=auth,
        openapi_extra=SYNC_BODY_DOC,
        summary="Separate now; the stems come back base64-encoded",
    )
    async def separate_sync(request: Request) -> SyncResponse:
        started = time.monotonic()
        queue = service.jobs
        await blocking(queue.check_capacity)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        key = new_key()
        try:
            if content_type == "multipart/form-data":
                fields = await _sync_upload(request, queue, key, settings.max_upload_bytes)
            elif content_type in ("application/json", ""):
                fields = await _sync_json(request, queue, key, settings.max_upload_bytes)
            else:
                raise ApiError(
                    415,
                    "unsupported_media_type",
                    "send application/json with audio_base64, or multipart/form-data with file",
                )
            model = await blocking(catalog.resolve, fields.model)
            source = queue.storage.find_input(key)
            try:
                await asyncio.to_thread(check_duration, source, settings.max_duration)
            except DSUError as exc:
                error = api_error(exc)
                raise ApiError(
                    error.status_code, exc.code, public_message(exc, source, "audio")
                ) from None
            spec = JobSpec(
                model=model,
                output_format=fields.output_format,
                bitrate=fields.mp3_bitrate,
                two_stems=fields.two_stems,
                base_url=base_url(request),
            )
            job, _ = await blocking(queue.submit, None, "sync", spec, key)
        except BaseException:
            await asyncio.to_thread(queue.storage.delete, key)
            raise
        try:
            while True:
                latest = await queue.wait(job.id, timeout=1.0)
                if latest is None:
                    raise ApiError(410, "gone", "the job was deleted before it finished")
                if latest.status in TERMINAL:
                    break
                if await request.is_disconnected():
                    log.info("job %s: client went away, cancelling", job.id)
                    await asyncio.to_thread(queue.delete, job.id)
                    return Response(status_code=499)  # type: ignore[return-value]
            if latest.status == FAILED:
                code = latest.error_code or "internal"
                raise ApiError(STATUS_OF_CODE.get(code, 500), code, latest.error_message or code)
            return await asyncio.to_thread(_sync_result, queue, latest, time.monotonic() - started)
        finally:
            await asyncio.to_thread(queue.delete, job.id)

    @app.post(
        "/separate-async",
        response_model=SubmitResponse,
        status_code=202,
        responses={**ERRORS, 200: {"model": SubmitResponse, "description": "job_id existed"}},
        dependencies=auth,
        summary="Queue a separation of audio_url; the webhook is called when it ends",
    )
    async def separate_async(
        request: Request,
        response: Response,
        audio_url: Annotated[str, Form(max_length=2048, description="public http(s) URL")],
        job_id: Annotated[
            str | None, Form(pattern=JOB_ID_PATTERN, description="idempotency key")
        ] = None,
        webhook_url: Annotated[str | None, Form(max_length=2048)] = None,
        model: Annotated[str | None, Form(pattern=MODEL_PATTERN)] = None,
        output_format: Annotated[OutputFormat, Form()] = "mp3",
        mp3_bitrate: Annotated[int, Form(ge=32, le=320)] = 192,
        two_stems: Annotated[str | None, Form(pattern=STEM_PATTERN)] = None,
    ) -> SubmitResponse:
        queue = service.jobs
        await blocking(vet_url, audio_url, policy, system_resolver, "audio_url")
        if webhook_url:
            await blocking(vet_url, webhook_url, policy, system_resolver, "webhook_url")
        resolved = await blocking(catalog.resolve, model)
        spec = JobSpec(
            model=resolved,
            output_format=output_format,
            bitrate=mp3_bitrate,
            two_stems=two_stems,
            audio_url=audio_url,
            webhook_url=webhook_url or None,
            input_name=None,
            base_url=base_url(request),
        )
        job, created = await blocking(queue.submit, job_id, "async", spec)
        position = await asyncio.to_thread(queue.position, job)
        if job.status == QUEUED:
            # The worker may have taken it already: it is then at the front, not gone.
            position = max(position, 1)
        if not created:
            response.status_code = 200
        return SubmitResponse(
            job_id=job.id,
            status=job.status,
            queue_position=position,
            message=(
                f"Job queued (position {position}); it runs when the jobs before it are done."
                if created
                else f"Job {job.id} exists already; this is its current state."
            ),
            created=created,
            links=job_links(job),
        )

    @app.get(
        "/jobs/{job_id}",
        response_model=JobView,
        responses=ERRORS,
        dependencies=auth,
        summary="A job's state, result links and webhook delivery",
    )
    def get_job(job_id: str) -> JobView:
        queue = service.jobs
        job = queue.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return job_view(job, queue.position(job))

    @app.get(
        "/jobs/{job_id}/files/{stem}",
        responses={**ERRORS, 200: {"content": {m: {} for m in MIME_TYPES.values()}}},
        response_class=FileResponse,
        dependencies=auth,
        summary="Download one stem of a completed job",
    )
    def get_file(job_id: str, stem: str) -> FileResponse:
        queue = service.jobs
        job = queue.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        if job.status != COMPLETED or not job.result:
            raise ApiError(409, "conflict", f"job {job_id!r} is {job.status}, not completed")
        info = job.result["stems"].get(stem)
        path = queue.storage.result_file(job.key, info["file"]) if info else None
        if info is None or path is None:
            raise ApiError(404, "not_found", f"job {job_id!r} has no stem {stem!r}")
        fmt = job.result["format"]
        return FileResponse(path, media_type=MIME_TYPES[fmt], filename=f"{stem}.{fmt}")

    @app.delete(
        "/jobs/{job_id}",
        response_model=DeleteResponse,
        responses=ERRORS,
        dependencies=auth,
        summary="Remove a job and its files (a queued or running job is cancelled)",
    )
    def delete_job(job_id: str) -> DeleteResponse:
        job = service.jobs.delete(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return DeleteResponse(job_id=job.id, was=job.status)

    return app


@dataclass(frozen=True)
class _SyncFields:
    model: str | None
    output_format: str
    mp3_bitrate: int
    two_stems: str | None


async def _sync_json(request: Request, queue: JobQueue, key: str, max_bytes: int) -> _SyncFields:
    body = await request.body()
    try:
        parsed = await asyncio.to_thread(SyncRequest.model_validate_json, body)
    except ValidationError as exc:
        raise ApiError(422, "bad_request", _validation_message(exc.errors())) from None
    try:
        data, mime = await asyncio.to_thread(decode_base64_audio, parsed.audio_base64, max_bytes)
    except DSUError as exc:
        raise api_error(exc) from None
    path = queue.storage.input_path(key, input_extension(mime))
    await asyncio.to_thread(path.write_bytes, data)
    return _SyncFields(parsed.model, parsed.output_format, parsed.mp3_bitrate, parsed.two_stems)


async def _sync_upload(request: Request, queue: JobQueue, key: str, max_bytes: int) -> _SyncFields:
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "bad_request", "multipart body needs a 'file' part with the audio")
        values = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
        try:
            fields = SyncRequest.model_validate({"audio_base64": "-", **values})
        except ValidationError as exc:
            raise ApiError(422, "bad_request", _validation_message(exc.errors())) from None
        path = queue.storage.input_path(key, input_extension(upload.filename))
        size = await asyncio.to_thread(_copy_upload, upload, path, max_bytes)
        if size == 0:
            raise ApiError(422, "bad_request", "the uploaded file is empty")
    return _SyncFields(fields.model, fields.output_format, fields.mp3_bitrate, fields.two_stems)


def _copy_upload(upload: UploadFile, path: Path, max_bytes: int) -> int:
    upload.file.seek(0, 2)
    size = upload.file.tell()
    if size > max_bytes:
        raise ApiError(413, "payload_too_large", f"audio is over the {max_bytes}-byte limit")
    upload.file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return size


def _sync_result(queue: JobQueue, job: Any, elapsed: float) -> SyncResponse:
    """The seed's response: ``<stem>_base64`` and ``<stem>_size`` per stem."""
    result = job.result
    fmt = result["format"]
    extra: dict[str, Any] = {}
    for stem, info in result["stems"].items():
        path = queue.storage.result_file(job.key, info["file"])
        if path is None:
            raise ApiError(500, "internal", "a result file disappeared before it was sent")
        data = path.read_bytes()
        name = seed_field(stem)
        extra[f"{name}_base64"] = base64.b64encode(data).decode()
        extra[f"{name}_size"] = len(data)
    return SyncResponse(
        model=result["model"],
        format=fmt,
        duration=round(elapsed, 3),
        job_id=job.id,
        stems=list(result["stems"]),
        mime_type=MIME_TYPES[fmt],
        samplerate=result.get("samplerate"),
        **extra,
    )


def _validation_message(errors: Any) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body",))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


SUBMISSIONS = frozenset({"/separate-sync", "/separate-async"})


def _install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    """Every error answers ``{"error": {"code", "message"}}``; none carries a traceback."""

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
        if request.url.path in SUBMISSIONS:
            metrics.rejected.labels("bad_request").inc()
        return error_response(422, "bad_request", _validation_message(exc.errors()))

    @app.exception_handler(DSUError)
    async def on_dsu_error(request: Request, exc: DSUError) -> JSONResponse:
        return await on_api_error(request, api_error(exc))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal error (see the server log)")
