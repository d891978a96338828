"""The Redis job store's atomic steps against a real ``redis-server``: one claim wins, only
the lease holder finishes, a webhook is handed to one dispatcher, state survives a
restart of Redis, a restart sends every queued job again, and the settings take the
Celery backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsu.service.celery_app import SHARED_QUEUE, Dispatch, make_celery, visibility_timeout
from dsu.service.jobs import COMPLETED, QUEUED, RUNNING
from dsu.service.redis_store import RedisJobStore, StoreUnavailable
from dsu.service.requeue import Requeuer
from dsu.service.settings import Settings, SettingsError
from dsu.service.webhooks import new_webhook
from dsu.service.worker_registry import WorkerRegistry
from redis_support import RedisServer, free_port
from store_contract import check_create_is_idempotent, job


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture()
def store(redis_server: RedisServer) -> Iterator[RedisJobStore]:
    s = RedisJobStore(redis_server.url)
    s.redis.flushdb()
    yield s
    s.close()


def test_create_is_idempotent_and_bounded(store: RedisJobStore) -> None:
    check_create_is_idempotent(store, max_active=2)
    store.create(job("b"), max_active=2)
    assert store.depth() == 2 and store.position(store.get("b")) == 2


def test_one_of_many_concurrent_claims_wins(store: RedisJobStore) -> None:
    store.create(job("a"), 10)
    winners: list[str] = []

    def claim(owner: str) -> None:
        if store.claim_job("a", owner, 30) is not None:
            winners.append(owner)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    held = store.get("a")
    assert held.status == RUNNING and held.attempts == 1 and held.lease_owner == winners[0]
    loser = "w0" if winners[0] != "w0" else "w1"
    assert not store.complete("a", loser, {"stems": {}}, None)
    assert store.complete("a", winners[0], {"stems": {}}, new_webhook("{}"))
    assert store.get("a").status == COMPLETED
    assert store.claim_job("a", loser, 30) is None  # a redelivered message runs nothing
    assert not store.complete("a", winners[0], {"stems": {}}, None)  # exactly one result


def test_an_expired_lease_is_claimed_again_and_counted(store: RedisJobStore) -> None:
    store.create(job("a"), 10)
    store.claim_job("a", "dead", lease_seconds=0.2)
    assert store.claim_job("a", "other", 30) is None  # the lease still holds
    time.sleep(0.3)
    assert store.expired_ids(time.time()) == ["a"]
    taken = store.claim_job("a", "other", 30)
    assert taken is not None and taken.attempts == 2 and not store.renew("a", "dead", 30)
    assert store.release("a", "other") and store.get("a").status == QUEUED


def test_a_due_webhook_is_claimed_once_and_due_again_after_its_hold(
    store: RedisJobStore,
) -> None:
    store.create(job("a", webhook_url="http://hook"), 10)
    store.claim_job("a", "w", 30)
    store.fail("a", "w", "bad_audio", "nope", new_webhook('{"x":1}'))
    now = time.time() + 1
    assert store.claim_webhook(now, hold=7.0).id == "a"
    # Held for the first dispatcher; should it die, due again when its try would have ended.
    assert store.claim_webhook(now + 6.9, hold=7.0) is None
    assert store.next_webhook_at() == pytest.approx(now + 7.0)
    assert store.claim_webhook(now + 7.0, hold=7.0).id == "a"
    assert store.finished_before(now + 10) == []  # its webhook is pending


def test_deleting_announces_it_and_the_job_cannot_be_claimed(store: RedisJobStore) -> None:
    store.create(job("a"), 10)
    pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.events_channel)
    pubsub.get_message(timeout=1.0)
    assert store.delete("a").id == "a" and store.get("a") is None
    message = pubsub.get_message(timeout=2.0)
    assert message is not None and message["data"] == "deleted a"
    assert store.claim_job("a", "w", 30) is None and store.depth() == 0
    pubsub.close()


def test_jobs_survive_a_redis_kill(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    try:
        first = RedisJobStore(server.url)
        first.create(job("durable", audio_url="http://x"), 10)
        first.close()
        server.kill()
        server.start()
        second = RedisJobStore(server.url)
        assert second.get("durable").spec.audio_url == "http://x"
        assert second.queued_ids() == ["durable"]
        second.close()
    finally:
        server.stop()


def test_settings_and_an_absent_redis() -> None:
    s = Settings.from_env({"DSU_QUEUE": "celery", "DSU_REDIS_URL": "redis://h:1/2"})
    assert s.queue == "celery" and s.redis_url == "redis://h:1/2"
    with pytest.raises(SettingsError):
        Settings.from_env({"DSU_QUEUE": "celery", "DSU_REDIS_URL": "http://h"})
    with pytest.raises(StoreUnavailable, match="cannot reach Redis"):
        RedisJobStore(f"redis://127.0.0.1:{free_port()}/0", retry_seconds=1).ping()


def test_a_redis_restart_sends_every_queued_job_again(tmp_path: Path) -> None:
    """A message a worker took but had not claimed dies with its connection; after a
    restart the requeuer sends the job again instead of waiting out the visibility timeout."""
    server = RedisServer(tmp_path).start()
    settings = Settings.from_env({"DSU_QUEUE": "celery", "DSU_REDIS_URL": server.url})
    store = RedisJobStore(server.url)
    try:
        registry = WorkerRegistry(store.redis, store.prefix, settings.worker_heartbeat)
        dispatch = Dispatch(make_celery(settings), store)
        requeuer = Requeuer(store, registry, dispatch, 1.0, visibility_timeout(settings))
        store.create(job("taken"), 10)
        dispatch.send("taken")
        requeuer.sweep(time.time())  # the first pass records which Redis it talks to
        store.redis.delete(SHARED_QUEUE)  # a worker took the message from the broker
        assert requeuer.sweep(time.time()) == [] and store.redis.llen(SHARED_QUEUE) == 0
        server.kill()
        server.start()
        assert requeuer.sweep(time.time()) == ["taken"]
        assert store.redis.llen(SHARED_QUEUE) == 1
        assert requeuer.sweep(time.time()) == []
    finally:
        store.close()
        server.stop()
