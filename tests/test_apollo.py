"""Apollo restoration: the network against the official output and MSST's copy of the
reference class, both checkpoint layouts, the config's strictness, exact chunking on the
engine and resampling of a 48 kHz input.

Random-weight checkpoints are written at test time; the official output for one of them
is the shared test vector (``../shared/models/apollo``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
import yaml

from dsu.api import Separator
from dsu.archs import apollo
from dsu.archs.apollo import Apollo, ApolloConfig, ApolloModel
from dsu.archs.apollo.network import context_frames
from dsu.engine.options import EngineOptions
from dsu.engine.overlap_add import separate_array
from dsu.errors import RegistryError
from dsu.metrics import sdr
from dsu.registry.entry import ModelEntry

PARITY_DB = 60.0
RATE = 44_100
SMALL = ApolloConfig(feature_dim=16, layer=1)
DEFAULT = ApolloConfig()


def random_net(config: ApolloConfig, seed: int = 0) -> Apollo:
    """A network with every parameter random (norm gains and biases included)."""
    torch.manual_seed(seed)
    net = Apollo(config)
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return net.eval()


def noise(seconds: float, channels: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(channels, int(seconds * RATE), generator=generator)


def whole(net: Apollo, x: torch.Tensor) -> torch.Tensor:
    """One forward pass over the whole ``[C, T]`` signal."""
    with torch.inference_mode():
        return net(x[None])[0]


def msst_yaml(config: ApolloConfig, **extra_model: Any) -> dict[str, Any]:
    """A config as MSST's configs/config_apollo.yaml is laid out."""
    return {
        "audio": {"chunk_size": 132300, "num_channels": 2, "sample_rate": 44100, "min_mean_abs": 0},
        "model": {
            "sr": config.sr,
            "win": config.win,
            "feature_dim": config.feature_dim,
            "layer": config.layer,
            **extra_model,
        },
        "training": {
            "instruments": ["restored", "addition"],
            "target_instrument": "restored",
            "model_type": "apollo",
            "use_amp": True,
        },
        "inference": {"batch_size": 4, "num_overlap": 4},
    }


def write_official(net: torch.nn.Module, path: Path) -> Path:
    """``BaseModel.serialize()`` as look2hear writes ``pytorch_model.bin``."""
    torch.save(
        {
            "model_name": "Apollo",
            "state_dict": net.state_dict(),
            "model_args": {"n_sample_rate": 2},
            "infos": {
                "software_versions": {
                    "torch_version": torch.__version__,  # a TorchVersion object
                    "pytorch_lightning_version": "2.4.0",
                }
            },
        },
        path,
    )
    return path


def write_msst(
    net: torch.nn.Module, folder: Path, wrap: str = "bare", name: str = "apollo_model"
) -> tuple[Path, Path]:
    """An MSST ``.ckpt`` (bare state dict, ``{"state_dict": ...}`` or a Lightning
    checkpoint with its discriminator) and its ``.yaml``."""
    state = net.state_dict()
    payload: object = state
    if wrap == "state_dict":
        payload = {"state_dict": state}
    elif wrap == "lightning":
        lightning = {f"audio_model.{k}": v for k, v in state.items()}
        lightning["discriminator.conv.weight"] = torch.zeros(4, 1, 3)
        payload = {"epoch": 3, "global_step": 10, "state_dict": lightning}
    weights, config = folder / f"{name}.ckpt", folder / f"{name}.yaml"
    torch.save(payload, weights)
    config.write_text(yaml.safe_dump(msst_yaml(net.config)))
    return weights, config


def entry(weights: Path, config: Path | None = None, **options: Any) -> ModelEntry:
    return ModelEntry(
        name="apollo-test", arch="apollo", weights=(weights,), config=config, options=options
    )


def local_sdr(reference: torch.Tensor, estimate: torch.Tensor, window: int = RATE // 10) -> float:
    """The worst SDR over consecutive ``window``-sample pieces of ``[C, T]`` signals."""
    ref, est = reference.numpy(), estimate.numpy()
    return min(
        sdr(ref[:, i : i + window], est[:, i : i + window]) for i in range(0, ref.shape[-1], window)
    )


# --- the network ---------------------------------------------------------------------


@pytest.mark.shared
def test_official_test_vector(shared_dir: Path) -> None:
    """The random official-layout checkpoint on input_3s.wav gives the official output."""
    folder = shared_dir / "models" / "apollo"
    model = apollo.load(entry(folder / "random_small_official_layout.bin"))
    assert model.net.config == ApolloConfig(feature_dim=32, layer=1)
    mix, rate = sf.read(folder / "input_3s.wav", dtype="float32", always_2d=True)
    reference, _ = sf.read(
        folder / "random_small_reference_output.wav", dtype="float32", always_2d=True
    )
    assert rate == model.samplerate
    x = torch.from_numpy(mix.T.copy())
    assert sdr(reference.T, whole(model.net, x).numpy()) >= PARITY_DB
    # Through the engine (chunked, 1 s chunks) as `dsu restore` runs it.
    chunked = separate_array(model, x, options=EngineOptions(segment=1.0))[0]
    assert local_sdr(torch.from_numpy(reference.T.copy()), chunked) >= PARITY_DB


def test_default_size_matches_msst_reference() -> None:
    """MSST's copy of look2hear's Apollo (identical to the official class) and DSU's
    network, same random weights, same output; the key list is the published one."""
    from msst.models.look2hear.models.apollo import Apollo as Reference

    torch.manual_seed(0)
    reference = Reference(sr=44100, win=20, feature_dim=256, layer=6).eval()
    state = reference.state_dict()
    assert len(state) == 654
    assert sum(v.numel() for k, v in state.items() if not k.endswith("_freq")) == 16_539_308
    net = Apollo(DEFAULT).eval()
    assert list(net.state_dict()) == list(state)
    net.load_state_dict(state, strict=True)
    x = noise(0.1, channels=1)
    with torch.inference_mode():
        expected = reference(x[None])[0]
    assert sdr(expected.numpy(), whole(net, x).numpy()) >= PARITY_DB


def test_channels_are_restored_independently() -> None:
    net = random_net(SMALL)
    x = noise(0.2)
    stereo = whole(net, x)
    for c in range(2):
        assert torch.allclose(whole(net, x[c : c + 1])[0], stereo[c], atol=1e-6)


def test_rope_tables_are_the_reference_tables() -> None:
    """Built in float32 exactly as look2hear builds them (they are loaded anyway)."""
    from msst.models.look2hear.models.apollo import Apollo as Reference

    reference = Reference(sr=44100, win=20, feature_dim=32, layer=1).state_dict()
    ours = Apollo(ApolloConfig(feature_dim=32, layer=1)).state_dict()
    for key in ("net.0.band_net.cos_freq", "net.0.band_net.sin_freq"):
        assert torch.equal(ours[key], reference[key])


# --- checkpoints and configs ---------------------------------------------------------


@pytest.mark.parametrize("config", [SMALL, DEFAULT], ids=["small", "default"])
@pytest.mark.parametrize("layout", ["official", "bare", "state_dict", "lightning"])
def test_checkpoint_layouts(tmp_path: Path, config: ApolloConfig, layout: str) -> None:
    net = random_net(config)
    if layout == "official":
        model = apollo.load(entry(write_official(net, tmp_path / "pytorch_model.bin")))
        assert model.batch_size is None
    else:
        model = apollo.load(entry(*write_msst(net, tmp_path, wrap=layout)))
        assert model.batch_size == 4
    assert model.net.config == config
    assert (model.samplerate, model.channels, model.stems) == (RATE, 2, ["restored"])
    loaded = model.net.state_dict()
    for key, value in net.state_dict().items():
        assert torch.equal(loaded[key], value), key
    if config is SMALL:
        x = noise(0.2)
        assert torch.equal(whole(model.net, x), whole(net, x))


def test_fp16_checkpoint_loads_into_fp32(tmp_path: Path) -> None:
    net = random_net(SMALL)
    half = {k: v.half() for k, v in net.state_dict().items()}
    torch.save(half, tmp_path / "half.ckpt")
    (tmp_path / "half.yaml").write_text(yaml.safe_dump(msst_yaml(SMALL)))
    model = apollo.load(entry(tmp_path / "half.ckpt", tmp_path / "half.yaml"))
    cos = model.net.state_dict()["net.0.band_net.cos_freq"]
    assert cos.dtype == torch.float32
    assert torch.equal(cos, half["net.0.band_net.cos_freq"].float())


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    weights, config = write_msst(random_net(SMALL), tmp_path)
    config.write_text(yaml.safe_dump(msst_yaml(SMALL, heads=8)))
    with pytest.raises(RegistryError, match=r"apollo_model\.yaml.*model\.heads"):
        apollo.load(entry(weights, config))


def test_config_that_disagrees_with_the_checkpoint(tmp_path: Path) -> None:
    weights, config = write_msst(random_net(SMALL), tmp_path)
    config.write_text(yaml.safe_dump(msst_yaml(ApolloConfig(feature_dim=32, layer=1))))
    with pytest.raises(RegistryError, match=r"feature_dim=32.*feature_dim=16"):
        apollo.load(entry(weights, config))


def test_official_layout_at_another_window(tmp_path: Path) -> None:
    """The window is read off the bands; sr/win options must give it."""
    net = random_net(ApolloConfig(sr=48000, feature_dim=16, layer=1))
    weights = write_official(net, tmp_path / "pytorch_model.bin")
    with pytest.raises(RegistryError, match=r"960-sample STFT window.*882"):
        apollo.load(entry(weights))
    model = apollo.load(entry(weights, sr=48000))
    assert (model.samplerate, model.net.config.window) == (48000, 960)


def test_not_an_apollo_checkpoint(tmp_path: Path) -> None:
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.ckpt")
    with pytest.raises(RegistryError, match="not an Apollo checkpoint"):
        apollo.load(entry(tmp_path / "other.ckpt"))


# --- chunking on the engine ----------------------------------------------------------


def test_context_is_the_receptive_field() -> None:
    model = ApolloModel(random_net(DEFAULT), RATE)
    assert context_frames(6) == 56
    assert model.context == 56 * 441  # 0.56 s at 44.1 kHz
    assert model.valid_length(1000, model.segment) == 1000 + 2 * 56 * 441
    assert model.segment % 441 == 0


@pytest.mark.parametrize(
    ("segment", "overlap", "batch"),
    [(0.4, None, 1), (0.2345, None, 2), (0.4, 0.25, 1)],
    ids=["hop-multiple", "odd-length-batched", "overlapped"],
)
def test_chunked_equals_whole(segment: float, overlap: float | None, batch: int) -> None:
    """Everywhere, the track's ends included, wherever the chunks fall."""
    net = random_net(ApolloConfig(feature_dim=16, layer=2))
    model = ApolloModel(net, RATE)
    x = noise(1.0)
    options = EngineOptions(segment=segment, overlap=overlap, batch_size=batch)
    chunked = separate_array(model, x, options=options)[0]
    assert chunked.shape == x.shape
    assert local_sdr(whole(net, x), chunked) >= PARITY_DB


def test_too_little_context_is_not_exact() -> None:
    """The context is needed: with a quarter of it chunk edges show."""
    net = random_net(ApolloConfig(feature_dim=16, layer=2))
    model = ApolloModel(net, RATE)
    model.context //= 4
    x = noise(0.6)
    chunked = separate_array(model, x, options=EngineOptions(segment=0.3))[0]
    assert local_sdr(whole(net, x), chunked) < PARITY_DB


@pytest.mark.parametrize("samples", [300, 442, 5000])
def test_tracks_shorter_than_the_context(samples: int) -> None:
    net = random_net(SMALL)
    model = ApolloModel(net, RATE)
    x = noise(1.0)[:, :samples]
    out = separate_array(model, x)[0]
    assert out.shape == x.shape and torch.isfinite(out).all()
    if samples > SMALL.hop:  # long enough for the STFT: the whole-file output
        assert sdr(whole(net, x).numpy(), out.numpy()) >= PARITY_DB


def test_48k_input_is_resampled_to_the_model_rate(tmp_path: Path) -> None:
    """The 44.1 kHz model sees the input resampled and its output is resampled back: the
    streamed result equals one-shot soxr resampling around a whole-file pass."""
    net = random_net(SMALL)
    weights = write_official(net, tmp_path / "pytorch_model.bin")
    separator = Separator(entry(weights), models_dir=tmp_path, device="cpu")
    t = np.arange(48_000) / 48_000
    x = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 1250 * t)]).astype(np.float32)
    x *= 0.3
    result = separator.separate(x, 48_000)
    assert result.samplerate == 48_000
    out = result.stems["restored"]
    assert out.shape == x.shape
    at_model_rate = soxr.resample(x.T, 48_000, RATE, quality="VHQ").T
    restored = whole(net, torch.from_numpy(np.ascontiguousarray(at_model_rate))).numpy()
    expected = soxr.resample(restored.T, RATE, 48_000, quality="VHQ").T
    assert sdr(expected, out) >= PARITY_DB
    unresampled = whole(net, torch.from_numpy(x)).numpy()
    assert sdr(unresampled, out) < 10.0
