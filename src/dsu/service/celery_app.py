"""The Celery app of the ``celery`` backend: its delivery guarantees, and sending job ids.

A message carries a job id and nothing else; the job itself lives in the Redis job store
(:mod:`dsu.service.redis_store`). The settings are those a long job needs:

- ``task_acks_late``: a message is acknowledged when its job has ended, not when a worker
  takes it, so a worker that dies mid-job leaves it in the broker;
- ``task_reject_on_worker_lost``: a job whose worker process is lost goes back to the queue;
- ``worker_prefetch_multiplier=1``: a worker holds one message at a time, so the others
  stay in the queue for the next idle worker;
- a visibility timeout longer than ``SEPARATION_TIMEOUT`` (plus the download): Redis only
  re-delivers an unacknowledged message after it, so a job still running is never
  handed to a second worker by the broker.

Delivering twice is still harmless: a worker runs a job only after claiming it in the
store (:meth:`~dsu.service.redis_store.RedisJobStore.claim_job`), and a job's lease lets
:mod:`dsu.service.requeue` re-send a dead worker's job long before that timeout.
"""

from __future__ import annotations

import time

from celery import Celery

from dsu.service.redis_store import RedisJobStore
from dsu.service.settings import Settings

TASK_NAME = "dsu.separate"
# Every worker consumes the shared queue and its own (jobs routed to it for its warm model).
SHARED_QUEUE = "dsu.jobs"


def worker_queue(name: str) -> str:
    """The broker queue of the worker ``name``."""
    return f"dsu.worker.{name}"


def visibility_timeout(settings: Settings) -> float:
    """Seconds before Redis re-delivers an unacknowledged message: longer than any job."""
    return 2 * settings.separation_timeout + settings.fetch_timeout + 60.0


def make_celery(settings: Settings) -> Celery:
    """The Celery app on ``settings.redis_url`` with the guarantees above."""
    app = Celery("dsu", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_default_queue=SHARED_QUEUE,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": visibility_timeout(settings)},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A job that was running when the broker connection dropped finishes, and records
        # its result in the store; its message is delivered again and then dropped.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
    )
    return app


class Dispatch:
    """Sends job ids to the broker and records where each went, on the job."""

    def __init__(self, app: Celery, store: RedisJobStore) -> None:
        self.app = app
        self.store = store

    def send(self, job_id: str, queue: str = SHARED_QUEUE) -> None:
        sent_at = time.time()
        self.app.send_task(
            TASK_NAME,
            args=[job_id],
            queue=queue,
            retry=True,
            retry_policy={
                "max_retries": 60,
                "interval_start": 0.2,
                "interval_step": 0.5,
                "interval_max": 2.0,
            },
        )
        # Recorded after the send: a process that dies in between leaves published_at 0,
        # and the requeuer sends the id again (a duplicate the claim makes harmless).
        self.store.mark_published(job_id, queue, sent_at)
