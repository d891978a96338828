"""The HTTP service end to end: a real ``dsu serve`` on 127.0.0.1, real HTTP clients (httpx
and the seed's curl commands), a real webhook receiver that verifies signatures."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from standardwebhooks import Webhook

from dsu import audio
from helpers import VOICED, noise_wav
from test_service_support import SECRET, LocalHTTP, Server, read_wav

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def web() -> Iterator[LocalHTTP]:
    """Audio files and webhook endpoints, on 127.0.0.1."""
    server = LocalHTTP()
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(
        tmp_path_factory.mktemp("serve"),
        {
            "DSU_ALLOW_PRIVATE_URLS": "1",
            "DSU_MAX_UPLOAD_MB": "3",
            "DSU_MAX_DURATION": "20",
            "DSU_MAX_QUEUE": "4",
            "DSU_WEBHOOK_BACKOFF": "0.2",
            "DSU_WEBHOOK_ATTEMPTS": "4",
        },
    ).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def mp3_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wav, sr = read_wav(noise_wav(3.0, seed=1, **VOICED))
    path = audio.write(tmp_path_factory.mktemp("mp3") / "in.mp3", wav, sr, "mp3", bitrate=128)
    return path.read_bytes()


def verified(message) -> dict:
    """The webhook's payload after checking its Standard Webhooks signature."""
    return Webhook(SECRET).verify(message.body, message.headers)


# -- the seed's examples ---------------------------------------------------------------------


def test_health_matches_the_seed(server: Server) -> None:
    body = httpx.get(f"{server.url}/health").json()
    assert body["status"] == "healthy"
    for key in ("model", "hardware", "torch_version", "cuda_available", "device"):
        assert key in body
    assert body["model"] == "center" and body["device"] == "cpu" and body["model_loaded"]
    info = httpx.get(f"{server.url}/").json()
    assert "/separate-sync" in info["endpoints"] and "/separate-async" in info["endpoints"]


needs_curl = pytest.mark.skipif(
    shutil.which("curl") is None, reason="the seed's examples are curl commands; curl is absent"
)


@needs_curl
def test_seed_curl_sync_example(server: Server, tmp_path: Path) -> None:
    """The seed README's command, with a real file as the payload it elides."""
    wav = noise_wav(2.0, **VOICED)
    payload = (
        '{\n    "audio_base64": "data:audio/mpeg;base64,%s",\n    "model": "%s",\n'
        '    "output_format": "mp3"\n  }'
    )
    as_written = [
        "curl",
        "-s",
        "-X",
        "POST",
        f"{server.url}/separate-sync",
        "-H",
        "Content-Type: application/json",
        "-d",
    ]
    body_file = tmp_path / "body.json"

    def post(model: str) -> dict:
        body_file.write_text(payload % (base64.b64encode(wav).decode(), model))
        out = subprocess.run(
            [*as_written, f"@{body_file}"], capture_output=True, check=True, timeout=120
        )
        return json.loads(out.stdout)

    # Verbatim, model mdx_q: this server has not pulled it, and says where to look (an
    # HTTP client can run no `dsu` command and has no business with the server's paths).
    error = post("mdx_q")["error"]
    assert error["code"] == "model_not_found" and "GET /models" in error["message"]
    assert "dsu " not in error["message"] and str(server.data_dir) not in error["message"]
    # With the model this server has, the seed's response fields come back.
    body = post("center")
    for key in (
        "vocals_base64",
        "instrumental_base64",
        "vocals_size",
        "instrumental_size",
        "model",
        "format",
        "duration",
    ):
        assert key in body, key
    assert body["model"] == "center" and body["format"] == "mp3"
    vocals = base64.b64decode(body["vocals_base64"])
    assert len(vocals) == body["vocals_size"]
    (tmp_path / "vocals.mp3").write_bytes(vocals)
    info = audio.probe(tmp_path / "vocals.mp3")
    assert info.format == "mp3" and abs(info.duration - 2.0) < 0.2


@needs_curl
def test_seed_curl_async_example(server: Server, web: LocalHTTP, mp3_bytes: bytes) -> None:
    """The seed README's async command (its example.com URLs point at local servers)."""
    web.routes["/audio.mp3"] = (200, {"Content-Type": "audio/mpeg"}, mp3_bytes)
    web.routes["/webhook"] = (200, {}, b"ok")
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            f"{server.url}/separate-async",
            "-F",
            "job_id=job_123",
            "-F",
            f"audio_url={web.url}/audio.mp3",
            "-F",
            f"webhook_url={web.url}/webhook",
            "-F",
            "model=center",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    accepted = json.loads(out.stdout)
    assert accepted["success"] is True and accepted["job_id"] == "job_123"
    assert accepted["status"] == "queued" and accepted["queue_position"] >= 1

    [message] = web.wait_for("/webhook")
    event = verified(message)
    assert event["job_id"] == "job_123" and event["status"] == "completed"
    assert event["format"] == "mp3" and event["model"] == "center"
    assert set(event["stems"]) == {"vocals", "instrumental"}
    stem = httpx.get(event["vocals_url"])
    assert stem.status_code == 200 and stem.headers["content-type"] == "audio/mpeg"
    assert len(stem.content) == event["vocals_size"] == event["stems"]["vocals"]["size"]

    job = server.wait_job("job_123", predicate=lambda j: j["webhook"]["status"] == "delivered")
    assert job["webhook"]["event_id"] == message.headers["webhook-id"]
    assert job["webhook"]["attempts"] == 1 and job["webhook"]["last_status"] == 200


# -- round trips -----------------------------------------------------------------------------


def test_sync_json_round_trip_is_lossless_with_wav(server: Server) -> None:
    wav = noise_wav(2.0, seed=3, **VOICED)
    r = httpx.post(
        f"{server.url}/separate-sync",
        json={"audio_base64": base64.b64encode(wav).decode(), "output_format": "wav"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    mix, sr = read_wav(wav)
    vocals, vsr = read_wav(base64.b64decode(body["vocals_base64"]))
    rest, _ = read_wav(base64.b64decode(body["instrumental_base64"]))
    assert vsr == sr and vocals.shape == mix.shape
    # center: instrumental = mix - vocals, so the stems add back up to the input.
    assert np.abs(vocals + rest - mix).max() < 2e-3
    # A sync job is answered inline and not kept.
    assert httpx.get(f"{server.url}/jobs/{body['job_id']}").status_code == 404


def test_sync_multipart_upload(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/separate-sync",
        files={"file": ("song.wav", noise_wav(1.0, **VOICED), "audio/wav")},
        data={"output_format": "flac", "model": "center"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["format"] == "flac" and body["mime_type"] == "audio/flac"
    assert base64.b64decode(body["instrumental_base64"])[:4] == b"fLaC"


def test_async_job_id_is_idempotent(server: Server, web: LocalHTTP) -> None:
    web.routes["/idem.wav"] = (200, {}, noise_wav(1.0, **VOICED))
    form = {
        "job_id": "idem-1",
        "audio_url": f"{web.url}/idem.wav",
        "model": "center",
        "output_format": "wav",
    }
    first = httpx.post(f"{server.url}/separate-async", data=form)
    again = httpx.post(f"{server.url}/separate-async", data=form)
    assert first.status_code == 202 and first.json()["created"] is True
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["job_id"] == "idem-1"
    server.wait_job("idem-1")
    assert len(web.hits("/idem.wav")) == 1  # one job, fetched once
    clash = httpx.post(f"{server.url}/separate-async", data={**form, "output_format": "flac"})
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "conflict"


def test_garbage_audio_fails_clearly_and_the_webhook_says_so(
    server: Server, web: LocalHTTP
) -> None:
    web.routes["/garbage.mp3"] = (200, {}, b"this is not audio at all" * 100)
    web.routes["/hook-garbage"] = (204, {}, b"")
    r = httpx.post(
        f"{server.url}/separate-async",
        data={
            "job_id": "garbage-1",
            "audio_url": f"{web.url}/garbage.mp3",
            "webhook_url": f"{web.url}/hook-garbage",
        },
    )
    assert r.status_code == 202
    [message] = web.wait_for("/hook-garbage")
    event = verified(message)
    assert event["status"] == "failed" and event["error_code"] == "bad_audio"
    assert event["error"].startswith("audio_url: not a decodable audio file")
    assert str(server.data_dir) not in message.body.decode()  # no server paths
    job = server.wait_job("garbage-1", ("failed",))
    assert job["error"]["code"] == "bad_audio" and job["error"]["message"] == event["error"]
    assert "Traceback" not in json.dumps(job)
    # The same input uploaded synchronously: well-formed but undecodable, a 400 with the
    # same kind of message.
    r = httpx.post(
        f"{server.url}/separate-sync",
        json={"audio_base64": base64.b64encode(b"garbage" * 500).decode()},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_audio"
    assert r.json()["error"]["message"].startswith("audio: not a decodable audio file")


def test_webhook_retried_with_backoff_same_event_fresh_signature(
    server: Server, web: LocalHTTP
) -> None:
    web.routes["/retry.wav"] = (200, {}, noise_wav(1.0, **VOICED))
    web.routes["/hook-retry"] = [(500, {}, b"down"), (503, {}, b"down"), (200, {}, b"ok")]
    httpx.post(
        f"{server.url}/separate-async",
        data={
            "job_id": "retry-1",
            "audio_url": f"{web.url}/retry.wav",
            "webhook_url": f"{web.url}/hook-retry",
        },
    )
    messages = web.wait_for("/hook-retry", count=3)
    assert len({m.headers["webhook-id"] for m in messages}) == 1
    assert len({m.body for m in messages}) == 1
    for message in messages:
        assert verified(message)["status"] == "completed"
    job = server.wait_job("retry-1", predicate=lambda j: j["webhook"]["status"] == "delivered")
    assert job["webhook"]["attempts"] == 3 and job["webhook"]["last_status"] == 200


def test_files_and_delete(server: Server, web: LocalHTTP) -> None:
    web.routes["/del.wav"] = (200, {}, noise_wav(1.0, **VOICED))
    httpx.post(
        f"{server.url}/separate-async",
        data={"job_id": "del-1", "audio_url": f"{web.url}/del.wav", "output_format": "wav"},
    )
    job = server.wait_job("del-1")
    assert job["status"] == "completed"
    url = job["result"]["stems"]["vocals"]["url"]
    got = httpx.get(url)
    assert got.status_code == 200 and len(got.content) == job["result"]["stems"]["vocals"]["size"]
    assert httpx.get(f"{server.url}/jobs/del-1/files/drums").status_code == 404
    assert httpx.get(f"{server.url}/jobs/del-1/files/..%2Fjobs.sqlite3").status_code == 404
    r = httpx.delete(f"{server.url}/jobs/del-1")
    assert r.status_code == 200 and r.json()["was"] == "completed"
    assert httpx.get(f"{server.url}/jobs/del-1").status_code == 404
    assert httpx.get(url).status_code == 404
    assert httpx.delete(f"{server.url}/jobs/del-1").status_code == 404


# -- hostile input ---------------------------------------------------------------------------


def test_oversize_bodies_are_refused(server: Server) -> None:
    big = b"A" * (6 * 1024 * 1024)  # over 3 MiB * 4/3 + 1 MiB
    r = httpx.post(
        f"{server.url}/separate-sync", content=big, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(100):
            yield b"A" * 65536

    r = httpx.post(
        f"{server.url}/separate-sync",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = httpx.post(f"{server.url}/separate-sync", files={"file": ("big.wav", big, "audio/wav")})
    assert r.status_code == 413
    # Within the body cap but decoding past the audio cap.
    r = httpx.post(
        f"{server.url}/separate-sync",
        json={"audio_base64": base64.b64encode(b"\0" * (3 * 1024 * 1024 + 10)).decode()},
    )
    assert r.status_code == 413
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_overlong_audio_is_refused_before_decoding(server: Server) -> None:
    # 30 s of 8 kHz mono: small in bytes, over the 20 s duration cap.
    long_wav = noise_wav(30.0, rate=8000, channels=1, **VOICED)
    r = httpx.post(
        f"{server.url}/separate-sync", json={"audio_base64": base64.b64encode(long_wav).decode()}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "audio_too_long"
    assert "30 s" in r.json()["error"]["message"]


def test_oversize_download_fails_the_job(server: Server, web: LocalHTTP) -> None:
    web.routes["/huge.wav"] = (200, {}, b"\0" * (4 * 1024 * 1024))
    httpx.post(
        f"{server.url}/separate-async",
        data={"job_id": "huge-1", "audio_url": f"{web.url}/huge.wav"},
    )
    job = server.wait_job("huge-1")
    assert job["status"] == "failed" and job["error"]["code"] == "fetch_failed"
    assert "limit" in job["error"]["message"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        (
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            422,
            "bad_request",
        ),
        ({"json": {"audio_base64": "!!!not base64!!!"}}, 400, "bad_request"),
        ({"json": {"audio_base64": "AAAA", "output_format": "exe"}}, 422, "bad_request"),
        ({"json": {"audio_base64": "AAAA", "model": "../../etc/passwd"}}, 422, "bad_request"),
        (
            {"content": b"x", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_bad_requests_get_json_errors(server: Server, kwargs: dict, status: int, code: str) -> None:
    r = httpx.post(f"{server.url}/separate-sync", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and "Traceback" not in r.text


def test_unknown_routes_and_methods(server: Server) -> None:
    r = httpx.get(f"{server.url}/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.put(f"{server.url}/health")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_twenty_simultaneous_sync_requests(server: Server) -> None:
    payload = {
        "audio_base64": base64.b64encode(noise_wav(0.5, **VOICED)).decode(),
        "output_format": "wav",
    }
    results: list[httpx.Response | Exception] = []

    def call() -> None:
        try:
            results.append(httpx.post(f"{server.url}/separate-sync", json=payload, timeout=180))
        except Exception as exc:  # recorded: the assertion below names it
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results]
    assert len(statuses) == 20 and set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 1
    for r in results:
        if isinstance(r, httpx.Response) and r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "queue_full"
    assert server.alive() and httpx.get(f"{server.url}/health").json()["queue_depth"] == 0


def test_metrics(server: Server) -> None:
    text = httpx.get(f"{server.url}/metrics").text
    assert 'dsu_http_requests_total{method="POST",route="/separate-sync",status="200"}' in text
    assert 'dsu_jobs_total{kind="async",status="completed"}' in text
    assert "dsu_queue_depth" in text and 'dsu_webhook_deliveries_total{outcome="delivered"}' in text
    assert 'dsu_rejected_total{code="bad_audio"}' in text
    assert '"/jobs/del-1"' not in text  # labels are route templates, not raw paths


# -- API keys and retention: a second server -------------------------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(
        tmp_path_factory.mktemp("locked"),
        {
            "DSU_API_KEYS": "key-one,key-two",
            "DSU_ALLOW_PRIVATE_URLS": "1",
            "DSU_RETENTION_HOURS": "0.0005",
            "DSU_BODY_TIMEOUT": "1",
        },
    ).start()
    yield s
    s.stop()


def test_api_keys(locked: Server) -> None:
    assert httpx.get(f"{locked.url}/health").status_code == 200
    r = httpx.get(f"{locked.url}/models")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthorized"
    bad = {"Authorization": "Bearer key-three"}
    assert httpx.get(f"{locked.url}/models", headers=bad).status_code == 401
    good = {"Authorization": "Bearer key-two"}
    assert httpx.get(f"{locked.url}/models", headers=good).status_code == 200
    r = httpx.post(f"{locked.url}/separate-sync", json={"audio_base64": "AAAA"})
    assert r.status_code == 401


def test_the_api_description_stays_open_and_says_what_needs_a_key(locked: Server) -> None:
    """Documented choice: /openapi.json and /docs need no key (the browser page cannot
    send one when it loads the schema); the schema marks every operation that does."""
    schema = httpx.get(f"{locked.url}/openapi.json")
    assert schema.status_code == 200
    assert httpx.get(f"{locked.url}/docs").status_code == 200
    doc = schema.json()
    assert "/docs` stay open" in doc["info"]["description"]
    paths = doc["paths"]
    for path, method in (("/separate-sync", "post"), ("/jobs/{job_id}", "get"), ("/models", "get")):
        assert paths[path][method]["security"] == [{"HTTPBearer": []}], path
    assert "security" not in paths["/health"]["get"]


def test_retention_removes_finished_jobs(locked: Server, web: LocalHTTP) -> None:
    headers = {"Authorization": "Bearer key-one"}
    web.routes["/ret.wav"] = (200, {}, noise_wav(0.5, **VOICED))
    r = httpx.post(
        f"{locked.url}/separate-async",
        headers=headers,
        data={"job_id": "ret-1", "audio_url": f"{web.url}/ret.wav"},
    )
    assert r.status_code == 202
    locked.wait_job("ret-1", headers=headers)
    key_dirs = list((locked.data_dir / "data" / "jobs").iterdir())
    assert key_dirs, "the completed job's files are on disk"
    deadline = time.monotonic() + 20
    while httpx.get(f"{locked.url}/jobs/ret-1", headers=headers).status_code == 200:
        assert time.monotonic() < deadline, "retention never removed the job"
        time.sleep(0.2)
    assert not any(d.exists() for d in key_dirs)


def test_a_body_sent_too_slowly_is_cut_off(locked: Server) -> None:
    with socket.create_connection(("127.0.0.1", locked.port), timeout=10) as conn:
        conn.sendall(
            b"POST /separate-sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-one\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"audio_'
        )
        answer = b""  # nothing more is sent: the server gives up and answers
        while b"request_timeout" not in answer and (chunk := conn.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    assert httpx.get(f"{locked.url}/health").status_code == 200
