"""``dsu celery-worker``: a Celery worker of the ``celery`` backend, models kept warm.

One worker process runs one separation at a time on its device (Celery's thread pool
with one thread, so the process and its loaded models outlive every task) and consumes
two queues: the shared one, and its own, where the API sends jobs for a model this
worker holds. A task carries a job id; the worker claims the job in the Redis store,
runs it exactly as the local backend's runner does (lease renewed while it runs,
``SEPARATION_TIMEOUT``, bounded attempts, one result and one webhook), and records the
outcome there. It writes a heartbeat with the models it holds, and stops a running job
at once when the API announces the job's deletion.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time

import redis
from celery.signals import worker_shutting_down

from dsu.errors import DSUError
from dsu.service.celery_app import (
    SHARED_QUEUE,
    TASK_NAME,
    Dispatch,
    make_celery,
    visibility_timeout,
    worker_queue,
)
from dsu.service.celery_queue import requeue_interval
from dsu.service.fetch import AddressPolicy, Fetcher
from dsu.service.jobs import COMPLETED, FAILED, Job
from dsu.service.messages import PublicText
from dsu.service.metrics import ServiceMetrics
from dsu.service.models import ModelCatalog
from dsu.service.redis_store import RedisJobStore
from dsu.service.requeue import Requeuer
from dsu.service.runner import Runner
from dsu.service.settings import Settings
from dsu.service.storage import LocalStorage
from dsu.service.worker_registry import WorkerInfo, WorkerRegistry

log = logging.getLogger("dsu.service.celery_worker")


class TaskRunner(Runner):
    """The local backend's runner, handed jobs by id instead of taking them in a thread."""

    def warm(self, model: str | None, error: str | None) -> None:
        """Load the default ``model`` (``error``: why there is none)."""
        from dsu.engine.allocator import keep_freed_memory

        keep_freed_memory(share_main_heap=True)
        if model is None:
            self._failed_default(error or "no default model is configured")
        else:
            self._load_default(model)

    def run_job(self, job_id: str) -> Job | None:
        """Claim and run ``job_id``; None when it is not runnable (ended, deleted, or held
        by a live worker: a duplicate delivery)."""
        job = self.store.claim_job(job_id, self.owner, self.settings.lease_seconds)
        if job is None:
            return None
        self._run(job)
        return job


class CeleryWorker:
    """The worker process: the Celery consumer, its runner, heartbeats and events."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self.queue = worker_queue(self.name)
        self.store = RedisJobStore(settings.redis_url)
        self.store.ping()
        self.registry = WorkerRegistry(
            self.store.redis, self.store.prefix, settings.worker_heartbeat
        )
        policy = AddressPolicy(settings.allow_private_urls, settings.url_allowlist)
        self.fetcher = Fetcher(policy)
        self.catalog = ModelCatalog(settings.models_dir, settings.default_model)
        self.text = PublicText()
        self.text.add_place(settings.data_dir, "the server's storage")
        self.text.add_place(self.catalog.root, "the server's models")
        self.runner = TaskRunner(
            settings,
            self.store,
            LocalStorage(settings.data_dir / "jobs"),
            self.fetcher,
            # The runner's counters; the API's /metrics reads this worker's heartbeat.
            ServiceMetrics(queue_depth=lambda: 0.0),
            self._ended,
            self.text,
        )
        self.celery = make_celery(settings)
        self.celery.task(name=TASK_NAME)(self._task)
        self.requeuer = Requeuer(
            self.store,
            self.registry,
            Dispatch(self.celery, self.store),
            requeue_interval(settings),
            visibility_timeout(settings),
        )
        self.started_at = time.time()
        self.busy: str | None = None
        self.completed = 0
        self.failed = 0
        self.busy_seconds = 0.0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._heartbeats, name="dsu-heartbeat", daemon=True),
            threading.Thread(target=self._listen, name="dsu-events", daemon=True),
        ]

    def _task(self, job_id: str) -> None:
        route = self.store.fields(job_id, "route")[0]
        if route == self.queue:
            self.registry.unreserve(self.name)
        self.busy = job_id
        self.beat()
        started = time.monotonic()
        try:
            if self.runner.run_job(job_id) is None:
                log.info("job %s: not runnable (ended, deleted or taken); dropped", job_id)
                return
            self.busy_seconds += time.monotonic() - started
        finally:
            self.busy = None
            self.beat()

    def _ended(self, job: Job) -> None:
        """The runner recorded the job's outcome."""
        if job.status == COMPLETED:
            self.completed += 1
        elif job.status == FAILED:
            self.failed += 1

    def info(self) -> WorkerInfo:
        runner = self.runner
        return WorkerInfo(
            name=self.name,
            queue=self.queue,
            device=runner.device,
            models=tuple(item.key.name for item in runner.models.cache.items()),
            default_model=runner.default_state,
            load_error=runner.load_error,
            busy=self.busy,
            completed=self.completed,
            failed=self.failed,
            busy_seconds=round(self.busy_seconds, 3),
            started_at=self.started_at,
            last_seen=time.time(),
        )

    def beat(self) -> None:
        try:
            self.registry.beat(self.info())
        except redis.RedisError as exc:
            log.warning("heartbeat not written (%s)", exc)

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat):
            self.beat()

    def _listen(self) -> None:
        """Stop the running job as soon as the API deletes it."""
        while not self._stop.is_set():
            try:
                with self.store.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(self.store.events_channel)
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message is None:
                            continue
                        event, _, job_id = str(message["data"]).partition(" ")
                        if event == "deleted" and self.runner.cancel(job_id):
                            log.info("job %s: deleted while running; stopping it", job_id)
            except redis.RedisError as exc:
                log.warning("lost the Redis events channel (%s); reconnecting", exc)
                self._stop.wait(1.0)

    def run(self, log_level: str = "info") -> None:
        """Load the default model, then consume until SIGTERM/SIGINT (warm shutdown)."""
        self.registry.clear_reservations(self.name)
        for thread in self._threads:
            thread.start()
        self.beat()
        try:
            default, error = self.catalog.resolve(None).name, None
        except DSUError as exc:
            default, error = None, f"default model: {self.text.clean(exc.message)}"
        self.runner.warm(default, error)
        self.beat()
        self.requeuer.start()

        def shutting_down(**_: object) -> None:
            # The running job goes back to the queue (not counted as an attempt) instead
            # of holding the shutdown until it ends.
            self.runner.cancel_running("shutdown")

        worker_shutting_down.connect(shutting_down, weak=False)
        log.info("worker %s: queues %s and %s", self.name, SHARED_QUEUE, self.queue)
        try:
            self.celery.worker_main(
                [
                    "worker",
                    f"--queues={SHARED_QUEUE},{self.queue}",
                    "--pool=threads",
                    "--concurrency=1",
                    f"--hostname=dsu@{self.name}",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    f"--loglevel={log_level.upper()}",
                ]
            )
        finally:
            self._stop.set()
            self.requeuer.stop()
            for thread in self._threads:
                thread.join(2.0)
            with contextlib.suppress(redis.RedisError):  # else the record expires by itself
                self.registry.leave(self.name)
            self.fetcher.close()
            self.store.close()
