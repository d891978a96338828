"""dsu.metrics: plain SDR and SI-SDR by definition, BSSEval v4 against museval itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf

from dsu.metrics import bss_eval, museval_scores, sdr, si_sdr

STEMS = ("drums", "bass", "other", "vocals")


def _museval_metrics() -> ModuleType:
    """``museval.metrics``, loaded from its file.

    ``import museval`` imports musdb and stempeg, which refuse to import without an
    ``ffmpeg`` binary on PATH; the metrics module itself needs only numpy and scipy.
    ``museval.evaluate(refs, ests, win, hop)`` is ``metrics.bss_eval`` with exactly the
    arguments used below (after padding estimates to the references' length).
    """
    spec = importlib.util.find_spec("museval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("museval (test extra) is not installed")
    path = Path(spec.submodule_search_locations[0]) / "metrics.py"
    loader_spec = importlib.util.spec_from_file_location("museval_metrics_only", path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return module


def museval_v4(refs: np.ndarray, ests: np.ndarray, window: int, hop: int) -> list[np.ndarray]:
    """museval.evaluate(mode="v4") on DSU-layout ``[S, C, T]`` arrays: [SDR, ISR, SIR, SAR]."""
    out = _museval_metrics().bss_eval(
        refs.transpose(0, 2, 1),
        ests.transpose(0, 2, 1),
        window=window,
        hop=hop,
        compute_permutation=False,
        filters_len=512,
        framewise_filters=False,
        bsseval_sources_version=False,
    )
    return list(out[:4])


def assert_matches_museval(refs: np.ndarray, ests: np.ndarray, window: int, hop: int) -> None:
    expected = museval_v4(refs, ests, window, hop)
    got = bss_eval(refs, ests, window=window, hop=hop)
    for name, want, have in zip(
        ("SDR", "ISR", "SIR", "SAR"), expected, (got.sdr, got.isr, got.sir, got.sar), strict=True
    ):
        assert have.shape == want.shape, name
        np.testing.assert_array_equal(np.isnan(have), np.isnan(want), err_msg=name)
        finite = ~np.isnan(want)
        assert np.max(np.abs(have[finite] - want[finite])) < 0.01, name


def read(path: Path) -> np.ndarray:
    data, _ = sf.read(path, dtype="float32", always_2d=True)
    return data.T


# ---- plain SDR and SI-SDR -------------------------------------------------------------


def test_sdr_is_energy_ratio_over_all_channels() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 1000))
    est = ref + 0.1 * rng.standard_normal((2, 1000))
    want = 10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2))
    assert sdr(ref, est) == pytest.approx(want, abs=1e-6)
    # a constant 10% amplitude error is exactly 20 dB
    assert sdr(np.ones((2, 100)), 0.9 * np.ones((2, 100))) == pytest.approx(20.0, abs=1e-6)


def test_sdr_per_stem_and_eps_for_silence() -> None:
    ref = np.stack([np.ones((2, 100)), np.zeros((2, 100))])
    est = np.stack([0.9 * np.ones((2, 100)), np.zeros((2, 100))])
    scores = sdr(ref, est)
    assert scores.shape == (2,)
    assert scores[0] == pytest.approx(20.0, abs=1e-6)
    assert scores[1] == pytest.approx(0.0)  # silent stem, silent estimate: eps/eps


def test_si_sdr_ignores_gain_and_matches_definition() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((2, 4000))
    est = 0.8 * ref + 0.2 * rng.standard_normal((2, 4000))
    base = si_sdr(ref, est)
    assert si_sdr(ref, 3.0 * est) == pytest.approx(base, abs=1e-6)
    alpha = np.sum(ref * est) / np.sum(ref**2)
    want = 10 * np.log10(np.sum((alpha * ref) ** 2) / np.sum((alpha * ref - est) ** 2))
    assert base == pytest.approx(want, abs=1e-6)
    # a gain error costs plain SDR but not SI-SDR
    assert si_sdr(ref, 0.5 * ref) > 100
    assert sdr(ref, 0.5 * ref) == pytest.approx(20 * np.log10(2), abs=1e-6)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        sdr(np.zeros((2, 10)), np.zeros((2, 11)))


# ---- BSSEval v4 against museval ------------------------------------------------------


def test_bss_eval_matches_museval_on_random_signals_with_a_silent_window() -> None:
    rng = np.random.default_rng(2)
    refs = rng.standard_normal((3, 2, 5 * 8000))
    ests = refs + 0.5 * rng.standard_normal(refs.shape) + 0.3 * np.roll(refs, 1, axis=0)
    # a filtered estimate (spatial distortion) and a window where one reference is silent
    ests[0] = np.apply_along_axis(np.convolve, 1, ests[0], [0.5, 0.3, 0.1], mode="same")
    refs[1, :, 8000:16000] = 0.0
    assert_matches_museval(refs, ests, window=8000, hop=8000)
    assert np.isnan(bss_eval(refs, ests, window=8000, hop=8000).sdr[:, 1]).all()


def test_bss_eval_matches_museval_with_overlapping_windows_and_mono() -> None:
    rng = np.random.default_rng(3)
    refs = rng.standard_normal((2, 1, 12_345))
    ests = 0.7 * refs + 0.4 * refs[::-1] + 0.2 * rng.standard_normal(refs.shape)
    assert_matches_museval(refs, ests, window=4000, hop=3000)
    mono = bss_eval(refs[:, 0], ests[:, 0], window=4000, hop=3000)
    np.testing.assert_array_equal(mono.sdr, bss_eval(refs, ests, window=4000, hop=3000).sdr)


def test_bss_eval_pads_or_cuts_estimates_like_museval() -> None:
    rng = np.random.default_rng(4)
    refs = rng.standard_normal((2, 2, 6000))
    ests = refs + 0.3 * rng.standard_normal(refs.shape)
    longer = np.concatenate([ests, rng.standard_normal((2, 2, 500))], axis=2)
    shorter = ests[:, :, :5500]
    padded = np.concatenate([shorter, np.zeros((2, 2, 500))], axis=2)
    whole = bss_eval(refs, ests, window=2000, hop=2000)
    np.testing.assert_array_equal(bss_eval(refs, longer, window=2000, hop=2000).sar, whole.sar)
    np.testing.assert_array_equal(
        bss_eval(refs, shorter, window=2000, hop=2000).sdr,
        bss_eval(refs, padded, window=2000, hop=2000).sdr,
    )


def test_bss_eval_entirely_silent_source_is_nan_not_an_error() -> None:
    refs = np.random.default_rng(5).standard_normal((2, 2, 4000))
    refs[1] = 0.0
    scores = bss_eval(refs, refs + 0.1, window=1000, hop=1000)
    assert np.isnan(scores.sdr).all()
    assert np.isnan(scores.medians()["SDR"]).all()


@pytest.mark.shared
def test_real_model_output_reproduces_spec_scores_and_museval(
    shared_dir: Path, mu_dir: Path
) -> None:
    """The original TDC model's vocals for 'Mu - Too Bright' (SPEC §8 reference scores)."""
    stems = {name: read(mu_dir / f"{name}.wav") for name in STEMS}
    mixture = read(mu_dir / "mixture.wav")
    vocals = read(shared_dir / "models" / "tdc-vocals-ismir2020" / "mu_vocals_reference_output.wav")
    refs = np.stack([stems["vocals"], stems["drums"] + stems["bass"] + stems["other"]])
    ests = np.stack([vocals, mixture - vocals])

    plain = sdr(refs, ests)
    assert plain[0] == pytest.approx(11.024, abs=0.01)
    assert plain[1] == pytest.approx(14.672, abs=0.01)
    medians = museval_scores(refs, ests, 44100)
    assert medians["SDR"][0] == pytest.approx(10.948, abs=0.01)
    assert medians["SDR"][1] == pytest.approx(15.102, abs=0.01)
    # vocals scored alone: the same SDR median (SPEC §8), no interference term
    alone = museval_scores(refs[:1], ests[:1], 44100)
    assert alone["SDR"][0] == pytest.approx(medians["SDR"][0], abs=1e-9)
    assert np.isinf(alone["SIR"][0])
    assert_matches_museval(refs, ests, window=44100, hop=44100)


@pytest.mark.shared
def test_bss_eval_matches_museval_on_four_real_stems(mu_dir: Path) -> None:
    """Four real stems (2 s of Mu), estimates with cross-talk, noise and a silent window."""
    refs = np.stack([read(mu_dir / f"{name}.wav")[:, : 2 * 44100] for name in STEMS])
    rng = np.random.default_rng(6)
    ests = 0.7 * refs + 0.1 * refs.sum(axis=0) + 0.01 * rng.standard_normal(refs.shape)
    ests[3, :, 44100:] = 0.0  # a silent estimate: the second window is NaN
    assert_matches_museval(refs, ests.astype(np.float32), window=44100, hop=44100)
