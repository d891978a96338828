"""Jobs and where they are kept: the :class:`JobStore` interface and its SQLite default.

A job moves ``queued -> running -> completed | failed``. A worker takes a job by
*claiming* it: it becomes the lease owner until ``lease_until`` and renews the lease while
it works. A job whose lease ran out (its worker died) is claimed again, until it has been
tried ``max_attempts`` times; then it fails with the reason. Webhook delivery state lives
on the job, so a restart resumes undelivered webhooks too.

The default store, in SQLite, is :class:`dsu.service.sqlite_store.SqliteJobStore`.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

from dsu.errors import DSUError

QUEUED, RUNNING, COMPLETED, FAILED = "queued", "running", "completed", "failed"
TERMINAL = (COMPLETED, FAILED)

WEBHOOK_PENDING, WEBHOOK_DELIVERED, WEBHOOK_FAILED = "pending", "delivered", "failed"


class QueueFull(DSUError):
    """The queue holds as many jobs as it may; retry later."""

    code = "queue_full"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobConflict(DSUError):
    """A job with this id exists with different parameters."""

    code = "conflict"


@dataclass(frozen=True)
class JobSpec:
    """What a client asked for; two submissions with the same id must carry the same spec.

    ``audio_url`` is None when the input was uploaded (its bytes are in storage under the
    job's key). ``bitrate`` (mp3, kbps) None is the encoder's default for the audio's rate.
    ``base_url`` is where result links point. ``pipeline``: an ensemble or chain, its
    checked spec as a JSON object (:func:`dsu.service.pipelines.spec_document`); ``model``
    is then the pipeline's name.
    """

    model: str
    output_format: str = "mp3"
    bitrate: int | None = None
    two_stems: str | None = None
    audio_url: str | None = None
    webhook_url: str | None = None
    input_name: str | None = None
    base_url: str = ""
    pipeline: dict[str, Any] | None = None

    def fingerprint(self) -> str:
        """The parameters that identify the request (not where its links point)."""
        data = asdict(self)
        data.pop("base_url")
        return json.dumps(data, sort_keys=True)


@dataclass
class WebhookState:
    """Delivery of a job's webhook: a stable event id, the frozen payload, the tries."""

    event_id: str
    payload: str
    status: str = WEBHOOK_PENDING
    attempts: int = 0
    next_at: float = 0.0
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None


@dataclass
class Job:
    """One job as stored. ``key`` names its storage; it is never client-chosen."""

    id: str
    key: str
    kind: str
    spec: JobSpec
    status: str = QUEUED
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    max_attempts: int = 3
    lease_owner: str | None = None
    lease_until: float | None = None
    stage: str | None = None
    progress: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None
    webhook: WebhookState | None = None


class JobStore(ABC):
    """Durable job records shared by the API and the workers."""

    @abstractmethod
    def create(self, job: Job, max_active: int) -> tuple[Job, bool]:
        """Insert ``job`` unless its id exists; return (the stored job, created).

        Raises:
            JobConflict: the id exists with a different spec.
            QueueFull: ``max_active`` jobs are already queued or running.
        """

    @abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def delete(self, job_id: str) -> Job | None:
        """Remove a job whatever its state; return it, or None if there was none."""

    @abstractmethod
    def claim(self, owner: str, lease_seconds: float) -> Job | None:
        """Take the oldest runnable job (queued, or running with an expired lease).

        The claim counts as an attempt: a claimed job with ``attempts > max_attempts``
        died ``max_attempts`` times and the caller fails it instead of running it.
        """

    @abstractmethod
    def expire_leases(self, except_owner: str) -> int:
        """End the leases of every running job not owned by ``except_owner``."""

    @abstractmethod
    def renew(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend the lease; False if the job is gone or no longer ``owner``'s."""

    @abstractmethod
    def set_progress(self, job_id: str, owner: str, stage: str, fraction: float) -> None: ...

    @abstractmethod
    def release(self, job_id: str, owner: str) -> bool:
        """Put a running job back in the queue without counting the attempt."""

    @abstractmethod
    def complete(
        self, job_id: str, owner: str, result: dict[str, Any], webhook: WebhookState | None
    ) -> bool:
        """Mark a running job completed; False if it is no longer ``owner``'s."""

    @abstractmethod
    def fail(
        self, job_id: str, owner: str | None, code: str, message: str, webhook: WebhookState | None
    ) -> bool:
        """Mark a job failed (``owner`` None: whoever holds it); False if it is gone."""

    @abstractmethod
    def depth(self) -> int:
        """Jobs queued or running."""

    @abstractmethod
    def position(self, job: Job) -> int:
        """1-based place of a queued job among queued jobs (0 when not queued)."""

    @abstractmethod
    def claim_webhook(self, now: float, hold: float) -> Job | None:
        """The job whose webhook is due earliest at ``now``, its next try moved to
        ``now + hold`` in the same step, so that no other dispatcher takes it meanwhile
        and, should this one die, it is due again ``hold`` seconds later; or None."""

    @abstractmethod
    def next_webhook_at(self) -> float | None:
        """When the earliest pending webhook is due, or None."""

    @abstractmethod
    def update_webhook(self, job_id: str, state: WebhookState) -> None: ...

    @abstractmethod
    def finished_before(self, before: float, limit: int = 100) -> list[Job]:
        """Finished jobs older than ``before`` with no webhook still pending."""

    @abstractmethod
    def keys(self) -> set[str]:
        """Storage keys of every job."""

    @abstractmethod
    def close(self) -> None: ...


def new_key() -> str:
    """A storage key for a new job: random, so no client input reaches a file name."""
    return uuid.uuid4().hex
