"""The SQLite :class:`~dsu.service.jobs.JobStore`: the embedded default.

WAL mode with ``synchronous=FULL``: a job the API acknowledged survives a killed process
and a power cut. One connection, shared by the API and worker threads under a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dsu.service.jobs import (
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    WEBHOOK_PENDING,
    Job,
    JobConflict,
    JobSpec,
    JobStore,
    QueueFull,
    WebhookState,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    stage TEXT,
    progress REAL,
    error_code TEXT,
    error_message TEXT,
    result TEXT,
    webhook TEXT,
    webhook_status TEXT,
    webhook_next REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_webhook ON jobs (webhook_status, webhook_next);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
"""


class SqliteJobStore(JobStore):
    """:class:`JobStore` in one SQLite file (WAL), safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before reading so check-then-write is atomic."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- creation and lookup -------------------------------------------------------------

    def create(self, job: Job, max_active: int) -> tuple[Job, bool]:
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job.id,)).fetchone()
            if row is not None:
                existing = _job(row)
                if existing.spec.fingerprint() != job.spec.fingerprint():
                    raise JobConflict(
                        f"job {job.id!r} already exists with different parameters; use a new job_id"
                    )
                return existing, False
            active = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", (QUEUED, RUNNING)
            ).fetchone()[0]
            if active >= max_active:
                raise QueueFull(f"the queue is full ({active} jobs waiting or running)", 0)
            job.created_at = job.created_at or time.time()
            db.execute(
                "INSERT INTO jobs (id, key, kind, spec, fingerprint, status, created_at,"
                " attempts, max_attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (
                    job.id,
                    job.key,
                    job.kind,
                    json.dumps(asdict(job.spec)),
                    job.spec.fingerprint(),
                    QUEUED,
                    job.created_at,
                    job.max_attempts,
                ),
            )
            return job, True

    def get(self, job_id: str) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def delete(self, job_id: str) -> Job | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            return _job(row)

    def depth(self) -> int:
        rows = self._read("SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", (QUEUED, RUNNING))
        return int(rows[0][0])

    def position(self, job: Job) -> int:
        rows = self._read(
            "SELECT COUNT(*) FROM jobs WHERE status = ? AND seq <= "
            "(SELECT seq FROM jobs WHERE id = ? AND status = ?)",
            (QUEUED, job.id, QUEUED),
        )
        return int(rows[0][0])

    def keys(self) -> set[str]:
        return {row[0] for row in self._read("SELECT key FROM jobs")}

    # -- the worker's side ---------------------------------------------------------------

    def claim(self, owner: str, lease_seconds: float) -> Job | None:
        with self._tx() as db:
            now = time.time()
            row = db.execute(
                "SELECT * FROM jobs WHERE status = ? OR (status = ? AND lease_until < ?)"
                " ORDER BY seq LIMIT 1",
                (QUEUED, RUNNING, now),
            ).fetchone()
            if row is None:
                return None
            job = _job(row)
            db.execute(
                "UPDATE jobs SET status = ?, attempts = attempts + 1, lease_owner = ?,"
                " lease_until = ?, started_at = ?, stage = 'starting', progress = 0"
                " WHERE id = ?",
                (RUNNING, owner, now + lease_seconds, now, job.id),
            )
            job.status, job.attempts, job.lease_owner = RUNNING, job.attempts + 1, owner
            job.lease_until, job.started_at = now + lease_seconds, now
            return job

    def expire_leases(self, except_owner: str) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET lease_until = 0 WHERE status = ? AND lease_owner != ?",
                (RUNNING, except_owner),
            )
            return cursor.rowcount

    def renew(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND status = ?",
                (time.time() + lease_seconds, job_id, owner, RUNNING),
            )
            return cursor.rowcount == 1

    def set_progress(self, job_id: str, owner: str, stage: str, fraction: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET stage = ?, progress = ? WHERE id = ? AND lease_owner = ?",
                (stage, fraction, job_id, owner),
            )

    def release(self, job_id: str, owner: str) -> bool:
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, attempts = MAX(attempts - 1, 0), lease_owner = NULL,"
                " lease_until = NULL, stage = NULL, progress = NULL"
                " WHERE id = ? AND lease_owner = ? AND status = ?",
                (QUEUED, job_id, owner, RUNNING),
            )
            return cursor.rowcount == 1

    def complete(
        self, job_id: str, owner: str, result: dict[str, Any], webhook: WebhookState | None
    ) -> bool:
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, lease_owner = NULL,"
                " lease_until = NULL, stage = 'done', progress = 1, result = ?,"
                " error_code = NULL, error_message = NULL, webhook = ?, webhook_status = ?,"
                " webhook_next = ? WHERE id = ? AND lease_owner = ? AND status = ?",
                (
                    COMPLETED,
                    time.time(),
                    json.dumps(result),
                    *_webhook_cols(webhook),
                    job_id,
                    owner,
                    RUNNING,
                ),
            )
            return cursor.rowcount == 1

    def fail(
        self, job_id: str, owner: str | None, code: str, message: str, webhook: WebhookState | None
    ) -> bool:
        with self._tx() as db:
            sql = (
                "UPDATE jobs SET status = ?, finished_at = ?, lease_owner = NULL,"
                " lease_until = NULL, error_code = ?, error_message = ?, webhook = ?,"
                " webhook_status = ?, webhook_next = ? WHERE id = ?"
            )
            args: tuple[Any, ...] = (
                FAILED,
                time.time(),
                code,
                message,
                *_webhook_cols(webhook),
                job_id,
            )
            if owner is not None:
                sql += " AND lease_owner = ?"
                args += (owner,)
            return db.execute(sql, args).rowcount == 1

    # -- webhooks and retention ----------------------------------------------------------

    def claim_webhook(self, now: float, hold: float) -> Job | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE webhook_status = ? AND webhook_next <= ?"
                " ORDER BY webhook_next LIMIT 1",
                (WEBHOOK_PENDING, now),
            ).fetchone()
            if row is None:
                return None
            job = _job(row)
            db.execute("UPDATE jobs SET webhook_next = ? WHERE id = ?", (now + hold, job.id))
            return job if job.webhook is not None else None

    def next_webhook_at(self) -> float | None:
        rows = self._read(
            "SELECT MIN(webhook_next) FROM jobs WHERE webhook_status = ?", (WEBHOOK_PENDING,)
        )
        return rows[0][0]

    def update_webhook(self, job_id: str, state: WebhookState) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET webhook = ?, webhook_status = ?, webhook_next = ? WHERE id = ?",
                (*_webhook_cols(state), job_id),
            )

    def finished_before(self, before: float, limit: int = 100) -> list[Job]:
        rows = self._read(
            "SELECT * FROM jobs WHERE status IN (?, ?) AND finished_at < ?"
            " AND (webhook_status IS NULL OR webhook_status != ?) LIMIT ?",
            (COMPLETED, FAILED, before, WEBHOOK_PENDING, limit),
        )
        return [_job(row) for row in rows]


def _webhook_cols(state: WebhookState | None) -> tuple[str | None, str | None, float | None]:
    if state is None:
        return None, None, None
    return json.dumps(asdict(state)), state.status, state.next_at


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        key=row["key"],
        kind=row["kind"],
        spec=JobSpec(**json.loads(row["spec"])),
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
        stage=row["stage"],
        progress=row["progress"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        result=json.loads(row["result"]) if row["result"] else None,
        webhook=WebhookState(**json.loads(row["webhook"])) if row["webhook"] else None,
    )
