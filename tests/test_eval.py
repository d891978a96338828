"""dsu.eval and ``dsu eval``: stem mapping, joint BSSEval sets, the real command end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsu.eval import reference_for, score_track
from dsu.metrics import museval_scores, sdr

ROOT = Path(__file__).resolve().parents[1]
STEMS = ("drums", "bass", "other", "vocals")


def dsu(
    *args: str | Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsu", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def read(path: Path) -> np.ndarray:
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    return data.T


# ---- which reference a stem is scored against ---------------------------------------------


def test_reference_for_maps_accompaniment_and_complements() -> None:
    refs = {name: np.full((2, 4), float(i + 1), np.float32) for i, name in enumerate(STEMS)}
    np.testing.assert_array_equal(reference_for("bass", refs), refs["bass"])
    for name in ("accompaniment", "instrumental", "no_vocals"):
        np.testing.assert_array_equal(reference_for(name, refs), np.full((2, 4), 1 + 2 + 3))
    np.testing.assert_array_equal(reference_for("no_drums", refs), np.full((2, 4), 2 + 3 + 4))
    assert reference_for("harmonic", refs) is None
    assert reference_for("no_piano", refs) is None
    assert reference_for("instrumental", {"drums": refs["drums"]}) is None
    # a dataset's own accompaniment file wins over the sum
    own = {**refs, "accompaniment": np.zeros((2, 4), np.float32)}
    np.testing.assert_array_equal(reference_for("accompaniment", own), own["accompaniment"])


def test_score_track_forms_museval_sets() -> None:
    rng = np.random.default_rng(0)
    refs = {name: rng.standard_normal((2, 2 * 8000)).astype(np.float32) for name in STEMS}
    ests = {name: refs[name] + 0.5 * rng.standard_normal((2, 2 * 8000)) for name in STEMS}
    four, skipped = score_track(ests, refs, 8000, "museval")
    assert skipped == []
    joint = museval_scores(np.stack(list(refs.values())), np.stack(list(ests.values())), 8000)
    for i, name in enumerate(STEMS):
        assert four[name]["museval"]["SIR"] == pytest.approx(joint["SIR"][i], abs=1e-3)

    # vocals + accompaniment are a pair of their own; the other stems go together
    accompaniment = refs["drums"] + refs["bass"] + refs["other"]
    mixed = {"vocals": ests["vocals"], "accompaniment": accompaniment + 0.1, "drums": ests["drums"]}
    scores, _ = score_track(mixed, refs, 8000, "all")
    pair = museval_scores(
        np.stack([refs["vocals"], accompaniment]),
        np.stack([ests["vocals"], accompaniment + 0.1]),
        8000,
    )
    rest = museval_scores(
        np.stack([refs["vocals"], refs["drums"]]), np.stack([ests["vocals"], ests["drums"]]), 8000
    )
    assert scores["vocals"]["museval"]["SIR"] == pytest.approx(pair["SIR"][0], abs=1e-3)
    assert scores["accompaniment"]["museval"]["SAR"] == pytest.approx(pair["SAR"][1], abs=1e-3)
    assert scores["drums"]["museval"]["SIR"] == pytest.approx(rest["SIR"][1], abs=1e-3)
    assert scores["drums"]["sdr"] == pytest.approx(sdr(refs["drums"], ests["drums"]), abs=1e-4)

    # a silent estimate gets no BSSEval score and does not spoil the others
    silent = {**ests, "bass": np.zeros_like(ests["bass"])}
    scores, _ = score_track(silent, refs, 8000, "museval", stems=["bass", "drums"])
    assert set(scores) == {"bass", "drums"}
    assert scores["bass"]["museval"] is None
    assert scores["drums"]["museval"]["SDR"] is not None


@pytest.mark.shared
def test_score_track_reproduces_the_spec_scores(shared_dir: Path, mu_dir: Path) -> None:
    """The original TDC output, mapped the way a vocals + accompaniment model is scored."""
    mixture = read(mu_dir / "mixture.wav")
    vocals = read(shared_dir / "models" / "tdc-vocals-ismir2020" / "mu_vocals_reference_output.wav")
    refs = {name: read(mu_dir / f"{name}.wav") for name in STEMS}
    estimates = {"vocals": vocals, "accompaniment": mixture - vocals}
    scores, skipped = score_track(estimates, refs, 44100, "all")
    assert skipped == []
    assert scores["vocals"]["sdr"] == pytest.approx(11.024, abs=0.01)
    assert scores["accompaniment"]["sdr"] == pytest.approx(14.672, abs=0.01)
    assert scores["vocals"]["museval"]["SDR"] == pytest.approx(10.948, abs=0.01)
    assert scores["accompaniment"]["museval"]["SDR"] == pytest.approx(15.102, abs=0.01)


# ---- the command ----------------------------------------------------------------------


@pytest.mark.shared
def test_dsu_eval_center_end_to_end_then_rescore_saved_estimates(
    shared_dir: Path, tmp_path: Path
) -> None:
    report = tmp_path / "center.json"
    saved = tmp_path / "estimates"
    run = dsu(
        "eval", "-m", "center", "--dataset", shared_dir / "audio", "--metric", "all",
        "--json", report, "--save-estimates", saved,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    keys = [
        "musdb18-mu-too-bright",
        "stems/Music Delta - 80s Rock",
        "stems/The Easton Ellises - Falcon 69",
    ]
    for key in keys:
        assert key in run.stderr
    assert "museval SDR (dB, median of 1 s windows)" in run.stderr
    doc = json.loads(report.read_text())
    center = doc["models"]["center"]
    assert center["stems"] == ["vocals", "instrumental"]
    assert list(center["tracks"]) == keys
    for key in keys:
        scores = center["tracks"][key]["stems"]
        assert set(scores) == {"vocals", "instrumental"}
        # center-channel extraction is a poor separator, but its instrumental (the sides)
        # resembles the true accompaniment far better than its vocals resemble the voice
        assert scores["instrumental"]["sdr"] > scores["vocals"]["sdr"]
        assert set(scores["vocals"]["museval"]) == {"SDR", "SIR", "ISR", "SAR"}
    sdrs = [center["tracks"][k]["stems"]["vocals"]["sdr"] for k in keys]
    assert center["median"]["vocals"]["sdr"] == pytest.approx(np.median(sdrs), abs=1e-3)
    assert center["mean"]["vocals"]["sdr"] == pytest.approx(np.mean(sdrs), abs=1e-3)

    # the saved stems are what was scored: recompute one score from the files
    mu = shared_dir / "audio" / "musdb18-mu-too-bright"
    vocals = read(saved / "center" / keys[0] / "vocals.wav")
    want = center["tracks"][keys[0]]["stems"]["vocals"]["sdr"]
    assert sdr(read(mu / "vocals.wav"), vocals) == pytest.approx(want, abs=1e-3)

    # ... and scoring them as estimates gives the same numbers
    rescored = tmp_path / "rescored.json"
    again = dsu(
        "eval", "--estimates", saved / "center", "--references", shared_dir / "audio",
        "--metric", "all", "--json", rescored,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    second = json.loads(rescored.read_text())["models"]["center"]
    for key in keys:
        assert second["tracks"][key]["stems"] == center["tracks"][key]["stems"]


@pytest.mark.shared
def test_dsu_eval_compares_center_and_the_real_tdc_model(shared_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "compare.json"
    run = dsu(
        "eval", "-m", "tdc-vocals", "-m", "center",
        "--models-dir", shared_dir / "models" / "tdc-vocals-ismir2020",
        "--dataset", shared_dir / "audio", "--metric", "all", "--json", report,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    models = json.loads(report.read_text())["models"]
    tdc = models["tdc-vocals"]["tracks"]
    mu = tdc["musdb18-mu-too-bright"]["stems"]
    # SPEC.md §8, the original implementation's scores
    assert mu["vocals"]["sdr"] == pytest.approx(11.024, abs=0.05)
    assert mu["accompaniment"]["sdr"] == pytest.approx(14.672, abs=0.05)
    assert mu["vocals"]["museval"]["SDR"] == pytest.approx(10.948, abs=0.05)
    assert mu["accompaniment"]["museval"]["SDR"] == pytest.approx(15.102, abs=0.05)
    center = models["center"]["tracks"]
    for key, result in tdc.items():
        # a trained model beats center-channel extraction on every real track
        assert result["stems"]["vocals"]["sdr"] > center[key]["stems"]["vocals"]["sdr"] + 3, key
        line = next(
            line
            for line in run.stderr.splitlines()
            if line.startswith(key) and "tdc-vocals" in line
        )
        assert f"{result['stems']['vocals']['sdr']:.2f}" in line


@pytest.mark.shared
def test_pulled_tdc_vocals_evaluates_by_name_on_the_stem_files(
    shared_dir: Path, tmp_path: Path
) -> None:
    """The README's path: pull from a local mirror into the models dir, then eval by name."""
    env = {"DSU_MODELS_DIR": str(tmp_path / "models")}
    mirror = shared_dir / "models" / "tdc-vocals-ismir2020"
    pulled = dsu("models", "pull", "tdc-vocals", "--mirror", mirror, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert dsu("models", "verify", env=env).returncode == 0
    report = tmp_path / "scores.json"
    run = dsu(
        "eval", "--model", "tdc-vocals", "--dataset", shared_dir / "audio" / "stems",
        "--json", report, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    tracks = json.loads(report.read_text())["models"]["tdc-vocals"]["tracks"]
    assert sorted(tracks) == ["Music Delta - 80s Rock", "The Easton Ellises - Falcon 69"]
    for track, result in tracks.items():
        vocals = result["stems"]["vocals"]["sdr"]
        # a real trained model: positive vocals SDR on real music, printed per track
        assert vocals > 1, (track, vocals)
        line = next(line for line in run.stderr.splitlines() if line.startswith(track))
        assert f"{vocals:.2f}" in line


@pytest.mark.shared
def test_dsu_eval_reports_a_broken_track_and_scores_the_rest(mu_dir: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "data"
    good = dataset / "good"
    good.mkdir(parents=True)
    for name in ("mixture", *STEMS):
        sf.write(good / f"{name}.wav", read(mu_dir / f"{name}.wav")[:, :44100].T, 44100)
    broken = dataset / "broken"
    broken.mkdir()
    (broken / "mixture.wav").write_bytes(b"RIFF-not-really-a-wav")
    sf.write(broken / "vocals.wav", np.zeros((100, 2)), 44100)
    report = tmp_path / "r.json"
    run = dsu(
        "eval", "-m", "center", "-m", "hpss", "--dataset", dataset, "--json", report,
        "--stems", "vocals,harmonic",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    doc = json.loads(report.read_text())["models"]
    assert "error" in doc["center"]["tracks"]["broken"]
    assert "mixture.wav" in doc["center"]["tracks"]["broken"]["error"]
    assert list(doc["center"]["tracks"]["good"]["stems"]) == ["vocals"]
    assert doc["hpss"]["skipped_stems"] == ["harmonic"]
    assert "hpss: no reference for harmonic" in run.stderr


def test_dsu_eval_usage_errors(tmp_path: Path) -> None:
    run = dsu("eval", "--estimates", tmp_path)
    assert run.returncode == 2 and "--references" in run.stderr
    run = dsu("eval", "-m", "center")
    assert run.returncode == 2 and "--dataset" in run.stderr
    run = dsu("eval", "-m", "center", "--dataset", tmp_path)
    assert run.returncode == 2 and "no tracks in" in run.stderr
