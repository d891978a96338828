"""The ``celery`` backend as the API sees it: the :class:`~dsu.service.queue.JobQueue`
on a Redis job store, Celery workers and a data dir shared with them.

A submission stores the job in Redis, then sends its id to the queue of an idle worker
that already holds its model (:meth:`WorkerRegistry.reserve`), else to the shared queue.
Workers (``dsu celery-worker``) claim, run and finish jobs in the store and announce each
end on a Redis channel; this process listens to wake its waiters (``/separate-sync``) and
its webhook dispatcher, which delivers from the store, each webhook by one process. The
API holds no job state of its own: kill it, restart it, or run several, and nothing is
lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dsu.service.celery_app import SHARED_QUEUE, Dispatch, make_celery, visibility_timeout
from dsu.service.datadir import DataDirLock
from dsu.service.jobs import RUNNING, TERMINAL, Job
from dsu.service.metrics import ServiceMetrics
from dsu.service.queue import StoredQueue, WorkerStatus
from dsu.service.redis_store import RedisJobStore
from dsu.service.requeue import Requeuer
from dsu.service.runner import FAILED_TO_LOAD, LOADING, READY
from dsu.service.settings import Settings
from dsu.service.storage import LocalStorage
from dsu.service.worker_registry import WorkerInfo, WorkerRegistry

log = logging.getLogger("dsu.service.celery")

# Seconds per job assumed for Retry-After before any worker has finished one.
DEFAULT_JOB_SECONDS = 10.0


def requeue_interval(settings: Settings) -> float:
    """How often a requeuer looks for lost jobs: a few times per lease."""
    return max(0.5, min(10.0, settings.lease_seconds / 3))


class CeleryQueue(StoredQueue):
    """Jobs in Redis, separations on Celery workers, files in the shared data dir.

    ``lock``: the data dir as ``dsu serve`` checked it; released at :meth:`stop`.
    """

    # Shorter than the local backend's: it also covers an announcement missed while the
    # connection to Redis was down.
    wait_poll_seconds = 2.0
    store: RedisJobStore

    def __init__(
        self, settings: Settings, metrics: ServiceMetrics, lock: DataDirLock | None = None
    ) -> None:
        self._lock = lock
        store = RedisJobStore(settings.redis_url)
        store.ping()
        super().__init__(settings, metrics, store, LocalStorage(settings.data_dir / "jobs"))
        self.registry = WorkerRegistry(store.redis, store.prefix, settings.worker_heartbeat)
        self.celery = make_celery(settings)
        self.dispatch = Dispatch(self.celery, store)
        self.requeuer = Requeuer(
            store,
            self.registry,
            self.dispatch,
            requeue_interval(settings),
            visibility_timeout(settings),
        )
        metrics.registry.register(ScaleOutCollector(store, self.registry))
        self._threads = [
            threading.Thread(target=self._listen, name="dsu-events", daemon=True),
            threading.Thread(target=self._housekeeping, name="dsu-retention", daemon=True),
        ]

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        warm_model: str | None = None,
        warm_error: str | None = None,
    ) -> None:
        # The workers load their own default model; the API loads none.
        self._loop = loop
        self.webhooks.start()
        self.requeuer.start()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.requeuer.stop()
        self.webhooks.stop()
        for thread in self._threads:
            thread.join(2.0)
        self.webhook_fetcher.close()
        self.store.close()
        if self._lock is not None:
            self._lock.release()

    # -- API side --------------------------------------------------------------------------

    def _retry_after(self, depth: int) -> int:
        workers = self.registry.alive()
        busy = sum(w.busy_seconds for w in workers)
        done = sum(w.completed + w.failed for w in workers)
        per_job = busy / done if done else DEFAULT_JOB_SECONDS
        per_job /= max(len(workers), 1)
        return max(1, min(3600, math.ceil(per_job * max(depth, 1))))

    def _dispatch(self, job: Job) -> None:
        warm = self.registry.reserve(job.spec.model)
        self.dispatch.send(job.id, warm.queue if warm is not None else SHARED_QUEUE)

    def delete(self, job_id: str) -> Job | None:
        # The store announces the deletion; the worker running the job stops and removes
        # its files itself.
        job = self.store.delete(job_id)
        if job is None:
            return None
        if job.status != RUNNING:
            self.storage.delete(job.key)
        self._finished(job.id)
        return job

    def status(self) -> WorkerStatus:
        workers = tuple(self.registry.alive())
        ready = [w for w in workers if w.default_model == READY]
        if ready:
            first = ready[0]
            model = first.models[0] if first.models else None
            return WorkerStatus(first.device, model, READY, None, workers)
        failed = [w for w in workers if w.default_model == FAILED_TO_LOAD]
        if workers and len(failed) == len(workers):
            first = failed[0]
            return WorkerStatus(first.device, None, FAILED_TO_LOAD, first.load_error, workers)
        return WorkerStatus(self.settings.device, None, LOADING, None, workers)

    # -- events from the workers -----------------------------------------------------------

    def _finished(self, job_id: str) -> None:
        """A job ended or was deleted: wake its waiters and the webhook dispatcher."""
        self.webhooks.wake()
        self._wake_waiters(job_id)

    def _count(self, event: str, job_id: str) -> None:
        """``dsu_jobs_total`` of this API, as the local backend counts it."""
        if event in TERMINAL:
            job = self.store.get(job_id)
            if job is not None:
                self.metrics.jobs.labels(job.kind, event).inc()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with self.store.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(self.store.events_channel)
                    # Whatever ended while we were not listening is in the store.
                    self.webhooks.wake()
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message is not None:
                            event, _, job_id = str(message["data"]).partition(" ")
                            self._count(event, job_id)
                            self._finished(job_id)
            except redis.RedisError as exc:
                log.warning("lost the Redis events channel (%s); reconnecting", exc)
                self._stop.wait(1.0)


class ScaleOutCollector(Collector):
    """``/metrics`` for an autoscaler: the queue, its oldest job, and each worker's work."""

    def __init__(self, store: RedisJobStore, registry: WorkerRegistry) -> None:
        self.store = store
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        try:
            queued, running = self.store.counts()
            oldest = self.store.oldest_queued_at()
            workers: list[WorkerInfo] = self.registry.alive()
        except redis.RedisError:
            yield GaugeMetricFamily("dsu_store_up", "1 when the Redis job store answers.", 0)
            return
        yield GaugeMetricFamily("dsu_store_up", "1 when the Redis job store answers.", 1)
        yield GaugeMetricFamily("dsu_queue_queued", "Jobs waiting for a worker.", queued)
        yield GaugeMetricFamily("dsu_queue_running", "Jobs running on a worker.", running)
        yield GaugeMetricFamily(
            "dsu_queue_oldest_job_seconds",
            "How long the job waiting longest has waited (0 when none waits).",
            max(0.0, time.time() - oldest) if oldest is not None else 0.0,
        )
        yield GaugeMetricFamily("dsu_workers", "Workers whose heartbeat is current.", len(workers))
        jobs = CounterMetricFamily(
            "dsu_worker_jobs", "Jobs a worker ended since it started.", labels=("worker", "status")
        )
        busy_seconds = CounterMetricFamily(
            "dsu_worker_busy_seconds", "Time a worker spent running jobs.", labels=("worker",)
        )
        busy = GaugeMetricFamily(
            "dsu_worker_busy", "1 while a worker runs a job.", labels=("worker",)
        )
        models = GaugeMetricFamily(
            "dsu_worker_model_loaded",
            "1 for each model a worker holds.",
            labels=("worker", "model"),
        )
        for w in workers:
            jobs.add_metric((w.name, "completed"), w.completed)
            jobs.add_metric((w.name, "failed"), w.failed)
            busy_seconds.add_metric((w.name,), w.busy_seconds)
            busy.add_metric((w.name,), 1.0 if w.busy else 0.0)
            for model in w.models:
                models.add_metric((w.name, model), 1.0)
        yield from (jobs, busy_seconds, busy, models)
