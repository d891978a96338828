"""``POST /separate-sync`` and ``POST /separate-async``: check a request, then queue it.

Everything a request can get wrong is refused here, before it is queued: the model and
its stems, the output encoding (for an upload, against the audio's own sample rate; for
a URL, once the worker has it), the audio's length, the URLs' addresses.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response

from dsu.errors import DSUError
from dsu.service.checks import (
    MP3_BITRATES,
    check_duration,
    check_encoding,
    check_output,
    check_two_stems,
)
from dsu.service.deps import AUTH, QueueDep, ServiceDep, base_url, blocking
from dsu.service.errors import ERRORS, STATUS_OF_CODE, ApiError, api_error
from dsu.service.fetch import system_resolver, vet_url
from dsu.service.jobs import FAILED, QUEUED, TERMINAL, Job, JobSpec, new_key
from dsu.service.queue import JobQueue
from dsu.service.schemas import (
    BITRATE_DOC,
    DEFAULT_FORMAT,
    JOB_ID_PATTERN,
    MIME_TYPES,
    MODEL_PATTERN,
    STEM_PATTERN,
    ErrorBody,
    OutputFormat,
    SubmitResponse,
    SyncResponse,
    job_links,
    seed_field,
)
from dsu.service.uploads import SYNC_BODY_DOC, read_json, read_upload

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
    settings, text = service.settings, service.text
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
        model = await blocking(service.catalog.resolve, fields.model, text=text)
        await blocking(check_two_stems, model.name, model.stems, fields.two_stems)
        await blocking(check_output, fields.output_format, fields.mp3_bitrate)
        source = queue.storage.find_input(key)
        try:
            info = await asyncio.to_thread(check_duration, source, settings.max_duration)
        except DSUError as exc:
            raise api_error(exc, text.of(exc, source, "audio")) from None
        await blocking(
            check_encoding, fields.output_format, fields.mp3_bitrate, info.samplerate, info.channels
        )
        spec = JobSpec(
            model=model.name,
            output_format=fields.output_format,
            bitrate=fields.mp3_bitrate,
            two_stems=fields.two_stems,
            base_url=base_url(request, settings),
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
    summary="Queue a separation of audio_url; the webhook is called when it ends",
)
async def separate_async(
    request: Request,
    response: Response,
    service: ServiceDep,
    queue: QueueDep,
    audio_url: Annotated[str, Form(max_length=2048, description="public http(s) URL")],
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
) -> SubmitResponse:
    policy = service.policy
    await blocking(vet_url, audio_url, policy, system_resolver, "audio_url")
    if webhook_url:
        await blocking(vet_url, webhook_url, policy, system_resolver, "webhook_url")
    resolved = await blocking(service.catalog.resolve, model, text=service.text)
    await blocking(check_two_stems, resolved.name, resolved.stems, two_stems)
    # The rest of the rule needs the audio's sample rate: checked once it is fetched.
    await blocking(check_output, output_format, mp3_bitrate)
    spec = JobSpec(
        model=resolved.name,
        output_format=output_format,
        bitrate=mp3_bitrate,
        two_stems=two_stems,
        audio_url=audio_url,
        webhook_url=webhook_url or None,
        input_name=None,
        base_url=base_url(request, service.settings),
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
