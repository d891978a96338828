"""The Redis :class:`~dsu.service.jobs.JobStore`: the one shared store of the Celery backend.

The API processes and every Celery worker read and write the same jobs here; the broker
only carries job ids. Each state change is one Lua script, so it is atomic across
processes: two workers handed the same job id (a message delivered twice, a re-queue
after a lost worker) race on :meth:`RedisJobStore.claim_job` and exactly one wins;
:meth:`complete` and :meth:`fail` only take effect for the lease holder, so a job gets
exactly one result and one completion webhook.

Layout under ``prefix`` (default ``dsu:``):

``job:<id>``  hash of the job's fields (JSON for spec, result and webhook)
``jobs``      zset id -> seq, every job;   ``seq`` counter of submissions
``queued``    zset id -> seq (the queue order);  ``running`` zset id -> lease end
``finished``  zset id -> end time (retention);   ``webhooks`` zset id -> next try
``events``    pub/sub channel: ``<completed|failed|deleted> <id>`` when a job ends
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from dsu.errors import DSUError
from dsu.service.jobs import (
    COMPLETED,
    FAILED,
    QUEUED,
    Job,
    JobConflict,
    JobSpec,
    JobStore,
    QueueFull,
    WebhookState,
)


class StoreUnavailable(DSUError):
    """The Redis of the ``celery`` backend does not answer."""

    code = "bad_request"


_CREATE = """
local job = KEYS[1]
if redis.call('EXISTS', job) == 1 then return {0, 0} end
local active = redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4])
if active >= tonumber(ARGV[1]) then return {-1, active} end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', job, 'seq', seq, unpack(ARGV, 3))
redis.call('ZADD', KEYS[3], seq, ARGV[2])
redis.call('ZADD', KEYS[5], seq, ARGV[2])
return {1, seq}
"""

# A job is claimable when queued, or running with a lease that ran out (its worker died).
_CLAIM = """
local job, id = KEYS[1], ARGV[1]
local f = redis.call('HMGET', job, 'status', 'lease_until', 'lease_owner')
local now = tonumber(ARGV[3])
if f[1] == 'queued' or (f[1] == 'running' and tonumber(f[2] or 0) < now) then
  local lease = now + tonumber(ARGV[4])
  local attempts = redis.call('HINCRBY', job, 'attempts', 1)
  redis.call('HSET', job, 'status', 'running', 'lease_owner', ARGV[2], 'lease_until', lease,
    'started_at', now, 'stage', 'starting', 'progress', 0)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[3], lease, id)
  return attempts
end
return 0
"""

_RENEW = """
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_owner')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

_PROGRESS = """
if redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'stage', ARGV[2], 'progress', ARGV[3])
return 1
"""

# Back in the queue without counting the attempt; published_at 0 has it sent again.
_RELEASE = """
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_owner', 'seq', 'attempts')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', math.max(tonumber(f[4]) - 1, 0),
  'published_at', 0)
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until', 'stage', 'progress')
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], f[3], ARGV[1])
return 1
"""

# complete and fail: ARGV = id, owner ('' = whoever holds it), now, event, webhook json
# ('' = none), webhook next_at, then the fields to set.
_FINISH = """
local job, id = KEYS[1], ARGV[1]
local f = redis.call('HMGET', job, 'status', 'lease_owner')
if not f[1] then return 0 end
if ARGV[2] ~= '' and (f[1] ~= 'running' or f[2] ~= ARGV[2]) then return 0 end
redis.call('HDEL', job, 'lease_owner', 'lease_until')
redis.call('HSET', job, 'finished_at', ARGV[3], unpack(ARGV, 7))
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZADD', KEYS[4], ARGV[3], id)
if ARGV[5] ~= '' then
  redis.call('HSET', job, 'webhook', ARGV[5])
  redis.call('ZADD', KEYS[5], ARGV[6], id)
end
redis.call('PUBLISH', KEYS[6], ARGV[4] .. ' ' .. id)
return 1
"""

_DELETE = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return fields end
redis.call('DEL', KEYS[1])
for i = 2, 6 do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('PUBLISH', KEYS[7], 'deleted ' .. ARGV[1])
return fields
"""

# Claim the earliest due webhook and hold it for ARGV[2] seconds in the same step, so one
# process delivers it and, should that one die, it is due again when its try would end.
_CLAIM_WEBHOOK = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #ids == 0 then return false end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ids[1])
return ids[1]
"""

_UPDATE_WEBHOOK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'webhook', ARGV[2])
if ARGV[3] == 'pending' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
"""

_EXPIRE_LEASES = """
local count = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local job = ARGV[2] .. id
  if redis.call('HGET', job, 'lease_owner') ~= ARGV[1] then
    redis.call('HSET', job, 'lease_until', 0)
    redis.call('ZADD', KEYS[1], 0, id)
    count = count + 1
  end
end
return count
"""

# Record that the job's id was sent to the broker, on ``route``, at ``now``.
_PUBLISHED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'published_at', ARGV[1], 'route', ARGV[2])
return 1
"""


class RedisJobStore(JobStore):
    """:class:`JobStore` in Redis, shared by the API processes and the Celery workers.

    Every call retries through a Redis restart (up to ``retry_seconds``), so a worker that
    finishes while Redis restarts still records its result.
    """

    def __init__(self, url: str, prefix: str = "dsu:", retry_seconds: float = 60.0) -> None:
        retries = max(1, int(retry_seconds / 2))
        self.prefix = prefix
        self.redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=30.0,
            socket_connect_timeout=5.0,
            health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self.events_channel = prefix + "events"
        self._k = {name: prefix + name for name in ("jobs", "seq", "queued", "running")}
        self._k.update({name: prefix + name for name in ("finished", "webhooks")})
        scripts = {
            "create": _CREATE,
            "claim": _CLAIM,
            "renew": _RENEW,
            "progress": _PROGRESS,
            "release": _RELEASE,
            "finish": _FINISH,
            "delete": _DELETE,
            "claim_webhook": _CLAIM_WEBHOOK,
            "update_webhook": _UPDATE_WEBHOOK,
            "expire_leases": _EXPIRE_LEASES,
            "published": _PUBLISHED,
        }
        self._scripts = {name: self.redis.register_script(src) for name, src in scripts.items()}

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[script](keys=keys, args=args)

    def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers."""
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            where = self.redis.get_connection_kwargs()
            raise StoreUnavailable(
                f"cannot reach Redis at {where.get('host', '?')}:{where.get('port', '?')} "
                f"({exc}); start it, or point DSU_REDIS_URL at it"
            ) from None

    def close(self) -> None:
        self.redis.close()

    # -- creation and lookup -------------------------------------------------------------

    def create(self, job: Job, max_active: int) -> tuple[Job, bool]:
        job.created_at = job.created_at or time.time()
        fields = {
            "id": job.id,
            "key": job.key,
            "kind": job.kind,
            "spec": json.dumps(asdict(job.spec)),
            "fingerprint": job.spec.fingerprint(),
            "status": QUEUED,
            "created_at": job.created_at,
            "attempts": 0,
            "max_attempts": job.max_attempts,
            "published_at": 0,
        }
        k = self._k
        created, count = self._run(
            "create",
            [self._job_key(job.id), k["seq"], k["queued"], k["running"], k["jobs"]],
            [max_active, job.id, *_flat(fields)],
        )
        if created == -1:
            raise QueueFull(f"the queue is full ({count} jobs waiting or running)", 0)
        if created == 1:
            return job, True
        existing = self.get(job.id)
        if existing is None:  # deleted in between: submit it again
            return self.create(job, max_active)
        if existing.spec.fingerprint() != job.spec.fingerprint():
            raise JobConflict(
                f"job {job.id!r} already exists with different parameters; use a new job_id"
            )
        return existing, False

    def get(self, job_id: str) -> Job | None:
        fields = self.redis.hgetall(self._job_key(job_id))
        return _job(fields) if fields else None

    def fields(self, job_id: str, *names: str) -> list[str | None]:
        """Raw fields of a job (``route``, ``published_at``: the Celery backend's own)."""
        return self.redis.hmget(self._job_key(job_id), names)

    def delete(self, job_id: str) -> Job | None:
        k = self._k
        flat = self._run(
            "delete",
            [
                self._job_key(job_id),
                k["jobs"],
                k["queued"],
                k["running"],
                k["finished"],
                k["webhooks"],
                self.events_channel,
            ],
            [job_id],
        )
        return _job(dict(zip(flat[::2], flat[1::2], strict=True))) if flat else None

    def depth(self) -> int:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self._k["queued"])
            pipe.zcard(self._k["running"])
            queued, running = pipe.execute()
        return int(queued) + int(running)

    def position(self, job: Job) -> int:
        rank = self.redis.zrank(self._k["queued"], job.id)
        return 0 if rank is None else int(rank) + 1

    def keys(self) -> set[str]:
        ids = self.redis.zrange(self._k["jobs"], 0, -1)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self._job_key(job_id), "key")
            return {key for key in pipe.execute() if key}

    def queued_ids(self) -> list[str]:
        """Queued jobs, oldest first."""
        return self.redis.zrange(self._k["queued"], 0, -1)

    def expired_ids(self, now: float) -> list[str]:
        """Running jobs whose lease ran out before ``now``: their worker is gone."""
        return self.redis.zrangebyscore(self._k["running"], "-inf", now)

    def counts(self) -> tuple[int, int]:
        """(queued, running)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self._k["queued"])
            pipe.zcard(self._k["running"])
            queued, running = pipe.execute()
        return int(queued), int(running)

    def oldest_queued_at(self) -> float | None:
        """Submission time of the job that has waited longest, None when none waits."""
        first = self.redis.zrange(self._k["queued"], 0, 0)
        if not first:
            return None
        created = self.redis.hget(self._job_key(first[0]), "created_at")
        return float(created) if created else None

    def restarted(self) -> bool:
        """Whether Redis restarted (or was replaced) since the last call by any process.

        Each start of ``redis-server`` has a new ``run_id``; the last one seen is kept in
        the store, so the first call after a restart, from whichever process, says so.
        """
        run_id = self.redis.info("server")["run_id"]
        return self.redis.set(self.prefix + "redis-run-id", run_id, get=True) != run_id

    def mark_published(self, job_id: str, route: str, when: float) -> bool:
        """Record that the job's id went to the broker queue ``route``."""
        return bool(self._run("published", [self._job_key(job_id)], [when, route]))

    # -- the worker's side ---------------------------------------------------------------

    def claim_job(self, job_id: str, owner: str, lease_seconds: float) -> Job | None:
        """Take ``job_id`` if it is runnable (queued, or its lease ran out); else None.

        The one atomic step that makes a duplicated message harmless: of two workers
        handed the same id, one gets the job and the other None.
        """
        k = self._k
        attempts = self._run(
            "claim",
            [self._job_key(job_id), k["queued"], k["running"]],
            [job_id, owner, time.time(), lease_seconds],
        )
        return self.get(job_id) if attempts else None

    def claim(self, owner: str, lease_seconds: float) -> Job | None:
        for candidates in (self.queued_ids(), self.expired_ids(time.time())):
            for job_id in candidates:
                job = self.claim_job(job_id, owner, lease_seconds)
                if job is not None:
                    return job
        return None

    def expire_leases(self, except_owner: str) -> int:
        return int(
            self._run("expire_leases", [self._k["running"]], [except_owner, self.prefix + "job:"])
        )

    def renew(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        return bool(
            self._run(
                "renew",
                [self._job_key(job_id), self._k["running"]],
                [job_id, owner, time.time() + lease_seconds],
            )
        )

    def set_progress(self, job_id: str, owner: str, stage: str, fraction: float) -> None:
        self._run("progress", [self._job_key(job_id)], [owner, stage, fraction])

    def release(self, job_id: str, owner: str) -> bool:
        k = self._k
        return bool(
            self._run(
                "release", [self._job_key(job_id), k["queued"], k["running"]], [job_id, owner]
            )
        )

    def _finish(
        self,
        job_id: str,
        owner: str | None,
        event: str,
        webhook: WebhookState | None,
        fields: dict[str, Any],
    ) -> bool:
        k = self._k
        hook = json.dumps(asdict(webhook)) if webhook is not None else ""
        return bool(
            self._run(
                "finish",
                [
                    self._job_key(job_id),
                    k["queued"],
                    k["running"],
                    k["finished"],
                    k["webhooks"],
                    self.events_channel,
                ],
                [
                    job_id,
                    owner or "",
                    time.time(),
                    event,
                    hook,
                    webhook.next_at if webhook is not None else 0,
                    *_flat(fields),
                ],
            )
        )

    def complete(
        self, job_id: str, owner: str, result: dict[str, Any], webhook: WebhookState | None
    ) -> bool:
        fields = {
            "status": COMPLETED,
            "stage": "done",
            "progress": 1,
            "result": json.dumps(result),
            "error_code": "",
            "error_message": "",
        }
        return self._finish(job_id, owner, COMPLETED, webhook, fields)

    def fail(
        self, job_id: str, owner: str | None, code: str, message: str, webhook: WebhookState | None
    ) -> bool:
        fields = {"status": FAILED, "error_code": code, "error_message": message}
        return self._finish(job_id, owner, FAILED, webhook, fields)

    # -- webhooks and retention ----------------------------------------------------------

    def claim_webhook(self, now: float, hold: float) -> Job | None:
        job_id = self._run("claim_webhook", [self._k["webhooks"]], [now, hold])
        job = self.get(job_id) if job_id else None
        return job if job is not None and job.webhook is not None else None

    def next_webhook_at(self) -> float | None:
        first = self.redis.zrange(self._k["webhooks"], 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def update_webhook(self, job_id: str, state: WebhookState) -> None:
        self._run(
            "update_webhook",
            [self._job_key(job_id), self._k["webhooks"]],
            [job_id, json.dumps(asdict(state)), state.status, state.next_at],
        )

    def finished_before(self, before: float, limit: int = 100) -> list[Job]:
        ids = self.redis.zrangebyscore(self._k["finished"], "-inf", before, start=0, num=limit)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.zscore(self._k["webhooks"], job_id)
            pending = pipe.execute()
        jobs = [self.get(job_id) for job_id, due in zip(ids, pending, strict=True) if due is None]
        return [job for job in jobs if job is not None]


def _flat(fields: dict[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


def _job(fields: dict[str, str]) -> Job:
    def number(name: str) -> float | None:
        value = fields.get(name)
        return float(value) if value not in (None, "") else None

    def text(name: str) -> str | None:
        return fields.get(name) or None

    def loaded(name: str) -> Any:
        value = fields.get(name)
        return json.loads(value) if value else None

    webhook = loaded("webhook")
    return Job(
        id=fields["id"],
        key=fields["key"],
        kind=fields["kind"],
        spec=JobSpec(**loaded("spec")),
        status=fields["status"],
        created_at=number("created_at") or 0.0,
        started_at=number("started_at"),
        finished_at=number("finished_at"),
        attempts=int(fields.get("attempts") or 0),
        max_attempts=int(fields["max_attempts"]),
        lease_owner=text("lease_owner"),
        lease_until=number("lease_until"),
        stage=text("stage"),
        progress=number("progress"),
        error_code=text("error_code"),
        error_message=text("error_message"),
        result=loaded("result"),
        webhook=WebhookState(**webhook) if webhook else None,
    )
