"""Outbound URLs only reach public addresses.

A real server with ``DSU_ALLOW_PRIVATE_URLS`` off must refuse every non-public target
before contacting it; the guard itself is exercised with a resolver passed in as a
plain function argument (no network mock: the connections it allows are real).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dsu.service.fetch import AddressPolicy, Fetcher, FetchFailed, UrlNotAllowed, vet_url
from helpers import VOICED, noise_wav
from test_service_support import LocalHTTP, Server

LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.fixture(scope="module")
def web() -> Iterator[LocalHTTP]:
    server = LocalHTTP()
    yield server
    server.close()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("strict"), {"DSU_ALLOW_PRIVATE_URLS": "0"}).start()
    yield s
    s.stop()


def refused_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/a.wav",
        "http://10.0.0.1/a.wav",
        "http://169.254.169.254/latest/meta-data/",
        f"http://[::1]:{port}/a.wav",
        f"http://localhost:{port}/a.wav",  # a host name resolving to loopback
        f"http://[::ffff:127.0.0.1]:{port}/a.wav",  # IPv4-mapped IPv6
        f"http://2130706433:{port}/a.wav",  # 127.0.0.1 as one decimal number
        f"http://0x7f.1:{port}/a.wav",
        "http://0.0.0.0/a.wav",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://192.168.1.1/a.wav",
        "http://100.64.0.1/a.wav",
        "http://224.0.0.1/a.wav",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "ftp://example.com/a.wav",
    ]


def test_every_private_audio_url_is_refused_untouched(strict: Server, web: LocalHTTP) -> None:
    web.routes["/a.wav"] = (200, {}, noise_wav(0.5, **VOICED))
    for url in refused_urls(web.port):
        r = httpx.post(f"{strict.url}/separate-async", data={"audio_url": url})
        assert r.status_code == 400, (url, r.text)
        assert r.json()["error"]["code"] == "url_not_allowed", url
    assert web.hits("/a.wav") == []  # nothing was ever fetched
    assert httpx.get(f"{strict.url}/health").json()["queue_depth"] == 0


def test_private_webhook_url_is_refused(strict: Server) -> None:
    for hook in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "http://localhost/x"):
        r = httpx.post(
            f"{strict.url}/separate-async",
            data={"audio_url": "http://93.184.216.34/a.wav", "webhook_url": hook},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "url_not_allowed", hook
        assert "webhook_url" in r.json()["error"]["message"]


# -- the guard, with an injected resolver ----------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.251",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::1",
        "64:ff9b::a9fe:a9fe",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert AddressPolicy().refusal(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert AddressPolicy().refusal(address) is None


def test_allow_private_still_refuses_metadata() -> None:
    policy = AddressPolicy(allow_private=True)
    assert policy.refusal("127.0.0.1") is None and policy.refusal("10.0.0.1") is None
    assert "metadata" in (policy.refusal("169.254.169.254") or "")
    assert "metadata" in (policy.refusal("fd00:ec2::254") or "")
    assert "metadata" in (policy.refusal("::ffff:169.254.169.254") or "")


def test_a_name_with_any_private_address_is_refused() -> None:
    def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]

    with pytest.raises(UrlNotAllowed):
        vet_url("http://mixed.example/a.wav", AddressPolicy(), resolver)


def test_redirect_to_loopback_is_refused(web: LocalHTTP, tmp_path: Path) -> None:
    """A URL whose host passes (here: allow-listed 127.0.0.1 standing in for a public
    server) redirects to other loopback and private targets: each hop is re-checked."""

    def resolver(host: str, port: int) -> list[str]:
        return {"public.example": ["127.0.0.1"], "localhost": ["::1"]}.get(host, [host])

    fetcher = Fetcher(AddressPolicy(allowlist=LOOPBACK_ONLY), resolver)
    web.routes["/ok.wav"] = (200, {}, b"RIFF-bytes")
    assert fetcher.download(f"http://public.example:{web.port}/ok.wav", tmp_path / "a", 1000, 10)
    for target in (
        f"http://[::1]:{web.port}/ok.wav",
        f"http://localhost:{web.port}/ok.wav",
        f"http://127.0.0.2:{web.port}/ok.wav",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
    ):
        web.routes["/redirect"] = (302, {"Location": target}, b"")
        before = len(web.hits("/redirect"))
        with pytest.raises(UrlNotAllowed):
            fetcher.download(f"http://public.example:{web.port}/redirect", tmp_path / "b", 1000, 10)
        assert len(web.hits("/redirect")) == before + 1  # the first hop was really fetched
        assert not (tmp_path / "b").exists()
    fetcher.close()


def test_the_checked_address_is_the_connected_one(web: LocalHTTP, tmp_path: Path) -> None:
    """DNS rebinding: the name answers a public address to the check, then loopback.
    The connection resolves and vets on its own, so the second answer is refused."""
    answers = [["93.184.216.34"], ["127.0.0.1"]]

    def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    fetcher = Fetcher(AddressPolicy(), rebinding)
    web.routes["/rebind"] = (200, {}, b"secret")
    with pytest.raises(UrlNotAllowed):
        fetcher.download(f"http://rebind.example:{web.port}/rebind", tmp_path / "c", 1000, 10)
    assert web.hits("/rebind") == []
    fetcher.close()


def test_download_caps_size_and_redirect_count(web: LocalHTTP, tmp_path: Path) -> None:
    fetcher = Fetcher(AddressPolicy(allow_private=True), max_redirects=3)
    web.routes["/big"] = (200, {}, b"x" * 5000)
    with pytest.raises(FetchFailed, match="limit"):
        fetcher.download(f"{web.url}/big", tmp_path / "d", 1000, 10)
    web.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    with pytest.raises(FetchFailed, match="redirected more than 3"):
        fetcher.download(f"{web.url}/loop", tmp_path / "e", 1000, 10)
    web.routes["/missing"] = (404, {}, b"")
    with pytest.raises(FetchFailed, match="HTTP 404"):
        fetcher.download(f"{web.url}/missing", tmp_path / "f", 1000, 10)
    fetcher.close()


@pytest.fixture(scope="module")
def allowlisted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Private addresses off, 127.0.0.1 alone allow-listed: the local test server stands in
    for a public one, every other non-public address stays refused."""
    s = Server(
        tmp_path_factory.mktemp("allowlisted"),
        {"DSU_ALLOW_PRIVATE_URLS": "0", "DSU_URL_ALLOWLIST": "127.0.0.1/32"},
    ).start()
    yield s
    s.stop()


def test_server_refuses_a_redirect_to_loopback(allowlisted: Server, web: LocalHTTP) -> None:
    web.routes["/hop"] = (302, {"Location": f"http://[::1]:{web.port}/a.wav"}, b"")
    web.routes["/hook-hop"] = (200, {}, b"")
    r = httpx.post(
        f"{allowlisted.url}/separate-async",
        data={
            "job_id": "hop-1",
            "audio_url": f"{web.url}/hop",
            "webhook_url": f"{web.url}/hook-hop",
        },
    )
    assert r.status_code == 202, r.text
    job = allowlisted.wait_job("hop-1")
    assert job["status"] == "failed" and job["error"]["code"] == "url_not_allowed"
    assert "::1" in job["error"]["message"] and "loopback" in job["error"]["message"]
    assert web.wait_for("/hook-hop")[0].json()["error_code"] == "url_not_allowed"
    # Other loopback addresses are not on the list either.
    r = httpx.post(
        f"{allowlisted.url}/separate-async", data={"audio_url": f"http://127.0.0.2:{web.port}/"}
    )
    assert r.status_code == 400
