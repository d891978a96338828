"""``GET /jobs/{id}``, ``GET /jobs/{id}/files/{stem}`` and ``DELETE /jobs/{id}``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from dsu.service.deps import AUTH, QueueDep
from dsu.service.errors import ERRORS, ApiError
from dsu.service.jobs import COMPLETED, Job
from dsu.service.queue import JobQueue
from dsu.service.schemas import MIME_TYPES, DeleteResponse, JobView, job_view

router = APIRouter(prefix="/jobs", dependencies=AUTH)


def _job(queue: JobQueue, job_id: str) -> Job:
    job = queue.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return job


@router.get(
    "/{job_id}",
    response_model=JobView,
    responses=ERRORS,
    summary="A job's state, result links and webhook delivery",
)
def get_job(job_id: str, queue: QueueDep) -> JobView:
    job = _job(queue, job_id)
    return job_view(job, queue.position(job))


@router.get(
    "/{job_id}/files/{stem}",
    responses={**ERRORS, 200: {"content": {m: {} for m in MIME_TYPES.values()}}},
    response_class=FileResponse,
    summary="Download one stem of a completed job",
)
def get_file(job_id: str, stem: str, queue: QueueDep) -> FileResponse:
    job = _job(queue, job_id)
    if job.status != COMPLETED or not job.result:
        raise ApiError(409, "conflict", f"job {job_id!r} is {job.status}, not completed")
    info = job.result["stems"].get(stem)
    path = queue.storage.result_file(job.key, info["file"]) if info else None
    if info is None or path is None:
        raise ApiError(404, "not_found", f"job {job_id!r} has no stem {stem!r}")
    fmt = job.result["format"]
    return FileResponse(path, media_type=MIME_TYPES[fmt], filename=f"{stem}.{fmt}")


@router.delete(
    "/{job_id}",
    response_model=DeleteResponse,
    responses=ERRORS,
    summary="Remove a job and its files (a queued or running job is cancelled)",
)
def delete_job(job_id: str, queue: QueueDep) -> DeleteResponse:
    job = queue.delete(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return DeleteResponse(job_id=job.id, was=job.status)
