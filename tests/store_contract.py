"""What every :class:`~dsu.service.jobs.JobStore` must do, checked the same way on each
backend (tests/test_service_jobs.py: SQLite; tests/test_redis_store.py: Redis)."""

from __future__ import annotations

import pytest

from dsu.service.jobs import Job, JobConflict, JobSpec, JobStore, new_key


def job(job_id: str, **spec: str) -> Job:
    """A new async job on the weight-free ``center`` model."""
    return Job(id=job_id, key=new_key(), kind="async", spec=JobSpec(model="center", **spec))


def check_create_is_idempotent(store: JobStore, max_active: int) -> None:
    """The same job created twice is stored once; another spec under its id conflicts."""
    first, created = store.create(job("a", audio_url="http://x/1"), max_active=max_active)
    again, created_again = store.create(job("a", audio_url="http://x/1"), max_active=max_active)
    assert created and not created_again and again.key == first.key
    with pytest.raises(JobConflict):
        store.create(job("a", audio_url="http://x/2"), max_active=max_active)
