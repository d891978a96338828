"""The job queue the API talks to: the :class:`JobQueue` interface and its local backend.

:class:`LocalQueue` is the embedded default: a SQLite job store, local result files, the
in-process :class:`~dsu.service.runner.Runner` and a webhook dispatcher, all in one
server process that owns its data dir (:mod:`dsu.service.datadir` keeps a second server
out). The
scale-out backend, Celery workers on a Redis job store with a shared data dir, implements
the same interface (:class:`dsu.service.celery_queue.CeleryQueue`); :func:`open_queue`
picks the one the settings name. Both build on :class:`StoredQueue`, the part that works
the same over either job store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from dsu.service.datadir import DataDirLock, claim_data_dir
from dsu.service.fetch import AddressPolicy, Fetcher
from dsu.service.jobs import TERMINAL, Job, JobSpec, JobStore, QueueFull, new_key
from dsu.service.messages import PublicText
from dsu.service.metrics import ServiceMetrics
from dsu.service.runner import Runner
from dsu.service.settings import Settings
from dsu.service.sqlite_store import SqliteJobStore
from dsu.service.storage import LocalStorage, ResultStorage
from dsu.service.webhooks import Signer, WebhookDispatcher, load_or_create_secret
from dsu.service.worker_registry import WorkerInfo

log = logging.getLogger("dsu.service.queue")


@dataclass(frozen=True)
class WorkerStatus:
    """What ``/health`` reports of the worker.

    Attributes:
        device: where models run.
        model_loaded: the model kept warm, if any.
        default_model: ``loading`` while the default model loads, ``ready`` once it has,
            ``failed`` when it cannot (``load_error`` says why).
        load_error: why the default model did not load, in a client's words.
        workers: the separate worker processes (the ``celery`` backend), by name.
    """

    device: str
    model_loaded: str | None
    default_model: str
    load_error: str | None
    workers: tuple[WorkerInfo, ...] = field(default=())


class JobQueue(ABC):
    """What the HTTP layer needs from a queue backend."""

    storage: ResultStorage
    metrics: ServiceMetrics

    @abstractmethod
    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        warm_model: str | None = None,
        warm_error: str | None = None,
    ) -> None:
        """Start the workers; ``warm_model`` is loaded before the first job.

        ``warm_error``: why there is no default model to load (it did not resolve).
        """

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def submit(
        self, job_id: str | None, kind: str, spec: JobSpec, key: str | None = None
    ) -> tuple[Job, bool]:
        """Queue a job (``key``: storage already holding its uploaded input).

        Raises QueueFull and JobConflict.
        """

    @abstractmethod
    def check_capacity(self) -> None:
        """Raise QueueFull if a submission now would be refused."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def position(self, job: Job) -> int: ...

    @abstractmethod
    def depth(self) -> int: ...

    @abstractmethod
    def delete(self, job_id: str) -> Job | None:
        """Remove a job and its files, stopping it if it runs."""

    @abstractmethod
    async def wait(self, job_id: str, timeout: float) -> Job | None:
        """Wait until the job ends (or ``timeout``); return its latest state."""

    @abstractmethod
    def status(self) -> WorkerStatus:
        """Worker facts for ``/health``."""


class StoredQueue(JobQueue):
    """What both backends do the same way over a :class:`JobStore`: submissions and
    lookups, waiting for a job's end, webhooks and retention.

    A backend says how a stored job reaches a worker (:meth:`_dispatch`), how long a
    refused client should wait (:meth:`_retry_after`), and calls :meth:`_wake_waiters`
    when a job ends; its threads run :meth:`_housekeeping` until ``_stop`` is set.
    """

    # Seconds between store reads while a client waits: a safety net, since the backend
    # sets the waiter's event when the job ends.
    wait_poll_seconds = 5.0

    def __init__(
        self, settings: Settings, metrics: ServiceMetrics, store: JobStore, storage: ResultStorage
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.storage = storage
        self.policy = AddressPolicy(settings.allow_private_urls, settings.url_allowlist)
        self.webhook_fetcher = Fetcher(self.policy)
        self.webhooks = WebhookDispatcher(
            store,
            self.webhook_fetcher,
            Signer(load_or_create_secret(settings.webhook_secret, settings.data_dir)),
            settings.webhook_attempts,
            settings.webhook_backoff,
            settings.webhook_timeout,
            on_result=lambda outcome: metrics.webhooks.labels(outcome).inc(),
            concurrency=settings.webhook_concurrency,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, list[asyncio.Event]] = {}
        self._waiters_lock = threading.Lock()
        self._stop = threading.Event()

    @abstractmethod
    def _retry_after(self, depth: int) -> int:
        """Seconds a refused client should wait, ``depth`` jobs being ahead of it."""

    @abstractmethod
    def _dispatch(self, job: Job) -> None:
        """Hand a newly stored job to the workers."""

    def check_capacity(self) -> None:
        depth = self.store.depth()
        if depth >= self.settings.max_queue:
            raise QueueFull(
                f"the queue is full ({depth} jobs waiting or running); retry later",
                self._retry_after(depth),
            )

    def submit(
        self, job_id: str | None, kind: str, spec: JobSpec, key: str | None = None
    ) -> tuple[Job, bool]:
        job = Job(
            id=job_id or f"{kind}-{uuid.uuid4().hex}",
            key=key or new_key(),
            kind=kind,
            spec=spec,
            max_attempts=self.settings.max_attempts,
        )
        try:
            stored, created = self.store.create(job, self.settings.max_queue)
        except QueueFull as exc:
            raise QueueFull(exc.message, self._retry_after(self.store.depth())) from None
        if created:
            self._dispatch(stored)
        return stored, created

    def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def position(self, job: Job) -> int:
        return self.store.position(job)

    def depth(self) -> int:
        return self.store.depth()

    async def wait(self, job_id: str, timeout: float) -> Job | None:
        event = asyncio.Event()
        with self._waiters_lock:
            self._waiters.setdefault(job_id, []).append(event)
        deadline = time.monotonic() + timeout
        try:
            while True:
                job = await asyncio.to_thread(self.store.get, job_id)
                if job is None or job.status in TERMINAL or time.monotonic() > deadline:
                    return job
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        event.wait(), min(self.wait_poll_seconds, deadline - time.monotonic())
                    )
                event.clear()
        finally:
            with self._waiters_lock:
                events = self._waiters.get(job_id, [])
                if event in events:
                    events.remove(event)
                if not events:
                    self._waiters.pop(job_id, None)

    def _wake_waiters(self, job_id: str) -> None:
        """Wake the clients waiting for ``job_id`` (called from any thread)."""
        with self._waiters_lock:
            events = list(self._waiters.get(job_id, []))
        if events and self._loop is not None:
            for event in events:
                self._loop.call_soon_threadsafe(event.set)

    def _housekeeping(self) -> None:
        retention = self.settings.retention_hours * 3600
        interval = max(0.5, min(60.0, retention / 4))
        while not self._stop.wait(interval):
            try:
                self.sweep(time.time() - retention)
            except Exception:
                log.exception("retention sweep failed")

    def sweep(self, before: float) -> int:
        """Remove jobs that finished before ``before`` and stray storage; return the count."""
        removed = 0
        for job in self.store.finished_before(before):
            # Files first: a job that is still listed may have lost its files, never the
            # reverse (a crash in between leaves a row the next sweep removes).
            self.storage.delete(job.key)
            if self.store.delete(job.id) is not None:
                removed += 1
        # Directories no job refers to (an upload whose submission was refused while the
        # server died): removed once they are an hour old.
        self.storage.sweep(self.store.keys(), older_than=3600)
        if removed:
            log.info("retention: removed %d finished job(s)", removed)
        return removed


class LocalQueue(StoredQueue):
    """SQLite + in-process worker + local files under ``settings.data_dir``.

    ``lock``: the data dir, already claimed (``dsu serve`` claims it before uvicorn
    starts); None claims it here.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics,
        lock: DataDirLock | None = None,
        text: PublicText | None = None,
    ) -> None:
        data = settings.data_dir
        self._lock = lock or claim_data_dir(data)
        super().__init__(
            settings, metrics, SqliteJobStore(data / "jobs.sqlite3"), LocalStorage(data / "jobs")
        )
        self.fetcher = Fetcher(self.policy)
        self.runner = Runner(
            settings,
            self.store,
            self.storage,
            self.fetcher,
            metrics,
            self._finished,
            text or PublicText(),
        )
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name="dsu-retention", daemon=True
        )

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        warm_model: str | None = None,
        warm_error: str | None = None,
    ) -> None:
        self._loop = loop
        # This process holds the data dir lock: a running job of any other owner belonged
        # to a server that died, so its lease is over now rather than when it times out.
        orphans = self.store.expire_leases(except_owner=self.runner.owner)
        if orphans:
            log.warning("%d job(s) were running when the server stopped; running again", orphans)
        self.runner.start(warm_model, warm_error)
        self.webhooks.start()
        self._housekeeper.start()

    def stop(self) -> None:
        self._stop.set()
        self.runner.stop()
        self.webhooks.stop()
        self._housekeeper.join(2.0)
        self.fetcher.close()
        self.webhook_fetcher.close()
        self.store.close()
        self._lock.release()

    # -- API side --------------------------------------------------------------------------

    def _retry_after(self, depth: int) -> int:
        return max(1, min(3600, math.ceil(self.runner.average_job_seconds * max(depth, 1))))

    def _dispatch(self, job: Job) -> None:
        self.runner.wake()

    def delete(self, job_id: str) -> Job | None:
        job = self.store.delete(job_id)
        if job is None:
            return None
        if not self.runner.cancel(job.id):
            self.storage.delete(job.key)
        self._finished(job)
        return job

    def status(self) -> WorkerStatus:
        runner = self.runner
        return WorkerStatus(
            runner.device, runner.model_loaded, runner.default_state, runner.load_error
        )

    # -- worker side -----------------------------------------------------------------------

    def _finished(self, job: Job) -> None:
        """A job ended or was deleted: wake its waiters and the webhook dispatcher."""
        if job.webhook is not None or job.spec.webhook_url:
            self.webhooks.wake()
        self._wake_waiters(job.id)


def open_queue(
    settings: Settings,
    metrics: ServiceMetrics,
    lock: DataDirLock | None = None,
    text: PublicText | None = None,
) -> JobQueue:
    """The backend ``settings.queue`` names (``lock``: the data dir, checked already)."""
    if settings.queue == "celery":
        # Imported here: it needs the celery extra, which the local backend does not.
        from dsu.service.celery_queue import CeleryQueue

        return CeleryQueue(settings, metrics, lock)
    return LocalQueue(settings, metrics, lock, text)
