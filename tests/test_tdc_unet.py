"""The real trained TDC U-Net vocals model against its SPEC's test vectors and scores.

Ground truth: ``../shared/models/tdc-vocals-ismir2020`` (checkpoint, SPEC.md, the original
implementation's network tensors and full-track output) and the MUSDB18 excerpt
"Mu - Too Bright" with its true stems.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

import dsu
from dsu import metrics
from dsu.archs import tdc_unet
from dsu.engine.options import EngineOptions
from dsu.engine.overlap_add import separate_array
from dsu.errors import BadRequest, UnsupportedModel
from dsu.registry.entry import ModelEntry
from dsu.registry.manifest import read_manifest
from helpers import sdr

pytestmark = pytest.mark.shared

# SPEC.md §8: the original code's scores on the Mu excerpt.
REFERENCE_VOCALS_SDR = 11.024
REFERENCE_ACCOMPANIMENT_SDR = 14.672
REFERENCE_MUSEVAL_VOCALS = 10.948
TOLERANCE_DB = 0.05


def read(path: Path) -> np.ndarray:
    """``[C, T]`` float32, as the original reads 16-bit WAVs."""
    return np.ascontiguousarray(sf.read(path, dtype="float32")[0].T)


@pytest.fixture(scope="module")
def model_dir(shared_dir: Path) -> Path:
    return shared_dir / "models" / "tdc-vocals-ismir2020"


@pytest.fixture(scope="module")
def entry(model_dir: Path) -> ModelEntry:
    return read_manifest(model_dir).entries["tdc-vocals"]


@pytest.fixture(scope="module")
def model(entry: ModelEntry) -> tdc_unet.TDCVocals:
    return tdc_unet.load(entry)


@pytest.fixture(scope="module")
def mixture(mu_dir: Path) -> np.ndarray:
    return read(mu_dir / "mixture.wav")


@pytest.fixture(scope="module")
def truth(mu_dir: Path) -> dict[str, np.ndarray]:
    stems = {name: read(mu_dir / f"{name}.wav") for name in ("vocals", "drums", "bass", "other")}
    return {
        "vocals": stems["vocals"],
        "accompaniment": stems["drums"] + stems["bass"] + stems["other"],
    }


@pytest.fixture(scope="module")
def reference_vocals(model_dir: Path) -> np.ndarray:
    return read(model_dir / "mu_vocals_reference_output.wav")


@pytest.fixture(scope="module")
def direct(model: tdc_unet.TDCVocals, mixture: np.ndarray) -> np.ndarray:
    """``[2, 2, T]`` stems by one forward over the whole track: the original framing
    (zeros before the start and after the end), no engine involved."""
    padded = F.pad(torch.from_numpy(mixture), (tdc_unet.TRIM, tdc_unet.TRIM))
    with torch.inference_mode():
        out = model(padded[None])[0]
    return out[..., tdc_unet.TRIM : -tdc_unet.TRIM].numpy()


def test_checkpoint_loads_strictly(model: tdc_unet.TDCVocals, entry: ModelEntry) -> None:
    state = torch.load(entry.weights[0], map_location="cpu", weights_only=True)
    ours = model.net.state_dict()
    assert len(state) == 716
    assert list(ours) == list(state)
    assert all(ours[k].shape == state[k].shape for k in state)
    assert all(torch.equal(ours[k], state[k]) for k in state)
    assert sum(p.numel() for p in model.net.parameters()) == 535_924
    assert model.stems == ["vocals", "accompaniment"]
    assert (model.samplerate, model.channels) == (44_100, 2)


def test_load_refuses_a_checkpoint_that_does_not_match(entry: ModelEntry, tmp_path: Path) -> None:
    state = torch.load(entry.weights[0], map_location="cpu", weights_only=True)
    missing = dict(state)
    del missing["mid_block.H.4.1.running_var"]
    reshaped = dict(state)
    reshaped["final_conv.0.weight"] = torch.zeros(4, 24, 1, 2)
    for name, broken in (("missing", missing), ("reshaped", reshaped)):
        path = tmp_path / f"{name}.pt"
        torch.save(broken, path)
        with pytest.raises(UnsupportedModel, match="does not match the tdc_unet layout"):
            tdc_unet.load(dataclasses.replace(entry, weights=(path,)))


def test_spec_test_vectors(model: tdc_unet.TDCVocals, model_dir: Path, mixture: np.ndarray) -> None:
    vectors = np.load(model_dir / "mu_seg0_testvec.npz")
    first_segment = F.pad(torch.from_numpy(mixture), (tdc_unet.TRIM, 0))[:, : tdc_unet.SEGMENT]
    assert torch.equal(first_segment, torch.from_numpy(vectors["seg0_audio"]))

    spec = tdc_unet.stft(torch.from_numpy(vectors["seg0_audio"])[None])[0].numpy()
    assert spec.shape == (4, 1025, 64)
    # librosa vs torch FFT rounding: <= 1.5e-5 in SPEC §4 on magnitudes up to 224.
    assert np.abs(spec - vectors["net_in"]).max() < 5e-5
    assert sdr(vectors["net_in"], spec) > 120

    with torch.inference_mode():
        out = model.net(torch.from_numpy(vectors["net_in"])[None])[0].numpy()
    # Measured: max |error| 1.7e-5 on outputs up to 40.6 (conv kernels' summation order).
    assert np.abs(out - vectors["net_out"]).max() < 1e-4
    assert sdr(vectors["net_out"], out) > 110


def test_istft_inverts_stft_inside_the_segment() -> None:
    audio = torch.randn(3, 2, tdc_unet.SEGMENT, generator=torch.Generator().manual_seed(0))
    back = tdc_unet.istft(tdc_unet.stft(audio))
    assert back.shape == audio.shape
    inner = slice(tdc_unet.TRIM, -tdc_unet.TRIM)
    assert torch.allclose(back[..., inner], audio[..., inner], atol=1e-5)


def test_full_track_direct_matches_the_original_output(
    direct: np.ndarray, reference_vocals: np.ndarray, mixture: np.ndarray
) -> None:
    assert direct.shape == (2, *mixture.shape)
    assert sdr(reference_vocals, direct[0]) >= 60  # measured: 117 dB
    np.testing.assert_allclose(direct[1], mixture - direct[0], atol=1e-6)


@pytest.fixture(scope="module")
def via_api(model_dir: Path, mu_dir: Path) -> dict[str, np.ndarray]:
    """The user's path: ``dsu.Separator`` on the file, registry and engine included."""
    separator = dsu.Separator(model="tdc-vocals", models_dir=model_dir, device="cpu")
    result = separator.separate(mu_dir / "mixture.wav")
    assert result.samplerate == 44_100
    return result.stems


def test_separator_reproduces_the_original_output(
    via_api: dict[str, np.ndarray],
    direct: np.ndarray,
    reference_vocals: np.ndarray,
    mixture: np.ndarray,
    model_dir: Path,
) -> None:
    assert sorted(via_api) == ["accompaniment", "vocals"]
    assert sdr(reference_vocals, via_api["vocals"]) >= 60  # measured: 117 dB
    assert sdr(direct[0], via_api["vocals"]) > 100  # the engine's chunks are the segments
    np.testing.assert_allclose(via_api["accompaniment"], mixture - via_api["vocals"], atol=1e-6)
    assert dsu.Separator(model="tdc", models_dir=model_dir).name == "tdc-vocals"


def test_reference_scores(via_api: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> None:
    vocals, accompaniment = via_api["vocals"], via_api["accompaniment"]
    assert metrics.sdr(truth["vocals"], vocals) == pytest.approx(
        REFERENCE_VOCALS_SDR, abs=TOLERANCE_DB
    )
    assert metrics.sdr(truth["accompaniment"], accompaniment) == pytest.approx(
        REFERENCE_ACCOMPANIMENT_SDR, abs=TOLERANCE_DB
    )
    median = metrics.museval_scores(truth["vocals"][None], vocals[None], 44_100)["SDR"][0]
    assert median == pytest.approx(REFERENCE_MUSEVAL_VOCALS, abs=TOLERANCE_DB)


def test_engine_chunking_is_the_original_framing(model: tdc_unet.TDCVocals) -> None:
    assert (model.segment, model.overlap, model.window) == (tdc_unet.STEP, 0.0, "rect")
    assert model.valid_length(tdc_unet.STEP, tdc_unet.STEP) == tdc_unet.SEGMENT
    assert model.valid_length(123, tdc_unet.STEP) == 123 + 2 * tdc_unet.TRIM


def test_overlap_add_option(entry: ModelEntry, mixture: np.ndarray, truth: dict) -> None:
    from_entry = tdc_unet.load(
        dataclasses.replace(entry, options={"framing": "overlap_add", "overlap": 0.25})
    )
    assert (from_entry.overlap, from_entry.window) == (0.25, "triangle")
    with pytest.raises(BadRequest):
        tdc_unet.load(entry, framing="crossfade")
    with pytest.raises(BadRequest):
        tdc_unet.load(entry, framing="overlap_add", overlap=1.0)

    model = tdc_unet.load(entry, framing="overlap_add")
    assert (model.overlap, model.window) == (0.5, "triangle")
    clip = slice(0, 3 * 44_100)
    out = separate_array(
        model, torch.from_numpy(mixture[:, clip]), options=EngineOptions(batch_size=4)
    ).numpy()
    np.testing.assert_allclose(out[0] + out[1], mixture[:, clip], atol=1e-6)
    assert metrics.sdr(truth["vocals"][:, clip], out[0]) > 9.0
