"""HTDemucs in the MSST layout (``.ckpt`` state dict + ``model: htdemucs`` YAML).

The same weights saved as a Demucs ``.th`` package and loaded through the Demucs family
give the same network output; a whole file through ``dsu separate`` equals MSST's
``demix`` in its HTDemucs mode. MSST's own HTDemucs copy (``models/demucs4ht.py``) needs
OmegaConf and openunmix, which DSU does not install; with ``num_subbands: 1`` it is the
``demucs`` package's class line for line, so ``demix`` runs that one here.
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

from corpus import separate_cli
from dsu.archs import demucs as demucs_family
from dsu.archs import msst_htdemucs
from dsu.archs.families import family_of, launcher_archs, msst_arch
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry
from helpers import sdr
from tiny_demucs import write_package

pytestmark = pytest.mark.usefixtures("one_thread")

PARITY_DB = 60.0
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
RATE = 8000  # a short training segment keeps every chunk cheap

# MSST's configs/config_musdb18_htdemucs.yaml, shrunk (same keys, with its `1e-3` that
# YAML 1.1 reads as a string).
CONFIG: dict[str, Any] = {
    "audio": {"chunk_size": RATE, "min_mean_abs": 0.001, "hop_length": 1024},
    "training": {
        "batch_size": 8,
        "segment": 1,
        "shift": 1,
        "samplerate": RATE,
        "channels": 2,
        "normalize": True,
        "instruments": ["drums", "bass", "other", "vocals"],
        "target_instrument": None,
        "use_amp": True,
    },
    "inference": {"num_overlap": 4, "batch_size": 2},
    "model": "htdemucs",
    "htdemucs": {
        "channels": 8,
        "channels_time": None,
        "growth": 2,
        "num_subbands": 1,
        "nfft": 512,
        "wiener_iters": 0,
        "end_iters": 0,
        "wiener_residual": False,
        "cac": True,
        "depth": 3,
        "rewrite": True,
        "multi_freqs": [],
        "multi_freqs_depth": 3,
        "freq_emb": 0.2,
        "emb_scale": 10,
        "emb_smooth": True,
        "kernel_size": 8,
        "stride": 4,
        "time_stride": 2,
        "context": 1,
        "context_enc": 0,
        "norm_starts": 4,
        "norm_groups": 4,
        "dconv_mode": 3,
        "dconv_depth": 2,
        "dconv_comp": 8,
        "dconv_init": "1e-3",
        "bottom_channels": 16,
        "t_layers": 1,
        "t_hidden_scale": 1.0,
        "t_heads": 2,
        "t_dropout": 0.0,
        "t_layer_scale": True,
        "t_gelu": True,
        "t_emb": "sin",
        "t_max_positions": 10000,
        "t_max_period": 10000.0,
        "t_weight_pos_embed": 1.0,
        "t_cape_mean_normalize": True,
        "t_cape_augment": True,
        "t_cape_glob_loc_scale": [5000.0, 1.0, 1.4],
        "t_sin_random_shift": 0,
        "t_norm_in": True,
        "t_norm_in_group": False,
        "t_group_norm": False,
        "t_norm_first": True,
        "t_norm_out": True,
        "t_weight_decay": 0.0,
        "t_lr": None,
        "t_sparse_self_attn": False,
        "t_sparse_cross_attn": False,
        "t_mask_type": "diag",
        "t_mask_random_seed": 42,
        "t_sparse_attn_window": 400,
        "t_global_window": 100,
        "t_sparsity": 0.95,
        "t_auto_sparsity": False,
        "t_cross_first": False,
        "rescale": 0.1,
    },
}


def network(seed: int = 0, raw: dict[str, Any] = CONFIG) -> torch.nn.Module:
    torch.manual_seed(seed)
    return msst_htdemucs.build_network(raw).eval()


def write_folder(root: Path, raw: dict[str, Any], state: dict[str, torch.Tensor]) -> ModelEntry:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ht.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    torch.save(state, root / "ht.ckpt")
    return ModelEntry("ht", "htdemucs", (root / "ht.ckpt",), root / "ht.yaml")


def test_public_layout_is_recognised_and_served() -> None:
    assert msst_arch(CONFIG) == "htdemucs"
    typed = {**CONFIG, "training": {**CONFIG["training"], "model_type": "htdemucs"}}
    assert msst_arch(typed) == "htdemucs"
    family = family_of("htdemucs")
    assert family is not None and family.module == "dsu.archs.msst_htdemucs"
    assert "htdemucs" in launcher_archs("dsu-demucs")
    assert "htdemucs" in launcher_archs("dsu-audio-separator")


def test_same_weights_as_a_demucs_package_give_the_same_output(tmp_path: Path) -> None:
    net = network(seed=1)
    model = msst_htdemucs.load(write_folder(tmp_path / "msst", CONFIG, net.state_dict()))
    assert model.stems == ["drums", "bass", "other", "vocals"]
    assert (model.samplerate, model.segment, model.framing, model.normalize) == (
        RATE,
        RATE,
        "msst_demucs",
        False,
    )
    package = write_package(net, tmp_path / "th", "ht000000")
    entry = ModelEntry("th", "demucs", (package,), None)
    as_demucs = demucs_family.load(entry)
    mix = 0.3 * torch.randn(2, 2, RATE, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ours, theirs = model(mix), as_demucs(mix)
    assert sdr(theirs, ours) >= PARITY_DB


def test_dsu_separate_on_an_msst_folder_matches_msst_demix(tmp_path: Path) -> None:
    net = network(seed=3)
    write_folder(tmp_path / "models", CONFIG, net.state_dict())
    rng = np.random.default_rng(0)
    mix = (0.2 * rng.standard_normal((2, 3 * RATE + 123))).astype(np.float32)
    sf.write(tmp_path / "song.wav", mix.T, RATE, subtype="FLOAT")
    models, out = tmp_path / "models", tmp_path / "out"
    ours = separate_cli(tmp_path / "song.wav", models, "ht", out, env=ONE_THREAD)
    with torch.inference_mode():
        expected = demix(ConfigDict(CONFIG), net, mix, torch.device("cpu"), "htdemucs")
    assert set(ours) == set(expected)
    for stem, audio in expected.items():
        assert sdr(audio, ours[stem]) >= PARITY_DB, stem


def variant(**htdemucs: Any) -> dict[str, Any]:
    raw = copy.deepcopy(CONFIG)
    raw["htdemucs"].update(htdemucs)
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (variant(t_layerz=2), r"ht\.yaml: unknown HTDemucs key\(s\) htdemucs\.t_layerz"),
        (variant(num_subbands=2), r"htdemucs\.num_subbands must be 1"),
        (variant(dconv_init="small"), r"htdemucs\.dconv_init must be a number"),
        (
            {**CONFIG, "training": {**CONFIG["training"], "target_instrument": "vocals"}},
            r"target_instrument must be null",
        ),
    ],
)
def test_bad_config_is_named_with_the_file(
    tmp_path: Path, raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(RegistryError, match=message):
        msst_htdemucs.load(write_folder(tmp_path, raw, network().state_dict()))


def test_mismatched_checkpoint_names_the_tensor(tmp_path: Path) -> None:
    state = network().state_dict()
    wider = network(raw=variant(channels=16)).state_dict()
    with pytest.raises(RegistryError, match=r"encoder\.0\.conv\.weight \(checkpoint \(16,"):
        msst_htdemucs.load(write_folder(tmp_path / "wide", CONFIG, wider))
    del state["freq_emb.embedding.weight"]
    with pytest.raises(RegistryError, match=r"missing key: freq_emb\.embedding\.weight"):
        msst_htdemucs.load(write_folder(tmp_path / "missing", CONFIG, state))
