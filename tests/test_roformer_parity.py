"""BS-RoFormer / Mel-Band RoFormer parity: DSU's networks against the reference
implementations (audio-separator's UVR copies, MSST's, pymss-core's) on the same random
weights, loaded strictly from the reference's own ``state_dict()``.

audio-separator's copies ignore ``zero_dc`` and ``skip_connection`` (and its Mel-Band
class has no linear transformer and ignores ``mlp_expansion_factor``), so those switches
are checked against MSST, and PoPE against pymss-core (MSST needs the absent PoPE_pytorch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pytest
import torch
import yaml

from dsu.archs.roformer import build, layers, load, parse_model_config
from dsu.archs.roformer.config import IGNORED_KEYS
from dsu.archs.roformer.mel_band_roformer import mel_band_support
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry
from helpers import sdr
from roformer_configs import HOP, TINY_BS, TINY_MEL, VIPERX_EP317, audio, ours_like, reference

PARITY_DB = 60.0

# The references probe their STFT size with a window-less torch.stft when built.
pytestmark = pytest.mark.filterwarnings("ignore:A window was not provided:UserWarning")


def compare(package: str, arch: str, config: dict[str, Any], mix: torch.Tensor) -> float:
    """SDR (dB) of DSU's output against the reference's for the same weights and input."""
    ref, ours = ours_like(package, arch, config)
    with torch.inference_mode():
        expected, got = ref(mix), ours(mix)
    if expected.dim() == got.dim() + 1 and expected.shape[1] == 1:
        expected = expected[:, 0]  # MSST's BS-RoFormer keeps a one-stem axis
    assert got.shape == expected.shape
    return sdr(expected, got)


def case(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {**base, **overrides}


BS_CASES = {
    "uvr-plain": ("audio-separator", case(TINY_BS, zero_dc=False)),
    "uvr-stereo": ("audio-separator", case(TINY_BS, zero_dc=False, stereo=True)),
    "uvr-linear": ("audio-separator", case(TINY_BS, zero_dc=False, linear_transformer_depth=1)),
    "uvr-mlp2": ("audio-separator", case(TINY_BS, zero_dc=False, mlp_expansion_factor=2)),
    "uvr-3stems": ("audio-separator", case(TINY_BS, zero_dc=False, stereo=True, num_stems=3)),
    "uvr-maskdepth1": ("audio-separator", case(TINY_BS, zero_dc=False, mask_estimator_depth=1)),
    "uvr-unsorted-bands": (
        "audio-separator",
        case(TINY_BS, zero_dc=False, freqs_per_bands=(8, 4, 25, 4, 16, 8)),
    ),
    "msst-zero-dc": ("msst", case(TINY_BS)),
    "msst-skip-linear": (
        "msst",
        case(TINY_BS, skip_connection=True, linear_transformer_depth=1, stereo=True, num_stems=2),
    ),
    "msst-depth3": ("msst", case(TINY_BS, depth=3, time_transformer_depth=2, skip_connection=True)),
    "pymss-plain": ("pymss-core", case(TINY_BS, zero_dc=True)),
    "pymss-pope": (
        "pymss-core",
        case(TINY_BS, zero_dc=False, use_pope=True, stereo=True, num_stems=2),
    ),
    "pymss-pope-skip": (
        "pymss-core",
        case(TINY_BS, zero_dc=True, use_pope=True, skip_connection=True),
    ),
}

MEL_CASES = {
    "uvr-plain": ("audio-separator", case(TINY_MEL, zero_dc=False)),
    "uvr-stereo-2stems": (
        "audio-separator",
        case(TINY_MEL, zero_dc=False, stereo=True, num_stems=2),
    ),
    "uvr-maskdepth2": ("audio-separator", case(TINY_MEL, zero_dc=False, mask_estimator_depth=2)),
    "msst-zero-dc": ("msst", case(TINY_MEL)),
    "msst-linear-skip-mlp2": (
        "msst",
        case(
            TINY_MEL,
            linear_transformer_depth=1,
            skip_connection=True,
            mlp_expansion_factor=2,
            stereo=True,
        ),
    ),
    "msst-48k-maskdepth0": ("msst", case(TINY_MEL, sample_rate=48_000, mask_estimator_depth=0)),
    # pymss-core counts the mask MLP's hidden layers as depth - 1 unless told otherwise.
    "pymss-plain": ("pymss-core", case(TINY_MEL, mlp_hidden_layers=1)),
}


@pytest.mark.parametrize("name", list(BS_CASES))
def test_bs_roformer_matches_reference(name: str) -> None:
    package, config = BS_CASES[name]
    mix = audio(2 if config["stereo"] else 1)
    assert compare(package, "bs_roformer", config, mix) >= PARITY_DB


def test_shared_bias_matches_pymss() -> None:
    """The "SW" / "Logic" layout: one pair of projection biases behind every attention
    layer, listed first in the state dict under its graph-node names."""
    config = case(TINY_BS, zero_dc=True, use_shared_bias=True, stereo=True, num_stems=2)
    ref = reference("pymss-core", "bs_roformer", config)
    with torch.no_grad():  # the reference starts them at ones; any values must carry over
        ref.linear_62_bias_0.normal_()
        ref.linear_64_bias_0.normal_()
    ours = build("bs_roformer", config).eval()
    state = ref.state_dict()
    assert list(ours.state_dict()) == list(state)
    ours.load_state_dict(state, strict=True)
    attentions = [t.layers[0][0] for pair in ours.layers for t in pair]
    assert all(a.to_qkv.bias is ours.linear_62_bias_0 for a in attentions)
    assert all(a.to_out[0].bias is ours.linear_64_bias_0 for a in attentions)
    mix = audio(2)
    with torch.inference_mode():
        assert sdr(ref(mix), ours(mix)) >= PARITY_DB


@pytest.mark.parametrize("name", list(MEL_CASES))
def test_mel_band_roformer_matches_reference(name: str) -> None:
    package, config = MEL_CASES[name]
    mix = audio(2 if config["stereo"] else 1)
    assert compare(package, "mel_band_roformer", config, mix) >= PARITY_DB


@pytest.mark.parametrize("package", ["audio-separator", "msst"])
def test_mel_band_roformer_matches_input_length(package: str) -> None:
    config = case(TINY_MEL, zero_dc=package == "msst", match_input_audio_length=True)
    mix = audio(1)[..., : 37 * HOP + 11]
    ref, ours = ours_like(package, "mel_band_roformer", config)
    with torch.inference_mode():
        expected, got = ref(mix), ours(mix)
    assert got.shape == mix.shape
    assert sdr(expected, got) >= PARITY_DB


def test_bs_roformer_returns_input_length() -> None:
    config = case(TINY_BS, stereo=True, num_stems=2)
    mix = audio(2)[..., : 41 * HOP + 5]
    ref, ours = ours_like("msst", "bs_roformer", config)
    with torch.inference_mode():
        expected, got = ref(mix), ours(mix)
    assert got.shape == (2, 2, 2, mix.shape[-1])
    assert sdr(expected, got) >= PARITY_DB


@pytest.mark.parametrize(
    ("arch", "base"), [("bs_roformer", TINY_BS), ("mel_band_roformer", TINY_MEL)]
)
def test_layers_cut_into_cpu_slices_match_the_reference(
    arch: str, base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny slice budget the attention and feed-forward layers run in many slices
    of independent tokens, as a full-size chunk's do on the CPU, and still match."""
    cuts: list[tuple[int | None, tuple[int, int]]] = []
    whole = layers.cpu_slice

    def recorded(x: torch.Tensor, width: int, seq_dim: int | None = None) -> tuple[int, int] | None:
        cut = whole(x, width, seq_dim)
        if cut is not None:
            cuts.append((seq_dim, cut))
        return cut

    monkeypatch.setattr(layers, "CPU_SLICE_BYTES", 8192)
    monkeypatch.setattr(layers, "cpu_slice", recorded)
    config = case(base, zero_dc=False, stereo=True)
    assert compare("audio-separator", arch, config, audio(2)) >= PARITY_DB
    assert {seq_dim for seq_dim, _ in cuts} >= {None, 1, 2}  # feed-forward, time, frequency
    assert all(axis != seq_dim for seq_dim, (axis, _) in cuts)


@pytest.mark.slow
def test_full_size_viperx_ep317_matches_audio_separator() -> None:
    """The published viperx BS-RoFormer config (dim 512, depth 12, 62 bands, hop 441)."""
    torch.manual_seed(0)
    mix = 0.3 * torch.randn(1, 2, 441 * 24)
    assert compare("audio-separator", "bs_roformer", VIPERX_EP317 | {"zero_dc": False}, mix) >= (
        PARITY_DB
    )


def test_batch_items_are_independent() -> None:
    config = case(TINY_MEL, stereo=True, num_stems=2, linear_transformer_depth=1)
    net = build("mel_band_roformer", config).eval()
    mix = audio(2, batch=3)
    with torch.inference_mode():
        whole = net(mix)
        single = net(mix[1:2])
    assert sdr(single[0], whole[1]) >= PARITY_DB


def test_forward_under_autocast_keeps_fp32_spectra() -> None:
    net = build("bs_roformer", case(TINY_BS, stereo=True)).eval()
    mix = audio(2)
    with torch.inference_mode():
        full = net(mix)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(mix)
    assert low.dtype == torch.float32
    assert sdr(full, low) >= 20


@pytest.mark.parametrize("arch", ["bs_roformer", "mel_band_roformer"])
def test_the_residual_stream_stays_fp32_under_autocast(arch: str) -> None:
    """Only the layers compute in bf16: what every transformer takes and hands on (the
    running sum of all layer outputs) keeps fp32's mantissa."""
    tiny = TINY_BS if arch == "bs_roformer" else TINY_MEL
    net = build(arch, case(tiny, stereo=True, linear_transformer_depth=1)).eval()
    seen: list[torch.dtype] = []

    def record(_: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen.extend([inputs[0].dtype, out.dtype])

    for module in net.modules():
        if isinstance(module, layers.Transformer):
            module.register_forward_hook(record)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(audio(2))
    assert len(seen) >= 6
    assert set(seen) == {torch.float32}


def test_network_trains() -> None:
    """The in-place rotary and mask steps keep autograd intact."""
    net = build("bs_roformer", case(TINY_BS, linear_transformer_depth=1, skip_connection=True))
    net(audio(1)).square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "bands"),
    [
        (44_100, 2048, 60),
        (44_100, 2048, 64),
        (48_000, 2048, 60),
        (44_100, 4096, 128),
        (44_100, 256, 12),
    ],
)
def test_mel_bands_equal_librosa(sample_rate: int, n_fft: int, bands: int) -> None:
    expected = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=bands) > 0
    np.testing.assert_array_equal(mel_band_support(sample_rate, n_fft, bands), expected)


def test_mel_bands_follow_fmin_fmax() -> None:
    expected = librosa.filters.mel(sr=44_100, n_fft=2048, n_mels=32, fmin=30.0, fmax=16_000.0) > 0
    np.testing.assert_array_equal(mel_band_support(44_100, 2048, 32, 30.0, 16_000.0), expected)


def test_training_only_keys_are_accepted_without_effect() -> None:
    plain = parse_model_config("bs_roformer", TINY_BS)
    noisy = parse_model_config(
        "bs_roformer", TINY_BS | {key: VIPERX_EP317.get(key, True) for key in IGNORED_KEYS}
    )
    assert noisy == plain


def test_defaults_are_msst_defaults() -> None:
    bs = parse_model_config("bs_roformer", {"dim": 8, "depth": 1})
    mel = parse_model_config("mel_band_roformer", {"dim": 8, "depth": 1})
    assert (bs.zero_dc, bs.mask_estimator_depth, bs.match_input_audio_length) == (True, 2, True)
    assert (mel.zero_dc, mel.mask_estimator_depth, mel.num_bands) == (True, 1, 60)
    assert not mel.match_input_audio_length


@pytest.mark.parametrize(
    ("arch", "model", "named"),
    [
        ("bs_roformer", TINY_BS | {"bogus_width": 3}, "model.bogus_width"),
        ("mel_band_roformer", TINY_MEL | {"freqs_per_bands": (1, 2)}, "model.freqs_per_bands"),
        ("bs_roformer", {"depth": 2}, "model.dim"),
        ("bs_roformer", TINY_BS | {"heads": "8"}, "model.heads"),
        ("bs_roformer", TINY_BS | {"stereo": 1}, "model.stereo"),
        ("bs_roformer", TINY_BS | {"freqs_per_bands": (4, 4)}, "model.freqs_per_bands"),
        ("bs_roformer", TINY_BS | {"stft_window_fn": "hamming"}, "model.stft_window_fn"),
        ("mel_band_roformer", TINY_MEL | {"fmax": 30_000}, "model.fmax"),
        ("mel_band_roformer", TINY_MEL | {"use_shared_bias": True}, "model.use_shared_bias"),
        (
            "bs_roformer",
            TINY_BS | {"use_shared_bias": True, "linear_transformer_depth": 1},
            "model.use_shared_bias",
        ),
    ],
)
def test_bad_config_names_the_key(arch: str, model: dict[str, Any], named: str) -> None:
    with pytest.raises(RegistryError, match=named.replace(".", r"\.")):
        parse_model_config(arch, model)


def write_model(
    tmp_path: Path, arch: str, config: dict[str, Any], **yaml_extra: Any
) -> tuple[ModelEntry, torch.nn.Module]:
    """An MSST-layout model (YAML + ``.ckpt``) with a target instrument, and its net;
    ``yaml_extra`` keys go into the YAML's ``model:`` only."""
    net = build(arch, config).eval()
    weights = tmp_path / "model.ckpt"
    torch.save(net.state_dict(), weights)
    model = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    yaml_config = {
        "audio": {"chunk_size": 64 * HOP, "num_channels": 2, "sample_rate": 44_100},
        "model": model | yaml_extra,
        "training": {"instruments": ["Vocals", "other"], "target_instrument": "Vocals"},
        "inference": {"num_overlap": 2, "batch_size": 1},
    }
    config_path = tmp_path / "model.yaml"
    config_path.write_text(yaml.safe_dump(yaml_config), encoding="utf-8")
    return ModelEntry(name="tiny", arch=arch, weights=(weights,), config=config_path), net


@pytest.mark.parametrize(
    ("arch", "base"), [("bs_roformer", TINY_BS), ("mel_band_roformer", TINY_MEL)]
)
def test_load_wraps_the_checkpoint(tmp_path: Path, arch: str, base: dict[str, Any]) -> None:
    entry, net = write_model(tmp_path, arch, base | {"stereo": True})
    model = load(entry)
    assert (model.stems, model.samplerate, model.segment) == (["vocals", "other"], 44_100, 2048)
    mix = audio(2, hops=64)
    with torch.inference_mode():
        out = model.forward(mix)
        vocals = net(mix)
        ragged = model.forward(mix[..., :-7])  # not a multiple of the hop
    assert out.shape == (2, 2, 2, mix.shape[-1])
    assert sdr(vocals, out[:, 0]) >= PARITY_DB
    assert torch.allclose(out[:, 0] + out[:, 1], mix, atol=1e-5)
    assert ragged.shape == (2, 2, 2, mix.shape[-1] - 7)


def test_load_names_a_misshapen_tensor(tmp_path: Path) -> None:
    entry, net = write_model(tmp_path, "bs_roformer", TINY_BS | {"stereo": True})
    state = net.state_dict()
    state["band_split.to_features.2.1.weight"] = torch.zeros(32, 31)
    torch.save(state, entry.weights[0])
    with pytest.raises(RegistryError, match=r"band_split\.to_features\.2\.1\.weight"):
        load(entry)


def test_load_names_the_file_and_key(tmp_path: Path) -> None:
    entry, _ = write_model(tmp_path, "mel_band_roformer", TINY_MEL, numbands=4)
    with pytest.raises(RegistryError, match=r"model\.yaml.*model\.numbands"):
        load(entry)
