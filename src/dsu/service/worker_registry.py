"""Who is working: Celery workers' heartbeats in Redis, and routing a job to a warm worker.

Each ``dsu celery-worker`` writes a :class:`WorkerInfo` every ``DSU_WORKER_HEARTBEAT``
seconds and at once when it starts or ends a job; a record not refreshed for three beats
expires, and the worker is gone. The API reads them for ``/health`` and ``/metrics``, and
:meth:`WorkerRegistry.reserve` picks an idle worker that already holds a job's model,
so the job goes to that worker's own queue instead of the shared one (where any worker,
perhaps one without the model, would take it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

# A worker is gone when its record is this many heartbeats old.
MISSED_BEATS = 3

# INCR the worker's reservation count unless it is busy or reserved already (atomic).
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], ARGV[1])
  return 1
end
redis.call('DECR', KEYS[2])
return 0
"""

_UNRESERVE = """
if redis.call('DECR', KEYS[1]) < 0 then redis.call('SET', KEYS[1], 0) end
return 1
"""


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as its last heartbeat described it.

    Attributes:
        name: unique among running workers (``DSU_WORKER_NAME``, default ``host:pid``).
        queue: its own broker queue, for jobs routed to it.
        device: where its models run.
        models: the models it holds loaded, most recently used first.
        default_model: ``loading``, ``ready`` or ``failed`` (``load_error`` says why).
        load_error: why its default model did not load.
        busy: the job it runs, None when idle.
        completed, failed: jobs it ended since it started.
        busy_seconds: time it spent running jobs.
        started_at, last_seen: Unix times.
    """

    name: str
    queue: str
    device: str
    models: tuple[str, ...] = ()
    default_model: str = "loading"
    load_error: str | None = None
    busy: str | None = None
    completed: int = 0
    failed: int = 0
    busy_seconds: float = 0.0
    started_at: float = 0.0
    last_seen: float = 0.0


class WorkerRegistry:
    """Worker records under ``<prefix>worker:<name>``, listed in the ``<prefix>workers`` zset."""

    def __init__(self, client: redis.Redis, prefix: str, heartbeat: float) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl = max(1, int(heartbeat * MISSED_BEATS + 0.999))
        self._index = prefix + "workers"
        self._reserve = client.register_script(_RESERVE)
        self._unreserve = client.register_script(_UNRESERVE)

    def _key(self, name: str) -> str:
        return f"{self.prefix}worker:{name}"

    def _reserved(self, name: str) -> str:
        return f"{self.prefix}worker:{name}:reserved"

    def beat(self, info: WorkerInfo) -> None:
        """Write the worker's record; it lives for :data:`MISSED_BEATS` heartbeats."""
        data = json.dumps(asdict(info))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(info.name), data, ex=self.ttl)
            pipe.zadd(self._index, {info.name: info.last_seen})
            pipe.execute()

    def leave(self, name: str) -> None:
        """Remove the worker's record (a clean shutdown)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(name), self._reserved(name))
            pipe.zrem(self._index, name)
            pipe.execute()

    def alive(self) -> list[WorkerInfo]:
        """Workers whose record has not expired, by name."""
        names = self.redis.zrange(self._index, 0, -1)
        if not names:
            return []
        records = self.redis.mget([self._key(name) for name in names])
        gone = [name for name, data in zip(names, records, strict=True) if data is None]
        if gone:
            self.redis.zrem(self._index, *gone)
        workers = [_info(data) for data in records if data is not None]
        return sorted(workers, key=lambda w: w.name)

    def reserve(self, model: str) -> WorkerInfo | None:
        """An idle, live worker holding ``model``, now reserved for one job; None if none.

        The reservation ends when the worker takes the job (:meth:`unreserve`) or after
        :data:`MISSED_BEATS` heartbeats, whichever comes first.
        """
        for worker in self.alive():
            if worker.busy or model not in worker.models or worker.default_model != "ready":
                continue
            keys = [self._key(worker.name), self._reserved(worker.name)]
            if self._reserve(keys=keys, args=[self.ttl]):
                return worker
        return None

    def unreserve(self, name: str) -> None:
        """The worker took the job it was reserved for."""
        self._unreserve(keys=[self._reserved(name)])

    def clear_reservations(self, name: str) -> None:
        """A (re)starting worker has nothing reserved."""
        self.redis.delete(self._reserved(name))


def _info(data: str) -> WorkerInfo:
    fields = json.loads(data)
    fields["models"] = tuple(fields.get("models") or ())
    return WorkerInfo(**fields)
