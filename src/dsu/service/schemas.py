"""Request and response bodies of the HTTP API, and the public views of a job.

Field names follow the seed service where it had them (``audio_base64``,
``output_format``, ``mp3_bitrate``, ``<stem>_base64``, ``<stem>_size``, ``duration``,
``success``/``job_id``/``status``/``queue_position``/``message``); the rest are DSU's.
The same job view feeds ``GET /jobs/{id}`` and the webhooks, so they never disagree.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from dsu.audio.formats import DEFAULT_MP3_BITRATE, OUTPUT_FORMATS
from dsu.pipeline.ensemble import ALGORITHMS, DEFAULT_ALGORITHM
from dsu.pipeline.spec import MAX_MODELS
from dsu.service.checks import MP3_BITRATES
from dsu.service.jobs import COMPLETED, FAILED, QUEUED, Job
from dsu.service.pipelines import SEPARATING, step_names

OutputFormat = Literal[OUTPUT_FORMATS]  # type: ignore[valid-type]
Algorithm = Literal[ALGORITHMS]  # type: ignore[valid-type]
DEFAULT_FORMAT = "mp3"  # the seed's
MIME_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg"}
assert set(MIME_TYPES) == set(OUTPUT_FORMATS), "a mime type for every output format"
BITRATE_DOC = (
    f"kbit/s, for mp3 output; default {DEFAULT_MP3_BITRATE} (the highest the audio's sample "
    "rate allows); which values a file may use depends on its rate"
)
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
STEM_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ModelName = Annotated[str, StringConstraints(pattern=MODEL_PATTERN)]
PIPELINE_DOC = (
    "instead of model: a preset name (GET /models lists them) or a pipeline spec (an object "
    "of steps and outputs; in a multipart form, its JSON text)"
)
MODELS_DOC = f"instead of model: an ensemble of up to {MAX_MODELS} models combined per stem"
ENSEMBLE_DOC = f"how models are combined; default {DEFAULT_ALGORITHM}"
WEIGHTS_DOC = "one weight per model of models (avg_wave and avg_fft only)"


def seed_field(stem: str) -> str:
    """The seed's name for a stem in ``<name>_base64``: its complement was 'instrumental'."""
    return "instrumental" if stem == "no_vocals" else stem


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. bad_audio, queue_full")
    message: str


class ErrorBody(BaseModel):
    """Every error answer: no traceback, a code and a message that says what to do."""

    error: ErrorDetail


class SyncRequest(BaseModel):
    """``POST /separate-sync`` as JSON (the seed's body)."""

    model_config = ConfigDict(extra="ignore")

    audio_base64: str = Field(
        description="the audio file, base64; bare or as a data URL (data:audio/mpeg;base64,...)",
        min_length=1,
    )
    model: str | None = Field(None, pattern=MODEL_PATTERN, description="default: DEMUCS_MODEL")
    output_format: OutputFormat = DEFAULT_FORMAT
    mp3_bitrate: int | None = Field(
        None, ge=MP3_BITRATES[0], le=MP3_BITRATES[-1], description=BITRATE_DOC
    )
    two_stems: str | None = Field(
        None, pattern=STEM_PATTERN, description="return this stem and its complement only"
    )
    pipeline: str | dict[str, Any] | None = Field(None, description=PIPELINE_DOC)
    models: list[ModelName] | None = Field(
        None, min_length=1, max_length=MAX_MODELS, description=MODELS_DOC
    )
    ensemble: Algorithm | None = Field(None, description=ENSEMBLE_DOC)
    weights: list[float] | None = Field(None, max_length=MAX_MODELS, description=WEIGHTS_DOC)


class StemFile(BaseModel):
    url: str
    size: int
    mime_type: str


class Progress(BaseModel):
    stage: str | None
    fraction: float | None = Field(description="of the stage; a pipeline's: its steps' mean")
    step: int | None = Field(None, description="a pipeline's step that reported last, from 1")
    steps: int | None = Field(None, description="how many steps the pipeline has")
    step_name: str | None = Field(None, description="the name of that step")


class JobResult(BaseModel):
    stems: dict[str, StemFile]
    model: str
    format: str
    samplerate: int | None = None
    duration: float = Field(description="seconds the job ran (download, checks, separation)")
    separation_seconds: float | None = Field(None, description="of which separating")


class WebhookView(BaseModel):
    url: str
    event_id: str | None = None
    status: str = Field(description="pending, delivered or failed")
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    next_attempt_at: str | None = None
    delivered_at: str | None = None


class JobView(BaseModel):
    """``GET /jobs/{id}``."""

    job_id: str
    status: str = Field(description="queued, running, completed or failed")
    kind: str
    model: str = Field(description="the model, or the pipeline's name")
    pipeline: str | None = Field(None, description="the pipeline's name, for an ensemble or chain")
    models: list[str] | None = Field(None, description="the models the pipeline runs")
    output_format: str
    audio_url: str | None = None
    created_at: str | None
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int
    max_attempts: int
    queue_position: int | None = None
    progress: Progress | None = None
    error: ErrorDetail | None = None
    result: JobResult | None = None
    webhook: WebhookView | None = None
    links: dict[str, str]


class SubmitResponse(BaseModel):
    """``POST /separate-async``: the seed's fields, plus links."""

    success: bool = True
    job_id: str
    status: str
    queue_position: int
    message: str
    created: bool = Field(description="false when this job_id existed already")
    links: dict[str, str]


class SyncResponse(BaseModel):
    """``POST /separate-sync``: ``<stem>_base64`` and ``<stem>_size`` for every stem."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "vocals_base64": "<base64>",
                "instrumental_base64": "<base64>",
                "vocals_size": 123456,
                "instrumental_size": 123456,
                "model": "center",
                "format": "mp3",
                "duration": 3.2,
            }
        },
    )

    model: str
    format: str
    duration: float = Field(description="seconds from submission to result")
    job_id: str
    stems: list[str]
    mime_type: str
    samplerate: int | None = None


class Health(BaseModel):
    """``GET /health``: the seed's fields, answered 200 when healthy and 503 otherwise."""

    status: str = Field(
        description="healthy; starting while the default model loads; unhealthy when it "
        "cannot be loaded (model_error says why)"
    )
    model: str
    hardware: str
    torch_version: str
    cuda_available: bool
    device: str
    model_loaded: bool
    model_error: str | None = Field(None, description="why the default model did not load")
    queue_depth: int
    version: str
    workers: list[WorkerView] = Field(
        default_factory=list,
        description="the Celery workers with a current heartbeat (none for the local queue)",
    )


class WorkerView(BaseModel):
    """A ``dsu celery-worker`` as its last heartbeat described it."""

    name: str
    device: str
    state: str = Field(description="its default model: loading, ready or failed")
    models: list[str] = Field(description="the models it holds loaded, most recent first")
    busy: str | None = Field(None, description="the job it runs, if any")
    completed: int
    failed: int
    last_seen: str | None


class ModelView(BaseModel):
    name: str
    arch: str
    stems: list[str]
    description: str = ""
    aliases: list[str] = []
    license: str | None = None


class PresetView(BaseModel):
    """A preset pipeline; send its name as ``pipeline``."""

    name: str
    description: str = ""
    models: list[str]
    stems: list[str] = Field(description="the stems it writes")
    installed: bool = Field(description="whether every model it needs is on this server")
    missing: list[str] = Field(description="the models it needs that this server lacks")


class ModelList(BaseModel):
    default: str
    models: list[ModelView]
    presets: list[PresetView] = []


class DeleteResponse(BaseModel):
    job_id: str
    status: Literal["deleted"] = "deleted"
    was: str


def job_links(job: Job) -> dict[str, str]:
    base = job.spec.base_url.rstrip("/")
    links = {"self": f"{base}/jobs/{job.id}"}
    if job.status == COMPLETED and job.result:
        for stem in job.result.get("stems", {}):
            links[stem] = f"{base}/jobs/{job.id}/files/{stem}"
    return links


def job_result(job: Job) -> JobResult | None:
    if job.status != COMPLETED or not job.result:
        return None
    links = job_links(job)
    fmt = job.result["format"]
    return JobResult(
        stems={
            stem: StemFile(url=links[stem], size=info["size"], mime_type=MIME_TYPES[fmt])
            for stem, info in job.result["stems"].items()
        },
        model=job.result["model"],
        format=fmt,
        samplerate=job.result.get("samplerate"),
        duration=job.result["duration"],
        separation_seconds=job.result.get("separation_seconds"),
    )


def job_progress(job: Job) -> Progress | None:
    """The job's stage; a pipeline's ``separating:<step>`` as the stage and its step."""
    if job.stage is None:
        return None
    stage, _, step = job.stage.partition(":")
    pipeline = job.spec.pipeline
    if stage != SEPARATING or not step or not pipeline:
        return Progress(stage=job.stage, fraction=job.progress)
    names = step_names(pipeline)
    return Progress(
        stage=stage,
        fraction=job.progress,
        step=names.index(step) + 1 if step in names else None,
        steps=len(names),
        step_name=step,
    )


def job_view(job: Job, position: int | None = None) -> JobView:
    webhook = None
    if job.spec.webhook_url:
        state = job.webhook
        webhook = WebhookView(
            url=job.spec.webhook_url,
            event_id=state.event_id if state else None,
            status=state.status if state else "waiting for the job to end",
            attempts=state.attempts if state else 0,
            last_status=state.last_status if state else None,
            last_error=state.last_error if state else None,
            next_attempt_at=iso(state.next_at) if state and state.status == "pending" else None,
            delivered_at=iso(state.delivered_at) if state else None,
        )
    pipeline = job.spec.pipeline
    return JobView(
        job_id=job.id,
        status=job.status,
        kind=job.kind,
        model=job.spec.model,
        pipeline=pipeline["name"] if pipeline else None,
        models=list(dict.fromkeys(m for s in pipeline["steps"] for m in s["models"]))
        if pipeline
        else None,
        output_format=job.spec.output_format,
        audio_url=job.spec.audio_url,
        created_at=iso(job.created_at),
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        queue_position=position if job.status == QUEUED else None,
        progress=job_progress(job),
        error=ErrorDetail(code=job.error_code or "internal", message=job.error_message or "")
        if job.status == FAILED
        else None,
        result=job_result(job),
        webhook=webhook,
        links=job_links(job),
    )


def webhook_payload(job: Job, inline: dict[str, bytes] | None = None) -> str:
    """The JSON a job's webhook carries, seed fields first.

    Completed: ``job_id``, ``status``, ``model``, ``format``, ``duration``,
    ``<stem>_size`` and ``<stem>_url`` (``<stem>_base64`` too when ``inline`` holds the
    files), and ``stems`` with url/size/mime_type each. Failed: ``job_id``, ``status``,
    ``error`` (the message) and ``error_code``.
    """
    body: dict[str, Any] = {
        "type": f"job.{job.status}",
        "timestamp": iso(time.time()),
        "job_id": job.id,
        "status": job.status,
    }
    result = job_result(job)
    if result is not None:
        body.update(model=result.model, format=result.format, duration=result.duration)
        for stem, info in result.stems.items():
            name = seed_field(stem)
            body[f"{name}_size"] = info.size
            body[f"{name}_url"] = info.url
            if inline is not None and stem in inline:
                body[f"{name}_base64"] = base64.b64encode(inline[stem]).decode()
        body["stems"] = {stem: info.model_dump() for stem, info in result.stems.items()}
    elif job.status == FAILED:
        body.update(error=job.error_message, error_code=job.error_code, model=job.spec.model)
    body["links"] = job_links(job)
    return json.dumps(body, separators=(",", ":"))
