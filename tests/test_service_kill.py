"""A server killed with SIGKILL mid-job loses nothing: on restart (same data dir) the
running job runs again and completes, the queued one behind it too, and each webhook
arrives once. After ``DSU_MAX_ATTEMPTS`` interrupted runs a job fails with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from helpers import VOICED, noise_wav
from test_service_support import SECRET, LocalHTTP, Server

pytestmark = pytest.mark.slow

# Long enough that the kill lands while it separates: 8 kHz mono keeps the file small,
# the engine still works at the model's 44.1 kHz stereo.
LONG_INPUT = noise_wav(90.0, rate=8000, channels=1, **VOICED)


@pytest.fixture()
def web() -> Iterator[LocalHTTP]:
    server = LocalHTTP()
    server.routes["/long.wav"] = (200, {}, LONG_INPUT)
    server.routes["/short.wav"] = (200, {}, noise_wav(0.5, **VOICED))
    server.routes["/hook"] = (200, {}, b"ok")
    yield server
    server.close()


def start(data: Path, **env: str) -> Server:
    return Server(data, {"DSU_ALLOW_PRIVATE_URLS": "1", "DSU_LEASE_SECONDS": "5", **env}).start()


def test_sigkill_mid_job_then_restart_completes_everything(tmp_path: Path, web: LocalHTTP) -> None:
    server = start(tmp_path)
    try:
        for job_id, path in (("long-1", "/long.wav"), ("short-1", "/short.wav")):
            r = httpx.post(
                f"{server.url}/separate-async",
                data={
                    "job_id": job_id,
                    "audio_url": f"{web.url}{path}",
                    "webhook_url": f"{web.url}/hook",
                    "output_format": "wav",
                },
            )
            assert r.status_code == 202
        # Inside Separator.separate: its first pass reads, its second separates.
        running = server.wait_job(
            "long-1",
            ("running",),
            predicate=lambda j: j["progress"]["stage"] in ("reading", "separating"),
        )
        assert running["attempts"] == 1
        server.kill()
    finally:
        server.stop()
    assert web.hits("/hook") == []  # nothing had finished

    restarted = Server(tmp_path, server.env, server.port)  # same data dir, address, settings
    restarted.start()
    try:
        long_job = restarted.wait_job("long-1", timeout=180)
        short_job = restarted.wait_job("short-1", timeout=60)
        assert long_job["status"] == "completed" and long_job["attempts"] == 2
        assert short_job["status"] == "completed" and short_job["attempts"] == 1
        messages = web.wait_for("/hook", count=2)
        events = [Webhook(SECRET).verify(m.body, m.headers) for m in messages]
        assert sorted(e["job_id"] for e in events) == ["long-1", "short-1"]
        assert all(e["status"] == "completed" for e in events)
        got = httpx.get(long_job["result"]["stems"]["vocals"]["url"])
        assert got.status_code == 200 and len(got.content) > 2 * 89 * 8000  # 90 s, 16-bit
        assert len(web.hits("/hook")) == 2  # once each
    finally:
        restarted.stop()


def test_job_interrupted_more_than_max_attempts_fails_with_the_reason(
    tmp_path: Path, web: LocalHTTP
) -> None:
    server = start(tmp_path, DSU_MAX_ATTEMPTS="1")
    try:
        httpx.post(
            f"{server.url}/separate-async",
            data={
                "job_id": "doomed",
                "audio_url": f"{web.url}/long.wav",
                "webhook_url": f"{web.url}/hook",
            },
        )
        server.wait_job("doomed", ("running",))
        server.kill()
    finally:
        server.stop()
    restarted = Server(tmp_path, server.env, server.port).start()
    try:
        job = restarted.wait_job("doomed", ("failed",), timeout=60)
        assert job["error"]["code"] == "interrupted"
        assert "gave up after 1 attempts" in job["error"]["message"]
        [message] = web.wait_for("/hook")
        event = Webhook(SECRET).verify(message.body, message.headers)
        assert event["status"] == "failed" and event["error_code"] == "interrupted"
    finally:
        restarted.stop()
