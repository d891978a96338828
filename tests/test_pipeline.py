"""Ensembles and chains through the streaming engine, and on the CLI and the worker.

Models: the weight-free ``center`` and ``hpss`` and two tiny random-weight UVR MDX-Net
graphs (tests/tiny_mdx.py). The reference is each model run on its own over whole
arrays, then combined with the whole-array ensemble.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsu.api import Separator
from dsu.errors import BadRequest, ModelNotFound
from dsu.pipeline.ensemble import ensemble
from dsu.pipeline.spec import SpecError
from helpers import CENTRED, noise, sdr
from pipeline_support import CHAIN, RATE, chain_reference, run_alone, tiny_mdx_entries

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    manifest = {"version": 1, "default": "mdx-a", "models": tiny_mdx_entries(root)}
    (root / "models.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def mix() -> np.ndarray:
    return noise(4.0, seed=3, **CENTRED)


def test_two_model_ensemble_streams_like_whole_arrays(models_dir: Path, mix: np.ndarray) -> None:
    separator = Separator(
        models=["mdx-a", "center"], ensemble="avg_fft", weights=[2, 1], models_dir=models_dir
    )
    assert separator.stems == ["vocals", "instrumental"]
    reports: list[tuple[str, float]] = []
    result = separator.separate(mix, RATE, progress=lambda s, f: reports.append((s, f)))
    a, b = run_alone("mdx-a", mix, models_dir), run_alone("center", mix, models_dir)
    for stem in ("vocals", "instrumental"):
        expected = ensemble([a[stem], b[stem]], "avg_fft", [2, 1])
        assert sdr(expected, result.stems[stem]) > 60
    assert reports[-1] == ("separating", 1.0)


def test_three_step_chain_streams_like_whole_arrays(
    models_dir: Path, mix: np.ndarray, tmp_path: Path
) -> None:
    steps: set[str] = set()
    separator = Separator(pipeline=CHAIN, models_dir=models_dir)
    result = separator.separate(
        mix,
        RATE,
        output_dir=tmp_path,
        format="wav",
        bit_depth=32,
        step_progress=lambda step, _f: steps.add(step),
    )
    assert steps == {"split", "voice", "hp"}
    expected = chain_reference(mix, models_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}.wav" for s in expected)
    for stem, reference in expected.items():
        written, rate = sf.read(result.files[stem], dtype="float32", always_2d=True)
        assert rate == RATE
        assert sdr(reference, written.T) > 60, stem


def test_bad_pipelines_say_what_is_wrong(models_dir: Path) -> None:
    with pytest.raises(BadRequest, match="share no stem"):
        Separator(models=["center", "hpss"], models_dir=models_dir)
    bad = {**CHAIN, "steps": [*CHAIN["steps"][:2], {**CHAIN["steps"][2], "input": "voice.drums"}]}
    with pytest.raises(SpecError, match=r"step 3 \('hp'\): field 'input'.*no stem 'drums'"):
        Separator(pipeline=bad, models_dir=models_dir)
    with pytest.raises(ModelNotFound, match="dsu models pull mel-roformer-becruily-vocals bs-"):
        Separator(pipeline="best-vocals", models_dir=models_dir)


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "dsu", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
        **kwargs,  # type: ignore[arg-type]
    )


def test_cli_ensemble_and_then(models_dir: Path, mix: np.ndarray, tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, mix.T, RATE, subtype="FLOAT")
    done = _run(
        [
            "separate",
            str(song),
            "-m",
            "mdx-a",
            "-m",
            "center",
            "--ensemble",
            "avg_wave",
            "--weights",
            "1,3",
            "--then",
            "hpss:vocals",
            "--models-dir",
            str(models_dir),
            "-o",
            str(tmp_path / "out"),
            "--bit-depth",
            "32",
            "-q",
        ]
    )
    assert done.returncode == 0, done.stderr
    a, b = run_alone("mdx-a", mix, models_dir), run_alone("center", mix, models_dir)
    vocals = ensemble([a["vocals"], b["vocals"]], "avg_wave", [1, 3])
    expected = run_alone("hpss", vocals, models_dir)["harmonic"]
    written, _ = sf.read(tmp_path / "out" / "song" / "harmonic.wav", dtype="float32")
    assert sdr(expected, written.T) > 60
    refused = _run(["separate", str(song), "-m", "center", "--weights", "1", "-q"])
    assert refused.returncode == 2 and "give two -m or more" in refused.stderr


def test_cli_pipeline_file_streams_like_whole_arrays(
    models_dir: Path, mix: np.ndarray, tmp_path: Path
) -> None:
    song, spec = tmp_path / "song.wav", tmp_path / "chain.json"
    sf.write(song, mix.T, RATE, subtype="FLOAT")
    spec.write_text(json.dumps(CHAIN), encoding="utf-8")
    out = tmp_path / "out"
    args = ["--pipeline", str(spec), "--models-dir", str(models_dir), "-o", str(out)]
    done = _run(["separate", str(song), *args, "--bit-depth", "32", "-q"])
    assert done.returncode == 0, done.stderr
    for stem, reference in chain_reference(mix, models_dir).items():
        written, _ = sf.read(out / "song" / f"{stem}.wav", dtype="float32", always_2d=True)
        assert sdr(reference, written.T) > 60, stem


def test_worker_pipeline_with_steps_and_cancel(
    models_dir: Path, mix: np.ndarray, tmp_path: Path
) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, np.tile(mix, 3).T, RATE, subtype="FLOAT")
    requests = [
        {
            "cmd": "separate",
            "id": 1,
            "input": str(song),
            "output": str(tmp_path / "a"),
            "pipeline": CHAIN,
            "bit_depth": 32,
        },
        {
            "cmd": "separate",
            "id": 2,
            "input": str(song),
            "output": str(tmp_path / "b"),
            "models": ["mdx-a", "mdx-b"],
            "ensemble": "median_wave",
            "weights": [1, 2],
        },
        {
            "cmd": "separate",
            "id": 3,
            "input": str(song),
            "output": str(tmp_path / "c"),
            "pipeline": CHAIN,
        },
        {"cmd": "cancel", "target": 3},
        {"cmd": "exit"},
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "dsu", "worker", "--models-dir", str(models_dir), "--device", "cpu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert worker.stdin is not None and worker.stdout is not None
    assert json.loads(worker.stdout.readline())["status"] == "ready"
    replies: dict[int, list[dict]] = {}

    def send(message: dict) -> None:
        worker.stdin.write(json.dumps(message) + "\n")
        worker.stdin.flush()

    def read_until(request: int, statuses: set[str]) -> None:
        while True:
            reply = json.loads(worker.stdout.readline())
            replies.setdefault(reply.get("id", 0), []).append(reply)
            if reply.get("id") == request and reply["status"] in statuses:
                return

    terminal = {"done", "error", "cancelled"}
    send(requests[0])
    read_until(1, terminal)
    send(requests[1])
    read_until(2, terminal)
    send(requests[2])
    read_until(3, {"progress", *terminal})
    send(requests[3])
    read_until(3, terminal)
    send(requests[4])
    worker.wait(timeout=60)
    first = replies[1]
    assert first[-1]["status"] == "done", first[-1]
    assert first[-1]["pipeline"] == "chain3"
    assert set(first[-1]["stems"]) == {"instrumental", "vocals", "harmonic", "percussive"}
    assert {r.get("step") for r in first if r.get("stage") == "separating"} & {"split", "hp"}
    for stem, reference in chain_reference(np.tile(mix, 3), models_dir).items():
        written, _ = sf.read(tmp_path / "a" / f"{stem}.wav", dtype="float32", always_2d=True)
        assert sdr(reference, written.T) > 60, stem
    assert replies[2][-1]["status"] == "error"
    assert "median_wave has no weights" in replies[2][-1]["message"]
    assert replies[3][-1]["status"] in ("cancelled", "error"), replies[3][-1]
    assert replies[3][-1].get("code", "cancelled") == "cancelled"
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())
