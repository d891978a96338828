"""The job store, settings and webhook pieces on their own (real SQLite files, real HTTP)."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from dsu.service.datadir import DataDirBusy, claim_data_dir
from dsu.service.fetch import AddressPolicy, Fetcher
from dsu.service.jobs import (
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    QueueFull,
    WebhookState,
    new_key,
)
from dsu.service.settings import Settings, SettingsError
from dsu.service.sqlite_store import SqliteJobStore
from dsu.service.storage import LocalStorage, input_extension
from dsu.service.uploads import decode_base64_audio
from dsu.service.webhooks import (
    Signer,
    WebhookDispatcher,
    backoff,
    load_or_create_secret,
    new_webhook,
)
from store_contract import check_create_is_idempotent, job
from test_service_support import SECRET, LocalHTTP


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def test_create_is_idempotent_and_detects_conflicts(store: SqliteJobStore) -> None:
    check_create_is_idempotent(store, max_active=10)


def test_queue_capacity_counts_queued_and_running(store: SqliteJobStore) -> None:
    store.create(job("a"), 2)
    store.create(job("b"), 2)
    assert store.claim("w", 30).id == "a"
    with pytest.raises(QueueFull):
        store.create(job("c"), 2)
    # An existing id is answered even when the queue is full.
    assert store.create(job("b"), 2)[1] is False


def test_concurrent_creates_never_exceed_capacity(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    results: list[str] = []

    def submit(i: int) -> None:
        try:
            store.create(job(f"j{i}"), max_active=5)
            results.append("ok")
        except QueueFull:
            results.append("full")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 5 and store.depth() == 5
    store.close()


def test_claim_order_leases_and_attempts(store: SqliteJobStore) -> None:
    for name in ("a", "b"):
        store.create(job(name), 10)
    assert store.position(store.get("b")) == 2
    a = store.claim("w1", lease_seconds=0.2)
    assert a.id == "a" and a.status == RUNNING and a.attempts == 1
    assert store.position(store.get("b")) == 1
    assert store.claim("w2", 30).id == "b"  # a's lease still holds
    assert store.claim("w2", 30) is None
    time.sleep(0.3)
    again = store.claim("w2", 30)  # a's lease ran out: w1 died
    assert again.id == "a" and again.attempts == 2 and again.lease_owner == "w2"
    assert not store.renew("a", "w1", 30)  # the dead owner lost it
    assert not store.complete("a", "w1", {"stems": {}}, None)
    assert store.complete("a", "w2", {"stems": {}}, None)
    assert store.get("a").status == COMPLETED


def test_expire_leases_and_release(store: SqliteJobStore) -> None:
    store.create(job("a"), 10)
    store.claim("old-process", lease_seconds=3600)
    assert store.claim("new", 30) is None
    assert store.expire_leases(except_owner="new") == 1
    taken = store.claim("new", 30)
    assert taken.id == "a" and taken.attempts == 2
    assert store.release("a", "new")
    released = store.get("a")
    assert released.status == QUEUED and released.attempts == 1


def test_webhook_state_and_retention_queries(store: SqliteJobStore) -> None:
    store.create(job("a", webhook_url="http://hook"), 10)
    store.claim("w", 30)
    state = new_webhook('{"x":1}')
    assert store.fail("a", "w", "bad_audio", "nope", state)
    assert store.get("a").status == FAILED
    now = time.time()
    assert store.claim_webhook(now, hold=7.0).id == "a"
    assert store.claim_webhook(now + 6.9, hold=7.0) is None  # held for the first dispatcher
    assert store.next_webhook_at() == pytest.approx(now + 7.0)
    assert store.claim_webhook(now + 7.0, hold=7.0).id == "a"
    assert store.finished_before(time.time() + 10) == []  # webhook still pending
    state.status = "delivered"
    store.update_webhook("a", state)
    assert store.claim_webhook(now + 60, hold=7.0) is None
    assert [j.id for j in store.finished_before(time.time() + 10)] == ["a"]
    assert store.get("a").webhook.event_id == state.event_id


def test_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = SqliteJobStore(path)
    first.create(job("durable", audio_url="http://x"), 10)
    first.close()
    second = SqliteJobStore(path)
    assert second.get("durable").spec.audio_url == "http://x"
    second.close()


def test_storage_keys_and_names(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(ValueError):
        storage.input_path("../../etc")
    key = new_key()
    storage.output_dir(key)
    assert storage.result_file(key, "../jobs.sqlite3") is None
    assert input_extension("data/evil.sh") == "" and input_extension("audio/mpeg") == "mp3"
    assert input_extension("https://h/x/song.FLAC?sig=1") == "flac"


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "PORT": "9000",
            "DEMUCS_MODEL": "htdemucs",
            "DSU_API_KEYS": "a, b",
            "DSU_URL_ALLOWLIST": "10.0.0.0/8",
            "SEPARATION_TIMEOUT": "30",
            "DSU_MAX_LOADED_MODELS": "3",
            "DSU_MEMORY_BUDGET_MB": "1.5",
        }
    )
    assert s.port == 9000 and s.default_model == "htdemucs" and s.api_keys == ("a", "b")
    assert s.separation_timeout == 30 and str(s.url_allowlist[0]) == "10.0.0.0/8"
    assert s.max_loaded_models == 3 and s.memory_budget_bytes == 3 * 2**19
    defaults = Settings.from_env({})
    assert defaults.port == 8002 and defaults.host == "0.0.0.0"
    assert defaults.separation_timeout == 600 and not defaults.allow_private_urls
    assert defaults.max_loaded_models == 1 and defaults.memory_budget_bytes is None
    for bad in (
        {"PORT": "x"},
        {"DSU_ALLOW_PRIVATE_URLS": "maybe"},
        {"DSU_QUEUE": "redis"},
        {"DSU_WEBHOOK_SECRET": "plain"},
        {"DSU_URL_ALLOWLIST": "nope"},
        {"DSU_MAX_LOADED_MODELS": "0"},
        {"DSU_MEMORY_BUDGET_MB": "-1"},
    ):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)


def test_base64_decoding() -> None:
    raw = b"\x00\x01RIFF"
    assert decode_base64_audio(base64.b64encode(raw).decode(), 100) == (raw, None)
    data_url = "data:audio/mpeg;base64," + base64.b64encode(raw).decode()
    assert decode_base64_audio(data_url, 100) == (raw, "audio/mpeg")


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n, 2.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff(40, 2.0) == 3600.0


def test_dispatcher_gives_up_after_max_attempts(store: SqliteJobStore) -> None:
    receiver = LocalHTTP()
    receiver.routes["/down"] = (500, {}, b"")
    store.create(job("a", webhook_url=f"{receiver.url}/down"), 10)
    store.claim("w", 30)
    store.complete("a", "w", {"stems": {}}, new_webhook('{"status":"completed"}'))
    fetcher = Fetcher(AddressPolicy(allow_private=True))
    dispatcher = WebhookDispatcher(store, fetcher, Signer(SECRET), 3, 0.05, 5.0)
    dispatcher.start()
    try:
        receiver.wait_for("/down", count=3, timeout=10)
        deadline = time.monotonic() + 5
        while store.get("a").webhook.status != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        dispatcher.stop()
        fetcher.close()
        receiver.close()
    state: WebhookState = store.get("a").webhook
    assert state.attempts == 3 and state.last_status == 500
    assert len(receiver.hits("/down")) == 3
    for message in receiver.hits("/down"):
        Webhook(SECRET).verify(message.body, message.headers)


def test_one_server_per_data_dir(tmp_path: Path) -> None:
    held = claim_data_dir(tmp_path)
    with pytest.raises(DataDirBusy, match=f"another dsu serve \\(pid {os.getpid()}\\)"):
        claim_data_dir(tmp_path)
    held.release()  # what the kernel does when the process dies, however it dies
    claim_data_dir(tmp_path).release()


def test_generated_webhook_secret_is_kept_private_and_reused(tmp_path: Path) -> None:
    first = load_or_create_secret(None, tmp_path)
    assert first.startswith("whsec_") and Settings.from_env({"DSU_WEBHOOK_SECRET": first})
    assert (tmp_path / "webhook-secret").stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(None, tmp_path) == first
    assert load_or_create_secret(SECRET, tmp_path) == SECRET
