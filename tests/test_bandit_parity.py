"""BandIt v2 against ``pymss-core``'s module, on random weights, and end to end against
MSST's ``demix``.

MSST's own ``models/bandit_v2`` needs torchaudio and Lightning, which DSU does not
install; ``pymss_core.modules.bandit_v2`` is the same network on plain torch (its STFT
scales by ``1 / sqrt(n_fft)`` where MSST's torchaudio one, and DSU, scale by the window's
energy: a constant factor the band LayerNorms remove, up to their epsilon).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from ml_collections import ConfigDict
from msst.utils.model_utils import demix
from pymss_core.modules.bandit.core.model.bsrnn.utils import MusicalBandsplitSpecification
from pymss_core.modules.bandit_v2 import Bandit as Reference

from corpus import separate_cli
from dsu.archs import bandit
from dsu.archs.bandit.bands import musical_bands
from dsu.archs.families import msst_arch
from dsu.archs.msst_config import read_config
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry
from helpers import sdr

pytestmark = pytest.mark.usefixtures("one_thread")

PARITY_DB = 60.0
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
"""A tiny network on a busy machine runs far faster on one thread than on several."""

# MSST's configs/config_dnr_bandit_v2_mus64.yaml (the public DnR model), without
# augmentations.
PUBLIC: dict[str, Any] = {
    "cls": "Bandit",
    "audio": {"chunk_size": 384000, "num_channels": 2, "sample_rate": 48000, "min_mean_abs": 0.0},
    "kwargs": {
        "in_channels": 1,
        "stems": ["speech", "music", "sfx"],
        "band_type": "musical",
        "n_bands": 64,
        "normalize_channel_independently": False,
        "treat_channel_as_feature": True,
        "n_sqm_modules": 8,
        "emb_dim": 128,
        "rnn_dim": 256,
        "bidirectional": True,
        "rnn_type": "GRU",
        "mlp_dim": 512,
        "hidden_activation": "Tanh",
        "hidden_activation_kwargs": None,
        "complex_mask": True,
        "use_freq_weights": True,
        "n_fft": 2048,
        "win_length": 2048,
        "hop_length": 512,
        "window_fn": "hann_window",
        "wkwargs": None,
        "power": None,
        "center": True,
        "normalized": True,
        "pad_mode": "reflect",
        "onesided": True,
    },
    "training": {
        "batch_size": 4,
        "instruments": ["speech", "music", "sfx"],
        "target_instrument": None,
        "use_amp": True,
    },
    "inference": {"batch_size": 8, "dim_t": 256, "num_overlap": 4},
}

SMALL_KWARGS = {
    "n_bands": 12,
    "n_sqm_modules": 1,
    "emb_dim": 16,
    "rnn_dim": 16,
    "mlp_dim": 24,
    "n_fft": 256,
    "win_length": 256,
    "hop_length": 64,
}


def small(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(PUBLIC)
    raw["kwargs"].update(SMALL_KWARGS, **changes)
    raw["audio"]["chunk_size"] = 64 * 40
    raw["inference"]["batch_size"] = 2
    return raw


def reference(raw: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """pymss-core's BandIt v2 with random weights large enough to matter."""
    torch.manual_seed(seed)
    net = Reference(**raw["kwargs"]).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.3)
    return net


def test_band_split_matches_the_reference_at_both_rates() -> None:
    for fs in (44100, 48000):
        theirs = MusicalBandsplitSpecification(nfft=2048, fs=fs, n_bands=64)
        ours = musical_bands(2048, fs, 64)
        assert list(ours.bands) == [tuple(band) for band in theirs.get_band_specs()]
        assert all(
            torch.equal(a, b) for a, b in zip(ours.weights, theirs.get_freq_weights(), strict=True)
        )


@pytest.mark.parametrize(
    "changes",
    [{}, {"rnn_type": "LSTM", "pad_mode": "constant", "bidirectional": False}],
    ids=["gru-reflect", "lstm-unidirectional"],
)
def test_network_matches_pymss(changes: dict[str, Any]) -> None:
    raw = small(**changes)
    theirs = reference(raw)
    ours = bandit.build_network(raw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    mix = 0.3 * torch.randn(2, 2, 5000, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = theirs(mix)
        got = ours.eval()(mix)
    assert got.shape == (2, 3, 2, 5000)
    assert sdr(expected, got) >= PARITY_DB


def test_public_config_builds_the_reference_layout() -> None:
    """Every tensor name and shape of the public model (on the CPU: the reference's band
    split needs real tensors)."""
    theirs = Reference(**PUBLIC["kwargs"]).state_dict()
    ours = bandit.build_network(PUBLIC).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in theirs.items()
    }
    assert msst_arch(PUBLIC) == "bandit_v2"


def write_folder(root: Path, raw: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    """An MSST folder: ``dnr.ckpt`` and ``dnr.yaml`` (with a ``!!python/tuple``)."""
    root.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(raw, sort_keys=False)
    (root / "dnr.yaml").write_text(
        text + "augmentations:\n  mixup_probs: !!python/tuple\n  - 0.2\n"
    )
    torch.save(state, root / "dnr.ckpt")
    return root


def test_dsu_separate_on_an_msst_folder_matches_msst_demix(tmp_path: Path) -> None:
    raw = small()
    theirs = reference(raw, seed=3)
    models = write_folder(tmp_path / "models", raw, theirs.state_dict())
    rng = np.random.default_rng(0)
    mix = (0.2 * rng.standard_normal((2, 6 * raw["audio"]["chunk_size"] + 321))).astype(np.float32)
    sf.write(tmp_path / "film.wav", mix.T, 48000, subtype="FLOAT")

    ours = separate_cli(tmp_path / "film.wav", models, "dnr", tmp_path / "out", env=ONE_THREAD)
    assert set(ours) == {"speech", "music", "sfx"}

    with torch.inference_mode():
        expected = demix(ConfigDict(raw), theirs, mix, torch.device("cpu"), "bandit_v2")
    for stem in ("speech", "music", "sfx"):
        assert sdr(expected[stem], ours[stem]) >= PARITY_DB, stem


def test_loader_reads_the_config_and_checks_the_checkpoint(tmp_path: Path) -> None:
    raw = small()
    state = reference(raw).state_dict()
    entry = ModelEntry(
        name="dnr",
        arch="bandit_v2",
        weights=(write_folder(tmp_path / "ok", raw, state) / "dnr.ckpt",),
        config=tmp_path / "ok" / "dnr.yaml",
    )
    model = bandit.load(entry)
    assert model.stems == ["speech", "music", "sfx"]
    assert (model.samplerate, model.segment, model.num_overlap, model.framing) == (
        48000,
        64 * 40,
        4,
        "msst",
    )

    broken = dict(state)
    del broken["tf_model.seqband.0.fc.weight"]
    root = write_folder(tmp_path / "missing", raw, broken)
    with pytest.raises(RegistryError, match=r"missing key: tf_model\.seqband\.0\.fc\.weight"):
        bandit.load(ModelEntry("m", "bandit_v2", (root / "dnr.ckpt",), root / "dnr.yaml"))

    wider = reference(small(emb_dim=24)).state_dict()
    root = write_folder(tmp_path / "wider", raw, wider)
    with pytest.raises(
        RegistryError,
        match=r"band_split\.norm_fc_modules\.0\.combined\.1\.weight \(checkpoint \(24,",
    ):
        bandit.load(ModelEntry("m", "bandit_v2", (root / "dnr.ckpt",), root / "dnr.yaml"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_heads": 4}, r"bad\.yaml: unknown BandIt v2 key\(s\) kwargs\.n_heads"),
        ({"rnn_type": "Mamba"}, r"kwargs\.rnn_type 'Mamba' is not one of LSTM, GRU, RNN"),
        ({"in_channels": 2}, r"kwargs\.in_channels must be 1"),
        ({"band_type": "mel"}, r"kwargs\.band_type 'mel'"),
        ({"hidden_activation": "Nope"}, r"hidden_activation 'Nope' is not a torch\.nn"),
        ({"stems": ["music", "speech", "sfx"]}, r"training\.instruments .* must be kwargs\.stems"),
    ],
)
def test_bad_config_is_named_with_the_file(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    raw = small(**changes)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    torch.save(reference(small()).state_dict(), tmp_path / "bad.ckpt")
    entry = ModelEntry("bad", "bandit_v2", (tmp_path / "bad.ckpt",), tmp_path / "bad.yaml")
    with pytest.raises(RegistryError, match=message):
        bandit.load(entry)


def test_precisions_are_accepted_and_the_kwargs_section_is_required(tmp_path: Path) -> None:
    raw = small(stft_precisions="32", tf_model_precisions="bf16")
    assert isinstance(bandit.build_network(raw), torch.nn.Module)
    path = tmp_path / "nokwargs.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k != "kwargs"}))
    with pytest.raises(RegistryError, match="no model: section"):
        read_config(path)
