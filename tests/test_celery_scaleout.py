"""The Celery backend end to end: a real ``redis-server`` (AOF on), a real ``dsu serve
--queue celery`` and two real ``dsu celery-worker`` processes, a real webhook receiver on
127.0.0.1. Jobs spread over both workers; a worker SIGKILLed mid-job, a Redis restart and
an API restart lose nothing and duplicate nothing."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from dsu.service.webhooks import IN_FLIGHT_MARGIN
from helpers import VOICED, noise_wav
from redis_support import CeleryWorker, RedisServer
from test_service_support import SECRET, LocalHTTP, Server

pytestmark = pytest.mark.slow

# Long enough that a kill lands mid-separation (as in test_service_kill).
LONG_INPUT = noise_wav(60.0, rate=8000, channels=1, **VOICED)
SHORT_INPUT = noise_wav(0.5, **VOICED)
# A webhook the killed API had handed out is due again this long after; a restarted API
# must deliver it within the wait for webhooks.
WEBHOOK_TIMEOUT = 5.0
WEBHOOK_WAIT = WEBHOOK_TIMEOUT + IN_FLIGHT_MARGIN + 20.0


@dataclass
class Stack:
    redis: RedisServer
    api: Server
    workers: dict[str, CeleryWorker]
    web: LocalHTTP
    data: Path

    def submit(self, job_id: str, path: str = "/short.wav") -> None:
        r = httpx.post(
            f"{self.api.url}/separate-async",
            data={
                "job_id": job_id,
                "audio_url": f"{self.web.url}{path}",
                "webhook_url": f"{self.web.url}/hook",
                "output_format": "wav",
            },
            timeout=30,
        )
        assert r.status_code == 202, r.text

    def health(self) -> dict:
        return httpx.get(f"{self.api.url}/health", timeout=10).json()

    def add_worker(self, name: str) -> CeleryWorker:
        worker = CeleryWorker(name, self.data / "data", self.api.env, self.data / f"{name}.log")
        self.workers[name] = worker.start()
        deadline = time.monotonic() + 90
        while not any(
            w["name"] == name and w["state"] == "ready" for w in self.health()["workers"]
        ):
            assert worker.alive() and time.monotonic() < deadline, worker.log.read_text()[-3000:]
            time.sleep(0.2)
        return worker

    def hooks(self, job_id: str) -> list[dict]:
        events = [Webhook(SECRET).verify(m.body, m.headers) for m in self.web.hits("/hook")]
        return [e for e in events if e["job_id"] == job_id]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("scaleout")
    web = LocalHTTP()
    web.routes["/short.wav"] = (200, {}, SHORT_INPUT)
    web.routes["/long.wav"] = (200, {}, LONG_INPUT)
    web.routes["/hook"] = (200, {}, b"ok")
    redis = RedisServer(data / "redis").start()
    env = {
        "DSU_QUEUE": "celery",
        "DSU_REDIS_URL": redis.url,
        "DSU_ALLOW_PRIVATE_URLS": "1",
        "DSU_LEASE_SECONDS": "3",
        "DSU_WORKER_HEARTBEAT": "1",
        "DSU_WEBHOOK_TIMEOUT": str(WEBHOOK_TIMEOUT),
        "DSU_MAX_QUEUE": "32",
        "OMP_NUM_THREADS": "1",
    }
    api = Server(data, env, queue="local")  # the env picks celery; the stack is built here
    s = Stack(redis, api, {}, web, data)
    try:
        s.workers["w1"] = CeleryWorker("w1", data / "data", api.env, data / "w1.log").start()
        api.start()
        s.add_worker("w2")
        yield s
    finally:
        api.stop()
        for worker in s.workers.values():
            worker.stop()
        redis.stop()
        web.close()


def completed(stack: Stack, ids: list[str], timeout: float = 120) -> dict[str, dict]:
    jobs = {job_id: stack.api.wait_job(job_id, timeout=timeout) for job_id in ids}
    assert all(j["status"] == "completed" for j in jobs.values()), jobs
    return jobs


def exactly_one_webhook_each(stack: Stack, ids: list[str]) -> None:
    deadline = time.monotonic() + WEBHOOK_WAIT
    while missing := [job_id for job_id in ids if not stack.hooks(job_id)]:
        assert time.monotonic() < deadline, {
            job_id: httpx.get(f"{stack.api.url}/jobs/{job_id}").json().get("webhook")
            for job_id in missing
        }
        time.sleep(0.1)
    time.sleep(1.0)  # a duplicate would follow within the second
    for job_id in ids:
        [event] = stack.hooks(job_id)
        assert event["status"] == "completed"


def test_ten_jobs_complete_on_both_workers(stack: Stack) -> None:
    before = {w["name"]: w["completed"] for w in stack.health()["workers"]}
    ids = [f"ten-{i}" for i in range(10)]
    for job_id in ids:
        stack.submit(job_id)
    completed(stack, ids)
    exactly_one_webhook_each(stack, ids)
    health = stack.health()
    assert health["status"] == "healthy" and health["queue_depth"] == 0
    done = {w["name"]: w["completed"] - before.get(w["name"], 0) for w in health["workers"]}
    assert sum(done.values()) == 10 and all(n > 0 for n in done.values()), done
    assert all(w["models"] == ["center"] for w in health["workers"])
    metrics = httpx.get(f"{stack.api.url}/metrics").text
    for name in ("w1", "w2"):
        assert f'dsu_worker_jobs_total{{status="completed",worker="{name}"}}' in metrics
    assert "dsu_queue_oldest_job_seconds 0.0" in metrics and "dsu_workers 2.0" in metrics


def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(stack: Stack) -> None:
    stack.submit("long-kill", "/long.wav")
    running = stack.api.wait_job(
        "long-kill", ("running",), predicate=lambda j: j["progress"]["stage"] == "separating"
    )
    assert running["attempts"] == 1
    [holder] = [w["name"] for w in stack.health()["workers"] if w["busy"] == "long-kill"]
    stack.workers[holder].kill()
    job = stack.api.wait_job("long-kill", timeout=180)
    assert job["status"] == "completed" and job["attempts"] == 2, job
    got = httpx.get(job["result"]["stems"]["vocals"]["url"])
    assert got.status_code == 200 and len(got.content) > 2 * 59 * 8000
    exactly_one_webhook_each(stack, ["long-kill"])
    stack.add_worker(holder)  # back to two workers for the next tests


def test_a_redis_restart_mid_run_loses_no_job(stack: Stack) -> None:
    ids = ["redis-long", *[f"redis-{i}" for i in range(5)]]
    stack.submit(ids[0], "/long.wav")
    for job_id in ids[1:]:
        stack.submit(job_id)
    stack.api.wait_job(ids[0], ("running",))
    stack.redis.kill()  # SIGKILL: what the append-only file holds is all that is left
    time.sleep(1.0)
    stack.redis.start()
    completed(stack, ids, timeout=180)
    exactly_one_webhook_each(stack, ids)


def test_an_api_killed_and_restarted_loses_nothing(stack: Stack) -> None:
    ids = [f"api-{i}" for i in range(6)]
    for job_id in ids:
        stack.submit(job_id)
    stack.api.proc.kill()  # SIGKILL, the workers carry on
    stack.api.proc.wait(10)
    restarted = Server(stack.data, stack.api.env, stack.api.port, queue="local").start()
    stack.api.proc = restarted.proc
    completed(stack, ids)
    exactly_one_webhook_each(stack, ids)
    counts = Counter(
        e["job_id"]
        for e in (Webhook(SECRET).verify(m.body, m.headers) for m in stack.web.hits("/hook"))
    )
    assert all(n == 1 for n in counts.values()), counts


def test_deleting_a_running_job_stops_it(stack: Stack) -> None:
    stack.submit("long-delete", "/long.wav")
    stack.api.wait_job(
        "long-delete", ("running",), predicate=lambda j: j["progress"]["stage"] == "separating"
    )
    assert httpx.delete(f"{stack.api.url}/jobs/long-delete").status_code == 200
    deadline = time.monotonic() + 10
    while any(w["busy"] == "long-delete" for w in stack.health()["workers"]):
        assert time.monotonic() < deadline, "the worker kept running a deleted job"
        time.sleep(0.1)
    assert stack.hooks("long-delete") == []
