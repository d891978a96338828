"""MDX23C (TFC-TDF U-Net v3) against both references, on random weights.

The references are the installed ``msst`` package's ``models/mdx23c_tfc_tdf_v3.py`` and
audio-separator's ``uvr_lib_v5/tfc_tdf_v3.py`` (UVR's MDX23C path). Each case builds the
reference from a small config, copies its state dict into DSU's network strictly and
compares the two outputs on the same input.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from audio_separator.separator.uvr_lib_v5.tfc_tdf_v3 import TFC_TDF_net as UvrNet
from ml_collections import ConfigDict
from msst.models.mdx23c_tfc_tdf_v3 import TFC_TDF_net as MsstNet
from msst.utils.model_utils import demix

import dsu.registry
from dsu.archs import mdx23c
from dsu.archs.families import msst_arch
from dsu.archs.mdx23c import Mdx23cConfig, TfcTdfNet
from dsu.archs.msst import read_config
from dsu.engine.overlap_add import separate_array
from dsu.errors import RegistryError
from dsu.metrics import sdr
from dsu.registry.entry import ModelEntry

PARITY_DB = 60.0

SMALL: dict[str, Any] = {
    "audio": {
        "chunk_size": 64 * 31,
        "dim_f": 128,
        "dim_t": 32,
        "hop_length": 64,
        "n_fft": 256,
        "num_channels": 2,
        "sample_rate": 44100,
        "min_mean_abs": 0.001,
    },
    "model": {
        "act": "gelu",
        "bottleneck_factor": 4,
        "growth": 8,
        "norm": "InstanceNorm",
        "num_blocks_per_scale": 2,
        "num_channels": 8,
        "num_scales": 2,
        "num_subbands": 4,
        "scale": [2, 2],
    },
    "training": {
        "batch_size": 6,
        "instruments": ["Vocals", "Instrumental"],
        "target_instrument": None,
        "lr": 1.0e-05,
        "use_amp": True,
    },
    "inference": {"batch_size": 1, "dim_t": 32, "num_overlap": 4},
}

# The public InstVoc HQ / MSST vocals configs (model_2_stem_full_band_8k.yaml).
FULL_SIZE: dict[str, Any] = {
    "audio": {
        "chunk_size": 261120,
        "dim_f": 4096,
        "dim_t": 256,
        "hop_length": 1024,
        "n_fft": 8192,
        "num_channels": 2,
        "sample_rate": 44100,
        "min_mean_abs": 0.001,
    },
    "model": {
        "act": "gelu",
        "bottleneck_factor": 4,
        "growth": 128,
        "norm": "InstanceNorm",
        "num_blocks_per_scale": 2,
        "num_channels": 128,
        "num_scales": 5,
        "num_subbands": 4,
        "scale": [2, 2],
    },
    "training": {"instruments": ["Vocals", "Instrumental"], "target_instrument": None},
    "inference": {"batch_size": 1, "dim_t": 256, "num_overlap": 8},
}


@pytest.fixture(autouse=True)
def one_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tiny networks on one thread: with several, thread hand-offs dominate them and a
    busy machine makes them ten times slower. The full-size case keeps every thread."""
    before = torch.get_num_threads()
    if request.node.get_closest_marker("slow") is None:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def variant(
    base: dict[str, Any] = SMALL,
    audio: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    **model: Any,
) -> dict[str, Any]:
    raw = copy.deepcopy(base)
    raw["model"].update(model)
    raw["audio"].update(audio or {})
    raw["training"].update(training or {})
    return raw


def build_reference(kind: str, raw: dict[str, Any]) -> torch.nn.Module:
    config = ConfigDict(copy.deepcopy(raw))
    net = UvrNet(config, device="cpu") if kind == "uvr" else MsstNet(config)
    return net.eval()


def randomise(net: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere, norms included, scaled to keep activations O(1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif tensor.dim() == 1 and name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * noise)
            elif tensor.dim() == 1:
                tensor.copy_(0.1 * noise)
            else:
                tensor.copy_(noise / max(1.0, tensor[0].numel()) ** 0.5)


def ours_from(reference: torch.nn.Module, raw: dict[str, Any]) -> TfcTdfNet:
    config = Mdx23cConfig.from_dict(raw)
    net = TfcTdfNet(config.audio, config.model, len(config.targets)).eval()
    net.load_state_dict(reference.state_dict(), strict=True)
    return net


def reference_output(kind: str, out: torch.Tensor, ours: torch.Tensor) -> torch.Tensor:
    """The reference's output in DSU's ``[B, S, C, T]`` layout.

    UVR drops the stem axis for a single-target model. Both references reshape the
    iSTFT output to two channels whatever the config says, so a mono model's
    ``[B, S, 1, T]`` comes back as ``[B, S, 2, T / 2]`` — the same memory, which a
    reshape restores.
    """
    if kind == "uvr" and out.dim() == 3:
        out = out.unsqueeze(1)
    if out.shape != ours.shape:
        assert ours.shape[2] == 1 and out.shape[2] == 2, (out.shape, ours.shape)
    return out.reshape(ours.shape)


def parity(kind: str, raw: dict[str, Any], batch: int = 2, seed: int = 0) -> float:
    reference = build_reference(kind, raw)
    randomise(reference, seed)
    ours = ours_from(reference, raw)
    config = Mdx23cConfig.from_dict(raw)
    mix = torch.randn(
        batch,
        config.audio.num_channels,
        config.audio.chunk_size,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    with torch.inference_mode():
        got = ours(mix)
        expected = reference_output(kind, reference(mix), got)
    assert got.shape == (batch, len(config.targets), config.audio.num_channels, mix.shape[-1])
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all() and got.abs().max() > 0
    return float(np.min(sdr(expected.flatten(0, 1).numpy(), got.flatten(0, 1).numpy())))


CASES: dict[str, dict[str, Any]] = {
    "default": variant(),
    "subbands1": variant(num_subbands=1),
    "subbands2": variant(num_subbands=2),
    "scales1": variant(num_scales=1),
    "scales3": variant(num_scales=3),
    "scale_time1": variant(scale=[1, 2]),
    "one_block_bottleneck2": variant(num_blocks_per_scale=1, bottleneck_factor=2),
    "batchnorm": variant(norm="BatchNorm"),
    "groupnorm": variant(norm="GroupNorm4"),
    "relu": variant(act="relu"),
    "elu": variant(act="elu1.0"),
    "mono": variant(audio={"num_channels": 1}),
    "target_instrument": variant(training={"target_instrument": "Vocals"}),
    "four_stems": variant(
        training={"instruments": ["vocals", "bass", "drums", "other"]}, audio={"n_fft": 512}
    ),
}


@pytest.mark.parametrize("kind", ["msst", "uvr"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_references(kind: str, case: str) -> None:
    assert parity(kind, CASES[case]) >= PARITY_DB


def test_no_norm_matches_uvr() -> None:
    """``norm: null`` (UVR's fallback when a config omits it) means no normalisation."""
    raw = variant(norm=None)
    assert parity("uvr", raw) >= PARITY_DB
    config = Mdx23cConfig.from_dict(raw)
    net = TfcTdfNet(config.audio, config.model, 2)
    norms = (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d, torch.nn.GroupNorm)
    assert not any(isinstance(m, norms) for m in net.modules())


def test_full_size_layout_matches_published_checkpoint() -> None:
    """The InstVoc HQ config builds the 319 tensors of ``MDX23C-8KFFT-InstVoc_HQ.ckpt``."""
    reference = build_reference("uvr", FULL_SIZE)
    config = Mdx23cConfig.from_dict(FULL_SIZE)
    ours = TfcTdfNet(config.audio, config.model, len(config.targets))
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert len(expected) == 319
    assert config.audio.chunk_size == ours.valid_length(261120) == 1024 * 255


@pytest.mark.slow
def test_full_size_forward_parity() -> None:
    """One forward of the full-size network on the shortest valid input (32 frames)."""
    reference = build_reference("uvr", FULL_SIZE)
    torch.manual_seed(0)
    ours = ours_from(reference, FULL_SIZE)
    mix = 0.1 * torch.randn(1, 2, ours.valid_length(1), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        got = ours(mix)
        expected = reference(mix)
    assert sdr(expected[0].numpy(), got[0].numpy()).min() >= PARITY_DB


def test_valid_length_and_bad_lengths() -> None:
    config = Mdx23cConfig.from_dict(SMALL)
    net = TfcTdfNet(config.audio, config.model, 2).eval()
    hop, multiple = 64, 4
    assert net.valid_length(1) == hop * (multiple - 1)
    assert net.valid_length(hop * 31) == hop * 31
    assert net.valid_length(hop * 31 + 1) == hop * 35
    with pytest.raises(ValueError, match="next valid: 2240"):
        net(torch.zeros(1, 2, hop * 31 + 1))
    with pytest.raises(ValueError, match=r"\[B, 2, T\]"):
        net(torch.zeros(1, 1, hop * 31))


def test_reduced_precision_keeps_fft_and_norms_in_float32() -> None:
    """Under bf16 autocast or with fp16 weights the output is float32 and close to fp32."""
    reference = build_reference("msst", SMALL)
    randomise(reference, 0)
    net = ours_from(reference, SMALL)
    mix = torch.randn(
        1, 2, SMALL["audio"]["chunk_size"], generator=torch.Generator().manual_seed(5)
    )
    with torch.inference_mode():
        full = net(mix)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = net(mix)
        half = copy.deepcopy(net).half()(mix)
    assert autocast.dtype == half.dtype == torch.float32
    assert np.min(sdr(full[0].numpy(), autocast[0].numpy())) > 25
    assert np.min(sdr(full[0].numpy(), half[0].numpy())) > 40


# --- config -------------------------------------------------------------------------


def test_config_reads_public_keys_and_ignores_training_ones() -> None:
    config = Mdx23cConfig.from_dict(FULL_SIZE)
    assert config.audio.chunk_size == 261120 and config.audio.dim_t == 256
    assert config.model.scale == (2, 2) and config.model.norm == "InstanceNorm"
    assert config.targets == ("Vocals", "Instrumental")
    single = Mdx23cConfig.from_dict(variant(training={"target_instrument": "Vocals"}))
    assert single.targets == ("Vocals",)


def test_config_defaults_follow_uvr() -> None:
    raw = variant()
    del raw["model"]["norm"], raw["model"]["act"], raw["audio"]["chunk_size"]
    config = Mdx23cConfig.from_dict(raw)
    assert (config.model.norm, config.model.act) == (None, "gelu")
    assert config.audio.chunk_size == 64 * 31


@pytest.mark.parametrize(
    ("section", "key"), [("model", "num_heads"), ("audio", "stft_hop"), ("model", "Growth")]
)
def test_unknown_config_key_is_named(section: str, key: str) -> None:
    raw = variant()
    raw[section][key] = 1
    with pytest.raises(RegistryError, match=f"{section}.{key}"):
        Mdx23cConfig.from_dict(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"norm": "LayerNorm"}, "model.norm 'LayerNorm'"),
        ({"act": "swish"}, "model.act 'swish'"),
        ({"scale": [2]}, "model.scale"),
        ({"num_scales": "5"}, "model.num_scales"),
        ({"norm": "GroupNorm3"}, "multiples of 3"),
        ({"num_subbands": 3}, "audio.dim_f 128 must be a multiple"),
    ],
)
def test_bad_model_values_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        Mdx23cConfig.from_dict(variant(**change))


def test_bad_chunk_and_missing_keys_are_refused() -> None:
    with pytest.raises(RegistryError, match=r"audio\.chunk_size 2000"):
        Mdx23cConfig.from_dict(variant(audio={"chunk_size": 2000}))
    with pytest.raises(RegistryError, match="frames a multiple of 4"):
        Mdx23cConfig.from_dict(variant(audio={"chunk_size": 64 * 30}))
    raw = variant()
    del raw["model"]["growth"]
    with pytest.raises(RegistryError, match=r"missing model\.growth"):
        Mdx23cConfig.from_dict(raw)
    with pytest.raises(RegistryError, match="target_instrument 'Drums'"):
        Mdx23cConfig.from_dict(variant(training={"target_instrument": "Drums"}))
    with pytest.raises(RegistryError, match="'model' section"):
        Mdx23cConfig.from_dict({"audio": SMALL["audio"], "training": SMALL["training"]})


# --- loader ---------------------------------------------------------------------------

CATALOG_CONFIGS = Path(dsu.registry.__file__).parent / "catalog" / "configs"


def write_model(
    tmp_path: Path, raw: dict[str, Any], state: dict[str, torch.Tensor], name: str = "m"
) -> ModelEntry:
    """A checkpoint and an MSST-style YAML (with a ``!!python/tuple``, as MSST writes)."""
    config = tmp_path / f"{name}.yaml"
    text = yaml.safe_dump(raw, sort_keys=False)
    config.write_text(text + "augmentations:\n  mixup_probs: !!python/tuple\n  - 0.2\n  - 0.02\n")
    weights = tmp_path / f"{name}.ckpt"
    torch.save(state, weights)
    return ModelEntry(name=name, arch="mdx23c", weights=(weights,), config=config)


def reference_with_weights(raw: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    reference = build_reference("msst", raw)
    randomise(reference, seed)
    return reference


def test_load_fp16_checkpoint_at_parity(tmp_path: Path) -> None:
    """An fp16-saved checkpoint loads widened to fp32 and runs at parity with the
    reference holding the same (widened) weights; stems are lower-cased."""
    reference = reference_with_weights(SMALL)
    half = {k: v.half() if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    reference.load_state_dict({k: v.float() for k, v in half.items()})
    model = mdx23c.load(write_model(tmp_path, SMALL, half))
    assert model.stems == ["vocals", "instrumental"]
    assert (model.samplerate, model.channels, model.segment) == (44100, 2, 64 * 31)
    assert (model.framing, model.num_overlap, model.batch_size) == ("msst", 4, 1)
    mix = torch.randn(2, 2, 64 * 31, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        got = model(mix)
        expected = reference(mix)
    assert np.min(sdr(expected.flatten(0, 1).numpy(), got.flatten(0, 1).numpy())) >= PARITY_DB


def test_load_then_engine_matches_msst_demix(tmp_path: Path) -> None:
    """Loader + DSU's engine over a whole short track equals MSST's ``demix``."""
    raw = variant(training={"target_instrument": "Vocals"})
    reference = reference_with_weights(raw, seed=4)
    model = mdx23c.load(write_model(tmp_path, raw, reference.state_dict()))
    assert model.stems == ["vocals", "instrumental"]
    mix = 0.5 * torch.randn(2, 7000, generator=torch.Generator().manual_seed(2))
    got = separate_array(model, mix)
    expected = demix(ConfigDict(raw), reference, mix.numpy(), torch.device("cpu"), "mdx23c")
    vocals = expected["Vocals"]
    assert sdr(vocals, got[0].numpy()) >= PARITY_DB
    assert sdr(mix.numpy() - vocals, got[1].numpy()) >= PARITY_DB


def test_any_chunk_length_is_padded_to_a_valid_one(tmp_path: Path) -> None:
    reference = reference_with_weights(SMALL)
    model = mdx23c.load(write_model(tmp_path, SMALL, reference.state_dict()))
    mix = torch.randn(1, 2, 3000)
    with torch.inference_mode():
        out = model(mix)
    assert out.shape == (1, 2, 2, 3000)
    valid = 64 * 47  # the network's next valid length above 3000
    with torch.inference_mode():
        direct = reference(torch.nn.functional.pad(mix, (0, valid - 3000)))
    assert np.min(sdr(direct[0, :, :, :3000].numpy(), out[0].numpy())) >= PARITY_DB


def test_mismatched_checkpoint_names_the_tensor(tmp_path: Path) -> None:
    state = reference_with_weights(SMALL).state_dict()
    del state["final_conv.2.weight"]
    with pytest.raises(RegistryError, match=r"missing key: final_conv\.2\.weight"):
        mdx23c.load(write_model(tmp_path, SMALL, state, "missing"))
    wider = reference_with_weights(variant(num_channels=16)).state_dict()
    with pytest.raises(RegistryError, match=r"first_conv\.weight \(checkpoint \(16, 16, 1, 1\)"):
        mdx23c.load(write_model(tmp_path, SMALL, wider, "wider"))


def test_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    raw = variant(num_heads=8)
    state = reference_with_weights(SMALL).state_dict()
    with pytest.raises(RegistryError, match=r"bad\.yaml: unknown MDX23C key\(s\) model\.num_heads"):
        mdx23c.load(write_model(tmp_path, raw, state, "bad"))


def test_entry_stems_must_match_the_config(tmp_path: Path) -> None:
    entry = write_model(tmp_path, SMALL, reference_with_weights(SMALL).state_dict())
    assert mdx23c.load(replace(entry, stems=("Vocals", "Instrumental"))).stems[0] == "vocals"
    with pytest.raises(RegistryError, match="fix the entry's 'stems'"):
        mdx23c.load(replace(entry, stems=("instrumental", "vocals")))
    with pytest.raises(RegistryError, match="needs the YAML config"):
        mdx23c.load(replace(entry, config=None))


def test_every_shipped_mdx23c_config_builds_the_reference_layout() -> None:
    """The public configs DSU ships parse, and give MSST's keys and shapes (on ``meta``)."""
    found = 0
    for path in sorted(CATALOG_CONFIGS.glob("*.yaml")):
        raw = read_config(path)
        if msst_arch(raw) != "mdx23c":
            continue
        found += 1
        config = Mdx23cConfig.from_dict(raw)
        with torch.device("meta"):
            ours = TfcTdfNet(config.audio, config.model, len(config.targets))
            reference = MsstNet(ConfigDict(raw))
        expected = {k: v.shape for k, v in reference.state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == expected, path.name
    assert found >= 5


def test_tta_comes_from_the_call_or_the_entry(tmp_path: Path) -> None:
    entry = write_model(tmp_path, SMALL, reference_with_weights(SMALL).state_dict())
    assert not mdx23c.load(entry).tta
    assert mdx23c.load(entry, tta=True).tta
    with_option = replace(entry, options={"tta": True})
    assert mdx23c.load(with_option).tta and not mdx23c.load(with_option, tta=False).tta
