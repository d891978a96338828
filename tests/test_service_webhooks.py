"""Webhook deliveries do not wait on each other: a receiver that takes seconds to answer
holds up its own webhook only, and the others, retries included, keep their schedule.
A real SQLite store and real receivers on 127.0.0.1."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from dsu.service.fetch import AddressPolicy, Fetcher
from dsu.service.jobs import Job, JobSpec, new_key
from dsu.service.sqlite_store import SqliteJobStore
from dsu.service.webhooks import Signer, WebhookDispatcher, new_webhook
from test_service_support import SECRET, LocalHTTP

SLOW_SECONDS = 4.0
BACKOFF = 0.2


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def finished_job(store: SqliteJobStore, job_id: str, url: str, due: float) -> None:
    """A completed job whose webhook is due at ``due``."""
    spec = JobSpec(model="center", webhook_url=url)
    store.create(Job(id=job_id, key=new_key(), kind="async", spec=spec), 10)
    store.claim("worker", 30)
    state = new_webhook(f'{{"job_id":"{job_id}","status":"completed"}}')
    state.next_at = due
    store.complete(job_id, "worker", {"stems": {}}, state)


def test_a_slow_receiver_does_not_delay_other_webhooks(store: SqliteJobStore) -> None:
    slow, fast = LocalHTTP(), LocalHTTP()
    released = threading.Event()

    def sleepy(handler: object) -> tuple[int, dict[str, str], bytes]:
        released.wait(SLOW_SECONDS)
        return 200, {}, b"ok"

    arrivals: list[float] = []

    def flaky(handler: object) -> tuple[int, dict[str, str], bytes]:
        arrivals.append(time.monotonic())
        return (500, {}, b"down") if len(arrivals) < 3 else (200, {}, b"ok")

    slow.routes["/hook"] = sleepy
    fast.routes["/hook"] = flaky
    now = time.time()
    # The slow one is due first: a dispatcher that delivers in turn starts with it.
    finished_job(store, "slow", f"{slow.url}/hook", now - 1)
    finished_job(store, "fast", f"{fast.url}/hook", now)
    fetcher = Fetcher(AddressPolicy(allow_private=True))
    dispatcher = WebhookDispatcher(store, fetcher, Signer(SECRET), 5, BACKOFF, 30.0)
    started = time.monotonic()
    dispatcher.start()
    try:
        slow.wait_for("/hook", timeout=5)
        hits = fast.wait_for("/hook", count=3, timeout=SLOW_SECONDS - 1)
        # Three tries of the fast one while the slow one still waits for its answer,
        # each retry after its backoff (BACKOFF, then twice that) from the failed try.
        assert arrivals[-1] - started < SLOW_SECONDS - 1
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert gaps[0] >= BACKOFF * 0.9 and gaps[1] >= 2 * BACKOFF * 0.9, gaps
        deadline = time.monotonic() + 5
        while store.get("fast").webhook.status != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert store.get("slow").webhook.status == "pending"  # its one try is in flight
        released.set()
        deadline = time.monotonic() + 5
        while store.get("slow").webhook.status != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        released.set()
        dispatcher.stop()
        fetcher.close()
        slow.close()
        fast.close()
    assert len(slow.hits("/hook")) == 1  # handed out once, though due the whole time
    assert store.get("fast").webhook.attempts == 3 and store.get("slow").webhook.attempts == 1
    for message in [*hits, *slow.hits("/hook")]:
        Webhook(SECRET).verify(message.body, message.headers)


class CountingStore(SqliteJobStore):
    """The real store, counting how often a dispatcher looks for due webhooks."""

    lookups = 0

    def claim_webhook(self, now: float, hold: float) -> Job | None:
        self.lookups += 1
        return super().claim_webhook(now, hold)

    def next_webhook_at(self) -> float | None:
        self.lookups += 1
        return super().next_webhook_at()


def test_a_dispatcher_with_every_thread_busy_waits_instead_of_polling(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "jobs.sqlite3")
    receiver = LocalHTTP()
    released = threading.Event()

    def sleepy(handler: object) -> tuple[int, dict[str, str], bytes]:
        released.wait(SLOW_SECONDS)
        return 200, {}, b"ok"

    receiver.routes["/hook"] = sleepy
    now = time.time()
    finished_job(store, "first", f"{receiver.url}/hook", now - 1)
    finished_job(store, "second", f"{receiver.url}/hook", now)  # due, but no thread is free
    fetcher = Fetcher(AddressPolicy(allow_private=True))
    dispatcher = WebhookDispatcher(store, fetcher, Signer(SECRET), 5, BACKOFF, 30.0, concurrency=1)
    dispatcher.start()
    try:
        receiver.wait_for("/hook", timeout=5)
        before = store.lookups
        time.sleep(1.0)
        assert store.lookups - before == 0  # nothing to do until the one thread is free
        assert store.get("second").webhook.attempts == 0
        released.set()
        receiver.wait_for("/hook", count=2, timeout=5)
    finally:
        released.set()
        dispatcher.stop()
        fetcher.close()
        receiver.close()
        store.close()
