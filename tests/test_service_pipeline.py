"""Ensembles and chains through the HTTP service: a real ``dsu serve`` on 127.0.0.1.

Models: two tiny random-weight UVR MDX-Net graphs (tests/tiny_mdx.py) and the weight-free
``center`` and ``hpss``, as in tests/test_pipeline.py. The reference is each model run on
its own over the whole array in this process, combined by the whole-array ensemble.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf

from dsu.pipeline.ensemble import ensemble
from helpers import CENTRED, noise, sdr
from pipeline_support import CHAIN, RATE, Stems, chain_reference, run_alone, tiny_mdx_entries
from test_service_support import Server, read_wav

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve-pipeline")
    models = root / "models"
    entries = tiny_mdx_entries(models)
    # The preset best-vocals' two models, stood in for by the tiny graphs.
    for name, weights in (
        ("mel-roformer-becruily-vocals", "mdx-a"),
        ("bs-roformer-viperx-1297", "mdx-b"),
    ):
        entries[name] = {**entries[weights]}
    manifest = {"version": 1, "default": "center", "models": entries}
    (models / "models.json").write_text(json.dumps(manifest), encoding="utf-8")
    s = Server(root, {"DSU_MAX_DURATION": "120", "DSU_MAX_LOADED_MODELS": "3"}).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def mix() -> np.ndarray:
    return noise(2.0, seed=3, **CENTRED)


@pytest.fixture(scope="module")
def alone(server: Server, mix: np.ndarray) -> Callable[[str], Stems]:
    """Each model run on its own over the whole mixture, once."""
    return functools.cache(lambda name: run_alone(name, mix, server.data_dir / "models"))


@pytest.fixture(scope="module")
def chain_expected(server: Server, mix: np.ndarray) -> Stems:
    return chain_reference(mix, server.data_dir / "models")


def _wav(x: np.ndarray) -> bytes:
    out = io.BytesIO()
    sf.write(out, x.T, RATE, format="WAV", subtype="FLOAT")
    return out.getvalue()


def test_two_model_ensemble_sync_equals_whole_arrays(
    server: Server, mix: np.ndarray, alone: Callable[[str], Stems]
) -> None:
    r = httpx.post(
        f"{server.url}/separate-sync",
        json={
            "audio_base64": base64.b64encode(_wav(mix)).decode(),
            "models": ["mdx-a", "mdx-b"],
            "ensemble": "avg_fft",
            "weights": [2, 1],
            "output_format": "wav",
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "ensemble" and body["stems"] == ["vocals", "instrumental"]
    a, b = alone("mdx-a"), alone("mdx-b")
    for stem in ("vocals", "instrumental"):
        got, rate = read_wav(base64.b64decode(body[f"{stem}_base64"]))
        assert rate == RATE
        assert sdr(ensemble([a[stem], b[stem]], "avg_fft", [2, 1]), got) > 60, stem


def model_loads(server: Server) -> dict[str, float]:
    """``dsu_model_loads_total`` by model, from the server's /metrics."""
    text = httpx.get(f"{server.url}/metrics").text
    found = re.findall(r'^dsu_model_loads_total\{model="([^"]+)"\} (\S+)$', text, re.M)
    return {name: float(value) for name, value in found}


def test_warm_members_are_not_reloaded(server: Server, mix: np.ndarray) -> None:
    """With DSU_MAX_LOADED_MODELS above the ensemble's size, a second job loads nothing."""
    request = {
        "audio_base64": base64.b64encode(_wav(mix)).decode(),
        "models": ["mdx-a", "mdx-b"],
        "ensemble": "avg_wave",
        "output_format": "wav",
    }
    assert httpx.post(f"{server.url}/separate-sync", json=request, timeout=120).status_code == 200
    before = model_loads(server)
    assert before.get("mdx-a", 0) >= 1 and before.get("mdx-b", 0) >= 1, before
    assert httpx.post(f"{server.url}/separate-sync", json=request, timeout=120).status_code == 200
    assert model_loads(server) == before


def test_three_step_chain_sync_multipart(
    server: Server, mix: np.ndarray, chain_expected: Stems
) -> None:
    r = httpx.post(
        f"{server.url}/separate-sync",
        files={"file": ("song.wav", _wav(mix), "audio/wav")},
        data={"pipeline": json.dumps(CHAIN), "output_format": "wav"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "chain3" and sorted(body["stems"]) == sorted(chain_expected)
    for stem, reference in chain_expected.items():
        got, _ = read_wav(base64.b64decode(body[f"{stem}_base64"]))
        assert sdr(reference, got) > 60, stem


def test_async_chain_writes_only_its_outputs(
    server: Server, mix: np.ndarray, chain_expected: Stems
) -> None:
    r = httpx.post(
        f"{server.url}/separate-async",
        files={"file": ("song.wav", _wav(mix), "audio/wav")},
        data={"job_id": "chain-1", "pipeline": json.dumps(CHAIN), "output_format": "wav"},
    )
    assert r.status_code == 202, r.text
    job = server.wait_job("chain-1")
    assert job["status"] == "completed", job
    assert job["pipeline"] == "chain3" and job["models"] == ["mdx-a", "center", "mdx-b", "hpss"]
    stems = job["result"]["stems"]
    assert sorted(stems) == ["harmonic", "instrumental", "percussive", "vocals"]
    # Only the outputs reach the disk: no intermediate stem of any step (the input goes
    # just after the job completes).
    jobs = server.data_dir / "data" / "jobs"
    written = sorted(p.name for p in jobs.rglob("*") if p.is_file() and p.stem != "input")
    assert written == sorted(f"{stem}.wav" for stem in stems)
    for stem, info in stems.items():
        got, _ = read_wav(httpx.get(info["url"]).content)
        assert sdr(chain_expected[stem], got) > 60, stem
    assert httpx.delete(f"{server.url}/jobs/chain-1").status_code == 200


def test_progress_shows_the_step_and_delete_stops_the_chain(
    server: Server, mix: np.ndarray
) -> None:
    song = np.tile(mix, 45)  # 90 s: minutes of work for the chain, cut short
    r = httpx.post(
        f"{server.url}/separate-async",
        files={"file": ("long.wav", _wav(song), "audio/wav")},
        data={"job_id": "chain-cancel", "pipeline": json.dumps(CHAIN), "output_format": "wav"},
    )
    assert r.status_code == 202, r.text
    running = server.wait_job(
        "chain-cancel", ("running",), predicate=lambda j: (j["progress"] or {}).get("step")
    )
    progress = running["progress"]
    assert progress["stage"] == "separating" and progress["steps"] == 3
    assert progress["step_name"] == ["split", "voice", "hp"][progress["step"] - 1]
    assert 0 <= progress["fraction"] < 1
    started = time.monotonic()
    assert httpx.delete(f"{server.url}/jobs/chain-cancel").json()["was"] == "running"
    assert httpx.get(f"{server.url}/jobs/chain-cancel").status_code == 404
    # The worker stops the whole chain and takes the next job at once.
    r = httpx.post(
        f"{server.url}/separate-sync",
        json={"audio_base64": base64.b64encode(_wav(mix[:, :RATE])).decode(), "model": "center"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 20
    deadline = time.monotonic() + 10
    jobs = server.data_dir / "data" / "jobs"
    while any(jobs.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(jobs.iterdir()), "the cancelled job's files were removed"


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        (
            {"pipeline": json.dumps({**CHAIN, "outputs": ["voice.drums"]})},
            400,
            "field 'outputs' 'drums': step 'voice' has no stem 'drums'",
        ),
        (
            {"pipeline": json.dumps({"steps": [{"name": "a", "model": "center", "gain": 2}]})},
            400,
            "pipeline step 1 ('a'): field 'gain' is unknown",
        ),
        ({"pipeline": "{not json"}, 400, "field 'pipeline' is not valid JSON"),
        ({"pipeline": "no-such-preset"}, 400, "unknown preset 'no-such-preset'; give one of"),
        (
            {"pipeline": "vocals-clean"},
            400,
            "needs models this server does not have: mel-roformer-dereverb-anvuew;",
        ),
        ({"models": "center,hpss"}, 400, "share no stem"),
        ({"models": "center,mdx-z"}, 400, "names unknown models: mdx-z (GET /models"),
        ({"models": "mdx-a,mdx-b", "ensemble": "median_wave", "weights": "1,2"}, 400, "no weights"),
        ({"models": "mdx-a,mdx-b", "weights": "1,x"}, 422, "weights must be numbers, got 'x'"),
        ({"models": "mdx-a", "model": "center"}, 400, "give one of model, models"),
        ({"pipeline": "karaoke", "two_stems": "vocals"}, 400, "two_stems is for one model"),
    ],
)
def test_bad_pipelines_are_refused_before_queueing(
    server: Server, data: dict[str, str], status: int, needle: str
) -> None:
    r = httpx.post(
        f"{server.url}/separate-async",
        files={"file": ("song.wav", _wav(np.zeros((2, RATE), np.float32)), "audio/wav")},
        data=data,
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"], error
    assert "dsu models" not in error["message"] and "Traceback" not in r.text


def test_sync_json_spec_errors_name_step_and_field(server: Server) -> None:
    audio = base64.b64encode(_wav(np.zeros((2, RATE), np.float32))).decode()
    spec = {"steps": [{"name": "x", "model": "center", "input": "later.vocals"}]}
    r = httpx.post(f"{server.url}/separate-sync", json={"audio_base64": audio, "pipeline": spec})
    assert r.status_code == 400, r.text
    assert "pipeline step 1 ('x'): field 'input'" in r.json()["error"]["message"]
    r = httpx.post(
        f"{server.url}/separate-sync",
        json={"audio_base64": audio, "models": ["center"], "ensemble": "loudest"},
    )
    assert r.status_code == 422 and "ensemble" in r.json()["error"]["message"]


def test_models_lists_presets_with_what_they_lack(server: Server) -> None:
    body = httpx.get(f"{server.url}/models").json()
    presets = {p["name"]: p for p in body["presets"]}
    assert {"best-vocals", "karaoke", "vocals-clean", "four-stems"} <= set(presets)
    assert presets["best-vocals"]["installed"] is True
    assert presets["best-vocals"]["stems"] == ["vocals", "instrumental"]
    clean = presets["vocals-clean"]
    assert clean["installed"] is False and clean["missing"] == ["mel-roformer-dereverb-anvuew"]
    assert clean["stems"] == ["vocals", "reverb", "instrumental"]
    assert clean["models"] == ["mel-roformer-becruily-vocals", "mel-roformer-dereverb-anvuew"]


def test_a_preset_by_name_as_the_web_page_sends_it(server: Server, mix: np.ndarray) -> None:
    r = httpx.post(
        f"{server.url}/separate-async",
        files={"file": ("song.wav", _wav(mix[:, :RATE]), "audio/wav")},
        data={"job_id": "preset-1", "pipeline": "best-vocals", "output_format": "wav"},
    )
    assert r.status_code == 202, r.text
    job = server.wait_job("preset-1")
    assert job["status"] == "completed", job
    assert job["model"] == job["pipeline"] == "best-vocals"
    assert job["models"] == ["mel-roformer-becruily-vocals", "bs-roformer-viperx-1297"]
    assert sorted(job["result"]["stems"]) == ["instrumental", "vocals"]
    assert httpx.delete(f"{server.url}/jobs/preset-1").status_code == 200
