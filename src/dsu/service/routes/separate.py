"""``POST /separate-sync`` and ``POST /separate-async``: check a request, then queue it.

Everything a request can get wrong is refused here, before it is queued: the model and
its stems (or the pipeline's spec, stem references and models:
:mod:`dsu.service.pipelines`), the output encoding (for an upload, against the audio's
own sample rate; for a URL, once the worker has it), the audio's length, the URLs'
addresses.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from dsu.errors import DSUError
from dsu.service.checks import (
    MP3_BITRATES,
    check_duration,
    check_encoding,
    check_output,
    check_two_stems,
)
from dsu.service.deps import AUTH, QueueDep, Service, ServiceDep, base_url, blocking
from dsu.service.errors import ERRORS, STATUS_OF_CODE, ApiError, api_error, schema_error
from dsu.service.fetch import system_resolver, vet_url
from dsu.service.jobs import FAILED, QUEUED, TERMINAL, Job, JobSpec, new_key
from dsu.service.pipelines import PipelineFields, request_pipeline, spec_document
from dsu.service.queue import JobQueue
from dsu.service.schemas import (
    BITRATE_DOC,
    DEFAULT_FORMAT,
    ENSEMBLE_DOC,
    JOB_ID_PATTERN,
    MIME_TYPES,
    MODEL_PATTERN,
    MODELS_DOC,
    PIPELINE_DOC,
    STEM_PATTERN,
    WEIGHTS_DOC,
    Algorithm,
    ErrorBody,
    OutputFormat,
    SubmitResponse,
    SyncResponse,
    job_links,
    seed_field,
)
from dsu.service.uploads import (
    SYNC_BODY_DOC,
    form_list,
    form_numbers,
    read_json,
    read_upload,
    store_upload,
)

log = logging.getLogger("dsu.service")

router = APIRouter(dependencies=AUTH)


@router.post(
    "/separate-sync",
    response_model=SyncResponse,
    responses={**ERRORS, 504: {"model": ErrorBody}},
    openapi_extra=SYNC_BODY_DOC,
    summary="Separate now; the stems come back base64-encoded",
)
async def separate_sync(request: Request, service: ServiceDep, queue: QueueDep) -> SyncResponse:
    started = time.monotonic()
    settings = service.settings
    await blocking(queue.check_capacity)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    key = new_key()
    try:
        if content_type == "multipart/form-data":
            fields = await read_upload(request, queue.storage, key, settings.max_upload_bytes)
        elif content_type in ("application/json", ""):
            fields = await read_json(request, queue.storage, key, settings.max_upload_bytes)
        else:
            raise ApiError(
                415,
                "unsupported_media_type",
                "send application/json with audio_base64, or multipart/form-data with file",
            )
        name, pipeline = await _what_runs(service, fields.model, fields.two_stems, fields.pipeline)
        await blocking(check_output, fields.output_format, fields.mp3_bitrate)
        await _check_stored_audio(service, queue, key, fields.output_format, fields.mp3_bitrate)
        spec = JobSpec(
            model=name,
            output_format=fields.output_format,
            bitrate=fields.mp3_bitrate,
            two_stems=fields.two_stems,
            base_url=base_url(request, settings),
            pipeline=pipeline,
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


@router.post(
    "/separate-async",
    response_model=SubmitResponse,
    status_code=202,
    responses={**ERRORS, 200: {"model": SubmitResponse, "description": "job_id existed"}},
    summary="Queue a separation of audio_url or an uploaded file; the webhook is called "
    "when it ends",
)
async def separate_async(
    request: Request,
    response: Response,
    service: ServiceDep,
    queue: QueueDep,
    audio_url: Annotated[
        str | None, Form(max_length=2048, description="public http(s) URL; or send file")
    ] = None,
    file: Annotated[UploadFile | None, File(description="the audio, instead of audio_url")] = None,
    job_id: Annotated[
        str | None, Form(pattern=JOB_ID_PATTERN, description="idempotency key")
    ] = None,
    webhook_url: Annotated[str | None, Form(max_length=2048)] = None,
    model: Annotated[str | None, Form(pattern=MODEL_PATTERN)] = None,
    output_format: Annotated[OutputFormat, Form()] = DEFAULT_FORMAT,
    mp3_bitrate: Annotated[
        int | None, Form(ge=MP3_BITRATES[0], le=MP3_BITRATES[-1], description=BITRATE_DOC)
    ] = None,
    two_stems: Annotated[str | None, Form(pattern=STEM_PATTERN)] = None,
    pipeline: Annotated[str | None, Form(max_length=16384, description=PIPELINE_DOC)] = None,
    models: Annotated[
        list[str] | None, Form(description=f"{MODELS_DOC}; repeated fields or one a,b list")
    ] = None,
    ensemble: Annotated[Algorithm | None, Form(description=ENSEMBLE_DOC)] = None,
    weights: Annotated[
        list[str] | None, Form(description=f"{WEIGHTS_DOC}; repeated fields or one 2,1 list")
    ] = None,
) -> SubmitResponse:
    policy = service.policy
    if (file is None) == (not audio_url):
        raise schema_error("send the audio as either audio_url or a file part, not both")
    if audio_url:
        await blocking(vet_url, audio_url, policy, system_resolver, "audio_url")
    if webhook_url:
        await blocking(vet_url, webhook_url, policy, system_resolver, "webhook_url")
    fields = PipelineFields(
        pipeline, form_list(models or []), ensemble, form_numbers(form_list(weights or []))
    )
    name, document = await _what_runs(service, model, two_stems, fields)
    # The rest of the rule needs the audio's sample rate: checked now for an upload, once
    # it is fetched for a URL.
    await blocking(check_output, output_format, mp3_bitrate)
    key = None
    if file is not None:
        await blocking(queue.check_capacity)
        key = new_key()
        try:
            await store_upload(file, queue.storage, key, service.settings.max_upload_bytes)
            await _check_stored_audio(service, queue, key, output_format, mp3_bitrate)
        except BaseException:
            await asyncio.to_thread(queue.storage.delete, key)
            raise
    spec = JobSpec(
        model=name,
        output_format=output_format,
        bitrate=mp3_bitrate,
        two_stems=two_stems,
        audio_url=audio_url or None,
        webhook_url=webhook_url or None,
        input_name=file.filename if file is not None else None,
        base_url=base_url(request, service.settings),
        pipeline=document,
    )
    try:
        job, created = await blocking(queue.submit, job_id, "async", spec, key)
    except BaseException:
        if key is not None:
            await asyncio.to_thread(queue.storage.delete, key)
        raise
    if key is not None and not created:
        # The job existed already with its own input; this upload is not needed.
        await asyncio.to_thread(queue.storage.delete, key)
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


async def _what_runs(
    service: Service, model: str | None, two_stems: str | None, fields: PipelineFields
) -> tuple[str, dict[str, Any] | None]:
    """The job's model name and, for an ensemble or chain, its checked spec document."""
    registry = await blocking(service.catalog.registry, text=service.text)
    prepared = await blocking(
        request_pipeline, fields, model, two_stems, registry, text=service.text
    )
    if prepared is not None:
        return prepared.spec.name, spec_document(prepared)
    resolved = await blocking(service.catalog.resolve, model, text=service.text)
    await blocking(check_two_stems, resolved.name, resolved.stems, two_stems)
    return resolved.name, None


async def _check_stored_audio(
    service: Service, queue: JobQueue, key: str, output_format: str, bitrate: int | None
) -> None:
    """Refuse uploaded audio that does not decode, is too long, or cannot take the encoding."""
    source = queue.storage.find_input(key)
    try:
        info = await asyncio.to_thread(check_duration, source, service.settings.max_duration)
    except DSUError as exc:
        raise api_error(exc, service.text.of(exc, source, "audio")) from None
    await blocking(check_encoding, output_format, bitrate, info.samplerate, info.channels)


def _sync_result(queue: JobQueue, job: Job, elapsed: float) -> SyncResponse:
    """The seed's response: ``<stem>_base64`` and ``<stem>_size`` per stem."""
    result = job.result or {}
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
