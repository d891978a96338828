"""The audio of a ``POST /separate-sync``: a base64 JSON body or a multipart upload.

Either way the bytes land in the job's storage (``input.<ext>``, the extension from the
data URL's mime type or the upload's file name, never a client path) and the request's
other fields come back validated by the same model, :class:`SyncRequest`. The file of a
``POST /separate-async`` upload (the web page's) is stored by the same :func:`store_upload`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from dsu.audio.formats import OUTPUT_FORMATS
from dsu.errors import BadRequest, DSUError
from dsu.pipeline.ensemble import ALGORITHMS
from dsu.service.checks import MP3_BITRATES
from dsu.service.errors import ApiError, api_error, schema_error, validation_message
from dsu.service.pipelines import PipelineFields
from dsu.service.schemas import (
    BITRATE_DOC,
    ENSEMBLE_DOC,
    MODEL_PATTERN,
    MODELS_DOC,
    PIPELINE_DOC,
    STEM_PATTERN,
    WEIGHTS_DOC,
    SyncRequest,
)
from dsu.service.storage import ResultStorage, input_extension

_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.IGNORECASE)

# The multipart form of the body, for the OpenAPI document (FastAPI cannot derive one
# operation with two body types).
SYNC_BODY_DOC: dict[str, Any] = {
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
                        "output_format": {"type": "string", "enum": list(OUTPUT_FORMATS)},
                        "mp3_bitrate": {
                            "type": "integer",
                            "minimum": MP3_BITRATES[0],
                            "maximum": MP3_BITRATES[-1],
                            "description": BITRATE_DOC,
                        },
                        "two_stems": {"type": "string", "pattern": STEM_PATTERN},
                        "pipeline": {"type": "string", "description": PIPELINE_DOC},
                        "models": {
                            "type": "array",
                            "items": {"type": "string", "pattern": MODEL_PATTERN},
                            "description": f"{MODELS_DOC}; repeated fields or one a,b list",
                        },
                        "ensemble": {
                            "type": "string",
                            "enum": list(ALGORITHMS),
                            "description": ENSEMBLE_DOC,
                        },
                        "weights": {
                            "type": "array",
                            "items": {"type": "number"},
                            "description": f"{WEIGHTS_DOC}; repeated fields or one 2,1 list",
                        },
                    },
                }
            },
        },
    }
}


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"audio is over the {max_bytes}-byte limit")


def decode_base64_audio(text: str, max_bytes: int) -> tuple[bytes, str | None]:
    """Bytes of a bare or data-URL base64 string, and the mime type a data URL names.

    Raises BadRequest (400) for text that does not decode, ApiError 413 past ``max_bytes``.
    """
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
        raise too_large(max_bytes)
    return data, mime


@dataclass(frozen=True)
class SyncFields:
    """The options of a sync request, its audio already stored."""

    model: str | None
    output_format: str
    mp3_bitrate: int | None
    two_stems: str | None
    pipeline: PipelineFields

    @classmethod
    def of(cls, parsed: SyncRequest) -> SyncFields:
        return cls(
            parsed.model,
            parsed.output_format,
            parsed.mp3_bitrate,
            parsed.two_stems,
            PipelineFields(parsed.pipeline, parsed.models, parsed.ensemble, parsed.weights),
        )


LIST_FIELDS = ("models", "weights")
"""Form fields that carry a list: repeated, or one comma-separated value."""


def form_list(values: list[str]) -> list[str] | None:
    """A list field of a form: ``a``, ``b`` as repeated fields or as one ``a,b``."""
    items = [item.strip() for value in values for item in value.split(",") if item.strip()]
    return items or None


def form_numbers(values: list[str] | None, name: str = "weights") -> list[float] | None:
    """The numbers of a list field (:func:`form_list`).

    Raises:
        ApiError: 422 naming the field and the value that is no number.
    """
    if values is None:
        return None
    numbers = []
    for value in values:
        try:
            numbers.append(float(value))
        except ValueError:
            raise schema_error(f"{name} must be numbers, got {value!r}") from None
    return numbers


async def read_json(
    request: Request, storage: ResultStorage, key: str, max_bytes: int
) -> SyncFields:
    """Store the audio of a JSON body (``audio_base64``); return its other fields."""
    body = await request.body()
    try:
        parsed = await asyncio.to_thread(SyncRequest.model_validate_json, body)
    except ValidationError as exc:
        raise schema_error(validation_message(exc.errors())) from None
    try:
        data, mime = await asyncio.to_thread(decode_base64_audio, parsed.audio_base64, max_bytes)
    except DSUError as exc:
        raise api_error(exc) from None
    path = storage.input_path(key, input_extension(mime))
    await asyncio.to_thread(path.write_bytes, data)
    return SyncFields.of(parsed)


async def read_upload(
    request: Request, storage: ResultStorage, key: str, max_bytes: int
) -> SyncFields:
    """Store the ``file`` part of a multipart body; return the other fields."""
    async with request.form(max_files=1, max_fields=32) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise schema_error("multipart body needs a 'file' part with the audio")
        values: dict[str, Any] = {
            k: v for k, v in form.items() if k not in ("file", *LIST_FIELDS) and isinstance(v, str)
        }
        for name in LIST_FIELDS:
            items = form_list([v for v in form.getlist(name) if isinstance(v, str)])
            if items is not None:
                values[name] = items
        try:
            parsed = SyncRequest.model_validate({"audio_base64": "-", **values})
        except ValidationError as exc:
            raise schema_error(validation_message(exc.errors())) from None
        await store_upload(upload, storage, key, max_bytes)
    return SyncFields.of(parsed)


async def store_upload(
    upload: UploadFile, storage: ResultStorage, key: str, max_bytes: int
) -> None:
    """Copy an uploaded file into the job's storage (413 past ``max_bytes``, 400 if empty)."""
    path = storage.input_path(key, input_extension(upload.filename))
    size = await asyncio.to_thread(_copy_upload, upload, path, max_bytes)
    if size == 0:
        raise ApiError(400, "bad_request", "the uploaded file is empty")


def _copy_upload(upload: UploadFile, path: Path, max_bytes: int) -> int:
    upload.file.seek(0, 2)
    size = upload.file.tell()
    if size > max_bytes:
        raise too_large(max_bytes)
    upload.file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return size
