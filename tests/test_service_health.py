"""``/health`` tells the truth: 503 and the reason when the default model cannot be loaded,
so a load balancer takes the instance out; ``DSU_PRECISION`` reaches the separator. Real
``dsu serve`` subprocesses on 127.0.0.1."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
import torch

from helpers import VOICED, noise_wav
from test_service_support import Server

pytestmark = pytest.mark.slow

SEED_FIELDS = ("status", "model", "hardware", "torch_version", "cuda_available", "device")


def settled(response: httpx.Response) -> bool:
    """``/health`` has a verdict: the default model loaded, or failed to."""
    return response.json().get("status") not in (None, "starting")


def unhealthy(tmp_path: Path, **env: str) -> dict:
    """Start a server with ``env``; return its ``/health`` body after checking the 503."""
    server = Server(tmp_path, env).start(ready=settled)
    try:
        r = httpx.get(f"{server.url}/health")
        body = r.json()
        assert r.status_code == 503, body
        assert body["status"] == "unhealthy" and not body["model_loaded"], body
        assert all(key in body for key in SEED_FIELDS)
        assert str(tmp_path) not in body["model_error"]  # no server paths
        # The instance is out of rotation, not dead: it still answers.
        assert httpx.get(f"{server.url}/").status_code == 200
    finally:
        server.stop()
    return body


def test_an_unknown_default_model_is_unhealthy(tmp_path: Path) -> None:
    body = unhealthy(tmp_path, DEMUCS_MODEL="nosuch")
    assert "'nosuch'" in body["model_error"] and "not available" in body["model_error"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_missing_gpu_is_unhealthy(tmp_path: Path) -> None:
    body = unhealthy(tmp_path, DSU_DEVICE="cuda")
    assert "no CUDA GPU" in body["model_error"] and body["device"] == "cuda"


def test_precision_reaches_the_separator(tmp_path: Path) -> None:
    """fp16 on the CPU: the engine's rule refuses it, at start-up and in every job."""
    server = Server(tmp_path, {"DSU_DEVICE": "cpu", "DSU_PRECISION": "fp16"}).start(ready=settled)
    try:
        health = httpx.get(f"{server.url}/health")
        assert health.status_code == 503 and "fp16" in health.json()["model_error"]
        wav = base64.b64encode(noise_wav(0.5, **VOICED)).decode()
        r = httpx.post(f"{server.url}/separate-sync", json={"audio_base64": wav}, timeout=120)
        assert r.status_code == 400 and "fp16" in r.json()["error"]["message"], r.text
    finally:
        server.stop()
    bf16 = Server(tmp_path / "bf16", {"DSU_DEVICE": "cpu", "DSU_PRECISION": "bf16"}).start()
    try:
        body = httpx.get(f"{bf16.url}/health").json()
        assert body["status"] == "healthy" and body["model_loaded"]
        r = httpx.post(
            f"{bf16.url}/separate-sync",
            json={"audio_base64": wav, "output_format": "wav"},
            timeout=120,
        )
        assert r.status_code == 200, r.text
    finally:
        bf16.stop()
