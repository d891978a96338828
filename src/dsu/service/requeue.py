"""Sending a job's id again when the broker's copy cannot be relied on.

The job store is the truth; the broker is how workers hear of work. Every API process
and every worker runs a :class:`Requeuer`; one at a time (a lock in Redis) looks for

- running jobs whose lease ran out (their worker was killed or lost its machine) and that
  were not sent since: sent again, so another worker takes them within a lease, not after
  the broker's visibility timeout;
- queued jobs never recorded as sent (the API died between storing and sending), or sent
  to the queue of a worker that is gone, or sent longer ago than the visibility timeout
  (a broker that lost its data): sent again on the shared queue;
- every queued job, once, after Redis restarted: a message a worker had taken from the
  broker but not yet claimed dies with that worker's connection (Redis would hand it out
  again only after the visibility timeout), so the job would wait that long.

A job sent twice runs once: the worker that claims it second finds it taken.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from dsu.service.celery_app import SHARED_QUEUE, Dispatch
from dsu.service.redis_store import RedisJobStore
from dsu.service.worker_registry import WorkerRegistry

log = logging.getLogger("dsu.service.requeue")

# Seconds a submission may take between storing a job and recording its send.
SEND_GRACE = 10.0


class Requeuer:
    """A background thread that re-sends the ids of jobs the broker may have lost."""

    def __init__(
        self,
        store: RedisJobStore,
        registry: WorkerRegistry,
        dispatch: Dispatch,
        interval: float,
        resend_after: float,
    ) -> None:
        self.store = store
        self.registry = registry
        self.dispatch = dispatch
        self.interval = interval
        self.resend_after = resend_after
        self._lock_key = store.prefix + "requeue-lock"
        self._me = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dsu-requeue", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                lease_ms = int(self.interval * 2000)
                holder = self.store.redis.set(self._lock_key, self._me, nx=True, px=lease_ms)
                if holder or self.store.redis.get(self._lock_key) == self._me:
                    self.store.redis.pexpire(self._lock_key, lease_ms)
                    self.sweep(time.time())
            except Exception:
                log.exception("requeue pass failed")

    def sweep(self, now: float) -> list[str]:
        """One pass; returns the ids sent again."""
        sent = []
        for job_id in self.store.expired_ids(now):
            published, lease_until = self.store.fields(job_id, "published_at", "lease_until")
            if float(published or 0) <= float(lease_until or 0):
                log.warning("job %s: its worker stopped renewing the lease; sending again", job_id)
                self.dispatch.send(job_id)
                sent.append(job_id)
        restarted = self.store.restarted()
        live = {worker.queue for worker in self.registry.alive()}
        for job_id in self.store.queued_ids():
            published, route, created = self.store.fields(
                job_id, "published_at", "route", "created_at"
            )
            published_at = float(published or 0)
            if published_at == 0:
                due = float(created or 0) < now - SEND_GRACE
            else:
                lost_worker = bool(route) and route != SHARED_QUEUE and route not in live
                due = restarted or lost_worker or published_at < now - self.resend_after
            if due:
                log.warning("job %s: queued but not safely sent; sending again", job_id)
                self.dispatch.send(job_id)
                sent.append(job_id)
        return sent
