"""Submissions are checked up front, by the encoder's own table, with one status rule:
422 for a request that does not match the schema, 400 for a well-formed one this server
cannot process; error texts name neither server paths nor command-line flags. A real
``dsu serve`` on 127.0.0.1."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from dsu.audio.formats import DEFAULT_MP3_BITRATE
from helpers import VOICED, noise_wav
from test_service_support import LocalHTTP, Server

pytestmark = pytest.mark.slow

CD = noise_wav(2.0, **VOICED)  # 44.1 kHz stereo
WIDEBAND = noise_wav(1.0, rate=16000, **VOICED)  # MPEG-2 rates: at most 160 kbit/s


@pytest.fixture(scope="module")
def web() -> Iterator[LocalHTTP]:
    server = LocalHTTP()
    server.routes["/wideband.wav"] = (200, {}, WIDEBAND)
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("validate"), {"DSU_ALLOW_PRIVATE_URLS": "1"}).start()
    yield s
    s.stop()


def sync(server: Server, audio: bytes = CD, **fields: object) -> httpx.Response:
    body = {"audio_base64": base64.b64encode(audio).decode(), **fields}
    return httpx.post(f"{server.url}/separate-sync", json=body, timeout=120)


def error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text
    return r.json()["error"]["message"]


def public(message: str, server: Server) -> None:
    """Nothing a client cannot use: no server path, no flag, no dsu command."""
    assert str(server.data_dir) not in message and "/tmp" not in message, message
    assert " --" not in message and "`dsu" not in message, message


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": {"audio_base64": "AAAA", "output_format": "exe"}},
        {"json": {"audio_base64": "AAAA", "mp3_bitrate": 500}},
        {"json": {"audio_base64": "AAAA", "mp3_bitrate": "fast"}},
        {"json": {"audio_base64": "AAAA", "two_stems": "../x"}},
        {"json": {"model": "center"}},
        {"files": {"other": ("a.wav", b"RIFF", "audio/wav")}},
    ],
)
def test_requests_off_the_schema_are_422(server: Server, request_kwargs: dict) -> None:
    r = httpx.post(f"{server.url}/separate-sync", **request_kwargs)
    error(r, 422, "bad_request")


def test_async_requests_off_the_schema_are_422(server: Server) -> None:
    url = f"{server.url}/separate-async"
    error(httpx.post(url, data={"model": "center"}), 422, "bad_request")  # no audio_url
    for field, value in (("mp3_bitrate", "999"), ("output_format", "exe"), ("job_id", "../x")):
        r = httpx.post(url, data={"audio_url": "http://127.0.0.1/a.wav", field: value})
        error(r, 422, "bad_request")


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"audio_base64": "!!!not base64!!!"}, "bad_request", "not valid base64"),
        ({"audio_base64": base64.b64encode(b"junk" * 400).decode()}, "bad_audio", "decodable"),
        ({"model": "nosuch"}, "model_not_found", "GET /models"),
        ({"two_stems": "drums"}, "bad_request", "its stems are vocals, instrumental"),
        ({"mp3_bitrate": 100}, "bad_request", "mp3_bitrate: "),
        ({"output_format": "wav", "mp3_bitrate": 100}, None, None),  # wav: no bitrate
    ],
)
def test_well_formed_requests_the_server_cannot_process_are_400(
    server: Server, fields: dict, code: str | None, words: str | None
) -> None:
    r = httpx.post(
        f"{server.url}/separate-sync",
        json={"audio_base64": base64.b64encode(CD).decode(), **fields},
        timeout=120,
    )
    if code is None:
        assert r.status_code == 200, r.text
        return
    message = error(r, 400, code)
    assert words in message
    public(message, server)


def test_an_empty_upload_is_400(server: Server) -> None:
    r = httpx.post(f"{server.url}/separate-sync", files={"file": ("a.wav", b"", "audio/wav")})
    error(r, 400, "bad_request")


def test_async_submissions_are_checked_before_queueing(server: Server, web: LocalHTTP) -> None:
    url = f"{server.url}/separate-async"
    audio = f"{web.url}/wideband.wav"
    for job_id, fields, code, words in (
        ("v-stem", {"two_stems": "drums"}, "bad_request", "its stems are"),
        ("v-rate", {"mp3_bitrate": "100"}, "bad_request", "mp3_bitrate: "),
        ("v-model", {"model": "mdx_q"}, "model_not_found", "not available on this server"),
    ):
        r = httpx.post(url, data={"job_id": job_id, "audio_url": audio, **fields})
        message = error(r, 400, code)
        assert words in message
        public(message, server)
        assert httpx.get(f"{server.url}/jobs/{job_id}").status_code == 404  # never queued
    assert web.hits("/wideband.wav") == []


def test_the_bitrate_is_checked_against_the_audio_rate(server: Server, web: LocalHTTP) -> None:
    # Uploaded: refused at submission.
    message = error(sync(server, WIDEBAND, mp3_bitrate=320), 400, "bad_request")
    assert "16000 Hz" in message and "160" in message
    # Fetched: the job fails as soon as the audio is in, with the same words.
    r = httpx.post(
        f"{server.url}/separate-async",
        data={"job_id": "v-wide", "audio_url": f"{web.url}/wideband.wav", "mp3_bitrate": "320"},
    )
    assert r.status_code == 202, r.text
    job = server.wait_job("v-wide")
    assert job["status"] == "failed" and job["error"]["code"] == "bad_request"
    assert "16000 Hz" in job["error"]["message"] and job["attempts"] == 1
    public(job["error"]["message"], server)
    # No bitrate: the encoder's default for the rate, whatever the rate.
    assert sync(server, WIDEBAND).status_code == 200


def test_the_default_mp3_bitrate_is_the_shared_one(server: Server) -> None:
    r = sync(server, CD)
    assert r.status_code == 200, r.text
    size = r.json()["vocals_size"]
    # Constant bitrate: 2 s at DEFAULT_MP3_BITRATE kbit/s, give or take the frame padding.
    expected = 2.0 * DEFAULT_MP3_BITRATE * 1000 / 8
    assert 0.9 * expected < size < 1.15 * expected, (size, expected)


def test_errors_give_no_command_line_advice(server: Server) -> None:
    six = noise_wav(0.5, channels=6, **VOICED)
    message = error(sync(server, six), 400, "bad_audio")
    assert "6 channels" in message and "mix it down to stereo before sending it" in message
    public(message, server)


def test_two_stems_that_exist_pass(server: Server) -> None:
    r = sync(server, noise_wav(0.5, **VOICED), two_stems="vocals", output_format="wav")
    assert r.status_code == 200, r.text
    assert r.json()["stems"] == ["vocals", "no_vocals"]
