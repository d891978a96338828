"""SCNet, SCNet Masked and SCNet Tran against their references, on random weights.

The references: pymss-core's ``modules/scnet`` for ``scnet`` and the installed ``msst``
package's ``models/scnet/scnet_masked.py`` / ``scnet_tran.py`` for the variants. Each case
builds the reference from a small config, copies its state dict into DSU's network
strictly and compares the outputs; the pipeline cases write the ``.ckpt`` + ``.yaml`` pair
into a folder and run ``dsu separate`` on it against MSST's ``demix``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from ml_collections import ConfigDict
from msst.models.scnet.scnet_masked import SCNet as MsstMasked
from msst.models.scnet.scnet_tran import SCNet_Tran as MsstTran
from msst.utils.model_utils import demix
from pymss_core.modules.scnet import SCNet as PymssSCNet

import dsu.registry
from corpus import separate_cli
from dsu.archs import scnet
from dsu.archs.families import family_of, msst_arch
from dsu.archs.msst_config import read_config
from dsu.archs.scnet import SCNetMasked, SCNetTran, build, build_network, parse_model_config
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry
from helpers import sdr
from scnet_configs import XL_IHF

pytestmark = pytest.mark.usefixtures("one_thread")

PARITY_DB = 60.0

SMALL: dict[str, Any] = {
    "sources": ["vocals", "other"],
    "audio_channels": 2,
    "dims": [4, 8, 16, 32],
    "nfft": 256,
    "hop_size": 64,
    "win_size": 256,
    "normalized": True,
    "band_SR": [0.175, 0.392, 0.433],
    "band_stride": [1, 4, 16],
    "band_kernel": [3, 4, 16],
    "conv_depths": [3, 2, 1],
    "compress": 2,
    "conv_kernel": 3,
    "num_dplayer": 2,
    "expand": 1,
}
TRAN: dict[str, Any] = {
    **SMALL,
    "tran_rotary_embedding_dim": 8,
    "tran_depth": 1,
    "tran_heads": 2,
    "tran_dim_head": 8,
    "tran_attn_dropout": 0.0,
    "tran_ff_dropout": 0.0,
    "tran_flash_attn": False,
}

REFERENCES = {"scnet": PymssSCNet, "scnet_masked": MsstMasked, "scnet_tran": MsstTran}


def reference(arch: str, model: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """The reference network with random weights, nudged off their initial values (the
    masked variant's position embedding and biases start near zero)."""
    torch.manual_seed(seed)
    net = REFERENCES[arch](**copy.deepcopy(model)).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return net


def ours_from(arch: str, ref: torch.nn.Module, model: dict[str, Any]) -> torch.nn.Module:
    net = build(arch, model).eval()
    net.load_state_dict(ref.state_dict(), strict=True)
    return net


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "scnet": ("scnet", SMALL),
    "scnet_ihf_bands": (
        "scnet",
        {**SMALL, "band_stride": [1, 4, 4], "band_kernel": [3, 4, 4], "conv_depths": [3, 3, 3]},
    ),
    "scnet_four_layers_expand2": ("scnet", {**SMALL, "num_dplayer": 4, "expand": 2}),
    "scnet_unnormalised_short_window": ("scnet", {**SMALL, "normalized": False, "win_size": 192}),
    "scnet_mono_one_stem": (
        "scnet",
        {**SMALL, "audio_channels": 1, "dims": [2, 8, 16], "sources": ["vocals"]},
    ),
    "scnet_masked": ("scnet_masked", SMALL),
    "scnet_masked_four_stems": (
        "scnet_masked",
        {
            **SMALL,
            "sources": ["drums", "bass", "other", "vocals"],
            "band_SR": [0.225, 0.372, 0.403],
        },
    ),
    "scnet_tran": ("scnet_tran", TRAN),
    "scnet_tran_deeper": ("scnet_tran", {**TRAN, "tran_depth": 2, "num_dplayer": 4}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_network_matches_reference(case: str) -> None:
    arch, model = CASES[case]
    ref = reference(arch, model)
    ours = ours_from(arch, ref, model)
    mix = torch.randn(2, model["audio_channels"], 3001, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = ours(mix)
        expected = ref(mix)
    assert got.shape == (2, len(model["sources"]), model["audio_channels"], 3001)
    assert got.dtype == torch.float32 and got.abs().max() > 0
    assert sdr(expected, got) >= PARITY_DB


def test_xl_ihf_layout_matches_the_reference() -> None:
    """The full-size XL IHF config builds the reference's keys and shapes (on ``meta``)."""
    with torch.device("meta"):
        ours = build("scnet", XL_IHF)
        ref = PymssSCNet(**copy.deepcopy(XL_IHF))
    expected = {k: v.shape for k, v in ref.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    # About 214 MB of fp32, the size of model_scnet_ep_36_sdr_10.0891.ckpt.
    assert 52e6 < sum(v.numel() for v in ours.state_dict().values()) < 54e6


CATALOG_CONFIGS = Path(dsu.registry.__file__).parent / "catalog" / "configs"


def test_every_shipped_scnet_config_builds_the_reference_layout() -> None:
    """The public SCNet configs DSU ships parse and give the references' keys and shapes
    (on ``meta``: full size)."""
    found = 0
    for path in sorted(CATALOG_CONFIGS.glob("*.yaml")):
        raw = read_config(path)
        arch = msst_arch(raw)
        if arch not in REFERENCES:
            continue
        found += 1
        with torch.device("meta"):
            ours = build_network(raw)
            ref = REFERENCES[arch](**copy.deepcopy(raw["model"]))
        expected = {k: v.shape for k, v in ref.state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == expected, path.name
    assert found >= 1


def test_reduced_precision_keeps_ffts_in_float32() -> None:
    ref = reference("scnet", SMALL)
    net = ours_from("scnet", ref, SMALL)
    mix = torch.randn(1, 2, 2000, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        full = net(mix)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = net(mix)
    assert autocast.dtype == torch.float32
    assert sdr(full, autocast) > 15


# --- config -------------------------------------------------------------------------


def test_config_defaults_are_the_references() -> None:
    config = parse_model_config("scnet", {})
    assert config.sources == ("drums", "bass", "other", "vocals")
    assert config.dims == (4, 32, 64, 128) and config.num_dplayer == 6
    assert config.transformer is None
    tran = parse_model_config("scnet_tran", {"dims": [4, 8]})
    assert tran.transformer is not None and tran.transformer.dim_head == 64


@pytest.mark.parametrize(
    ("arch", "key", "message"),
    [
        ("scnet", "num_heads", r"unknown scnet key\(s\) model\.num_heads"),
        ("scnet_masked", "tran_depth", r"model\.tran_depth"),
        ("scnet", "bandsplit_ratios", "scnet_unofficial"),
    ],
)
def test_unknown_config_key_is_named(arch: str, key: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_model_config(arch, {**SMALL, key: 1})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dims": [8, 16]}, r"model\.dims \[8, 16\]"),
        ({"num_dplayer": 3}, "must be even"),
        ({"band_SR": [0.6, 0.5, 0.1]}, r"model\.band_SR"),
        ({"band_stride": [1, 4]}, r"model\.band_stride must be 3"),
        ({"conv_depths": [3, 2]}, "one depth per band"),
        ({"conv_kernel": 4}, "must be odd"),
        ({"nfft": "4096"}, r"model\.nfft"),
        ({"tran_rotary_embedding_dim": 4}, "must equal model.tran_dim_head"),
    ],
)
def test_bad_model_values_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_model_config("scnet_tran", {**TRAN, **change})


def test_family_recognises_its_configs() -> None:
    assert msst_arch({"model": SMALL}) == "scnet"
    assert msst_arch({"model": TRAN}) == "scnet_tran"
    masked = {"model": SMALL, "training": {"model_type": "scnet_masked"}}
    assert msst_arch(masked) == "scnet_masked"
    family = family_of("scnet_masked")
    assert family is not None and family.module == "dsu.archs.scnet"
    assert family.launchers == ("dsu-bsroformer", "dsu-audio-separator")
    assert isinstance(build_network(masked), SCNetMasked)
    assert isinstance(build_network({"model": TRAN}), SCNetTran)
    with pytest.raises(RegistryError, match="not an SCNet config"):
        build_network({"model": {"num_subbands": 4, "num_scales": 2}})


# --- loader and pipeline --------------------------------------------------------------

CHUNK = 4096


def msst_config(arch: str, model: dict[str, Any], **training: Any) -> dict[str, Any]:
    return {
        "audio": {"chunk_size": CHUNK, "num_channels": 2, "sample_rate": 44100},
        "model": copy.deepcopy(model),
        "training": {
            "instruments": list(model["sources"]),
            "target_instrument": None,
            "model_type": arch,
            **training,
        },
        "inference": {"batch_size": 2, "num_overlap": 2},
    }


def write_pair(folder: Path, name: str, config: dict[str, Any], net: torch.nn.Module) -> Path:
    """``NAME.ckpt`` + ``NAME.yaml`` as MSST writes them (tuples tagged)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / f"{name}.ckpt")
    (folder / f"{name}.yaml").write_text(yaml.dump(config, Dumper=yaml.Dumper))
    return folder


def entry(folder: Path, name: str, arch: str) -> ModelEntry:
    return ModelEntry(
        name=name, arch=arch, weights=(folder / f"{name}.ckpt",), config=folder / f"{name}.yaml"
    )


PIPELINES = {
    "scnet_target": (
        "scnet",
        {**SMALL, "sources": ["vocals"]},
        {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
    ),
    "scnet_masked": ("scnet_masked", SMALL, {}),
    "scnet_tran": ("scnet_tran", TRAN, {}),
}


@pytest.mark.parametrize("case", sorted(PIPELINES))
def test_dsu_separate_on_an_msst_folder_matches_msst_demix(case: str, tmp_path: Path) -> None:
    """``dsu separate --models-dir`` on a folder holding only the pair, on a track of
    several chunks, against ``demix`` on the reference module."""
    arch, model, training = PIPELINES[case]
    config = msst_config(arch, model, **training)
    ref = reference(arch, model, seed=3)
    models = write_pair(tmp_path / "models", "tiny-scnet", config, ref)
    rng = np.random.default_rng(0)
    mix = (0.2 * rng.standard_normal((2, 5 * CHUNK + 777))).astype(np.float32)
    sf.write(tmp_path / "song.wav", mix.T, 44100, subtype="FLOAT")
    ours = separate_cli(tmp_path / "song.wav", models, "tiny-scnet", tmp_path / "out")
    with torch.inference_mode():
        theirs = demix(ConfigDict(config), ref, torch.from_numpy(mix), "cpu", arch)
    expected = {name.lower(): np.asarray(v, dtype=np.float32) for name, v in theirs.items()}
    if config["training"]["target_instrument"]:
        expected["other"] = mix - expected["vocals"]
    assert set(ours) == set(expected)
    for stem, audio in expected.items():
        assert sdr(audio, ours[stem]) >= PARITY_DB, stem


def test_masked_checkpoint_under_a_plain_scnet_entry_loads_as_masked(tmp_path: Path) -> None:
    """A scanned folder without ``training.model_type`` calls the masked variant ``scnet``
    (same config keys); its checkpoint's mask head picks the right network."""
    config = msst_config("scnet_masked", SMALL)
    del config["training"]["model_type"]
    ref = reference("scnet_masked", SMALL)
    folder = write_pair(tmp_path, "masked", config, ref)
    model = scnet.load(entry(folder, "masked", msst_arch(config)))
    assert isinstance(model.net, SCNetMasked)
    assert (model.segment, model.num_overlap, model.batch_size) == (CHUNK, 2, 2)
    mix = torch.randn(1, 2, CHUNK, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert sdr(ref(mix), model(mix)) >= PARITY_DB


def test_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    config = msst_config("scnet", {**SMALL, "num_heads": 8})
    folder = write_pair(tmp_path, "bad", config, reference("scnet", SMALL))
    with pytest.raises(RegistryError, match=r"bad\.yaml: unknown scnet key\(s\) model\.num_heads"):
        scnet.load(entry(folder, "bad", "scnet"))


def test_mismatched_checkpoint_names_the_tensor(tmp_path: Path) -> None:
    wider = reference("scnet", {**SMALL, "dims": [4, 16, 16, 32]})
    folder = write_pair(tmp_path, "wider", msst_config("scnet", SMALL), wider)
    with pytest.raises(RegistryError, match=r"encoder\.0\.SDlayer\.convs\.0\.weight \(checkpoint"):
        scnet.load(entry(folder, "wider", "scnet"))
    state = reference("scnet", SMALL).state_dict()
    del state["separation_net.dp_modules.1.linear_layers.0.bias"]
    folder = write_pair(tmp_path, "missing", msst_config("scnet", SMALL), torch.nn.Module())
    torch.save(state, folder / "missing.ckpt")
    with pytest.raises(RegistryError, match=r"missing key: separation_net\.dp_modules\.1"):
        scnet.load(entry(folder, "missing", "scnet"))


def test_sources_must_match_the_instruments(tmp_path: Path) -> None:
    config = msst_config("scnet", SMALL, instruments=["vocals", "drums", "other"])
    folder = write_pair(tmp_path, "odd", config, reference("scnet", SMALL))
    with pytest.raises(RegistryError, match=r"model\.sources names 2 stem"):
        scnet.load(entry(folder, "odd", "scnet"))
