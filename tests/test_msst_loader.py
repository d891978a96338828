"""The MSST loader toolkit: configs, checkpoints, strict loading and the model wrapper."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dsu.archs.msst import (
    MsstModel,
    config_stems,
    load_strict,
    read_config,
    read_state_dict,
)
from dsu.engine import EngineOptions, separate_array
from dsu.errors import DSUError, RegistryError

CONFIG = """\
audio:
  chunk_size: 400
  num_channels: 2
  sample_rate: 44100
model:
  dim: 8
  freqs_per_bands: !!python/tuple
  - 2
  - 4
  nested: !!python/tuple [[1, 2], !!python/tuple [3]]
training:
  instruments: [vocals, other]
  target_instrument: vocals
inference:
  batch_size: 3
  num_overlap: 2
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_config_builds_tuples(tmp_path: Path):
    config = read_config(write(tmp_path / "m.yaml", CONFIG))
    assert config["model"]["freqs_per_bands"] == (2, 4)
    assert config["model"]["nested"] == ([1, 2], (3,))
    assert config["training"]["instruments"] == ["vocals", "other"]


def test_read_config_refuses_python_objects(tmp_path: Path):
    marker = tmp_path / "created"
    text = CONFIG + f"evil: !!python/object/apply:os.mkdir [{str(marker)!r}]\n"
    path = write(tmp_path / "evil.yaml", text)
    with pytest.raises(RegistryError, match="tag DSU does not construct") as info:
        read_config(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    path = write(tmp_path / "obj.yaml", CONFIG + "x: !!python/object:argparse.Namespace {}\n")
    with pytest.raises(RegistryError, match="python/object"):
        read_config(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("model: [unclosed\n", "not valid YAML"),
        ("- a list\n", "mapping"),
        ("audio: {chunk_size: 4}\n", "no model: section"),
        ("model: {dim: 4}\n", "no audio: section"),
    ],
)
def test_read_config_errors_name_the_file(tmp_path: Path, text: str, problem: str):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(RegistryError, match=problem) as info:
        read_config(path)
    assert str(path) in str(info.value)
    with pytest.raises(RegistryError, match="cannot read"):
        read_config(tmp_path / "absent.yaml")


def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"conv.weight": torch.randn(4, 2, 3), "conv.bias": torch.randn(4)}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 3, "hyper": {"lr": 0.1}},
        lambda s: {"model_state_dict": s, "meta": {"target_instrument": "vocals"}},
        lambda s: {"model": s},
        lambda s: {"state": {"state_dict": s}},
        lambda s: {f"module.{k}": v for k, v in s.items()},
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
    ],
)
def test_wrappers_are_unwrapped(tmp_path: Path, wrap):
    path = tmp_path / "w.ckpt"
    torch.save(wrap(state()), path)
    loaded = read_state_dict(path)
    assert loaded.keys() == state().keys()
    for key, value in state().items():
        assert torch.equal(loaded[key], value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_become_fp32(tmp_path: Path, dtype: torch.dtype):
    half = {k: v.to(dtype) for k, v in state().items()}
    half["steps"] = torch.tensor([7])  # integer buffers keep their type
    torch.save(half, tmp_path / "h.pth")
    save_file(half, tmp_path / "h.safetensors")
    for name in ("h.pth", "h.safetensors"):
        loaded = read_state_dict(tmp_path / name)
        assert loaded["conv.weight"].dtype == torch.float32
        assert torch.equal(loaded["conv.weight"], half["conv.weight"].float())
        assert loaded["steps"].dtype == torch.int64


class Planted:
    """Pickles as a call to ``os.mkdir``: loading it unsafely would create a directory."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_pickled_objects_are_refused(tmp_path: Path):
    marker = tmp_path / "created"
    path = tmp_path / "planted.ckpt"
    torch.save({"state_dict": state(), "callback": Planted(marker)}, path)
    with pytest.raises(RegistryError, match="pickled objects") as info:
        read_state_dict(path)
    assert str(path) in str(info.value) and "mkdir" in str(info.value)
    assert not marker.exists()
    torch.save({"state_dict": state(), "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(RegistryError, match=r"pickled objects \(argparse.Namespace\)"):
        read_state_dict(path)


def test_damaged_checkpoints_are_named(tmp_path: Path):
    whole = tmp_path / "whole.ckpt"
    torch.save(state(), whole)
    data = whole.read_bytes()
    cases = {
        "truncated.ckpt": (data[: len(data) // 2], "truncated"),
        "empty.ckpt": (b"", "empty"),
        "garbage.pth": (b"not a checkpoint at all " * 20, "not a PyTorch checkpoint"),
        "garbage.safetensors": (b"\x00" * 64, "not a readable .safetensors"),
    }
    for name, (content, problem) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(RegistryError, match=problem) as info:
            read_state_dict(path)
        assert str(path) in str(info.value)
    with pytest.raises(RegistryError, match="not found"):
        read_state_dict(tmp_path / "absent.ckpt")
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "empty_state.ckpt")
    with pytest.raises(RegistryError, match="no state dict"):
        read_state_dict(tmp_path / "empty_state.ckpt")


class Net(torch.nn.Module):
    def __init__(self, out_channels: int = 4) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(2, out_channels, 3, padding=1)
        self.norm = torch.nn.BatchNorm1d(out_channels)


def test_load_strict_copies_matching_weights(tmp_path: Path):
    net = Net()
    full = {**Net().state_dict(), **state()}
    load_strict(net, full, tmp_path / "w.ckpt")
    assert torch.equal(net.conv.weight, state()["conv.weight"])


def test_load_strict_reports_every_kind_of_mismatch(tmp_path: Path):
    given = Net(out_channels=6).state_dict()
    del given["norm.running_var"]
    given["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.ckpt"
    with pytest.raises(RegistryError) as info:
        load_strict(Net(), given, path)
    message = str(info.value)
    assert str(path) in message
    assert "1 missing key: norm.running_var" in message
    assert "1 unexpected key: extra.weight" in message
    assert "conv.weight (checkpoint (6, 2, 3), network (4, 2, 3))" in message
    assert "5 mismatched-shape keys" in message  # conv.weight/bias, norm.weight/bias/mean
    # Long lists are cut: the count says how many there are.
    with pytest.raises(RegistryError, match=r"7 missing keys: conv\.weight, .*, \.\.\.\)"):
        load_strict(Net(), {}, path)


def config_dict(**training: object) -> dict:
    return {
        "audio": {"chunk_size": 400, "sample_rate": 22050},
        "model": {},
        "training": {"instruments": ["vocals", "other"], **training},
        "inference": {"num_overlap": 2, "batch_size": 3},
    }


class Scaled(torch.nn.Module):
    """Stems are fixed nonlinear functions of the chunk, one per instrument."""

    def __init__(self, stems: int, squeeze: bool = False) -> None:
        super().__init__()
        self.stems, self.squeeze = stems, squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not symmetric in channels or polarity, so TTA changes the result.
        left = x[:, :1] + 0.1
        out = torch.stack([torch.tanh((k + 1) * x + left) for k in range(self.stems)], 1)
        return out[:, 0] if self.squeeze else out


def test_model_reads_its_config():
    model = MsstModel(Scaled(1), config_dict(target_instrument="vocals"))
    assert (model.samplerate, model.channels, model.segment) == (22050, 2, 400)
    assert (model.num_overlap, model.batch_size, model.framing) == (2, 3, "msst")
    assert model.stems == ["vocals", "other"] and not model.normalize
    settings = config_dict()
    settings["inference"]["chunk_size"] = 300  # as demix: inference's chunk_size wins
    assert MsstModel(Scaled(2), settings).segment == 300


def test_residual_stem_is_mixture_minus_target():
    torch.manual_seed(0)
    mix = 0.4 * torch.randn(3, 2, 400)
    for net in (Scaled(1), Scaled(1, squeeze=True), Scaled(2)):  # [B,S,C,T], [B,C,T], all
        model = MsstModel(net, config_dict(target_instrument="vocals"))
        out = model(mix)
        assert out.shape == (3, 2, 2, 400)
        assert torch.equal(out[:, 0], Scaled(1)(mix)[:, 0])  # the target, picked out
        assert torch.equal(out[:, 1], mix - out[:, 0])
    # A network that returns every instrument has the target picked by its index.
    other = MsstModel(Scaled(2), config_dict(target_instrument="other"))
    assert other.stems == ["other", "vocals"]
    assert torch.equal(other(mix)[:, 0], Scaled(2)(mix)[:, 1])
    # Through the engine (overlap-add, mirrored borders) the identity holds on the track.
    track = 0.4 * torch.randn(2, 1777)
    stems = separate_array(model, track, options=EngineOptions(batch_size=2))
    torch.testing.assert_close(stems[0] + stems[1], track, rtol=0, atol=1e-6)


def test_no_residual_without_exactly_one_other_stem():
    settings = config_dict(target_instrument="vocals")
    settings["training"]["instruments"] = ["vocals", "drums", "bass"]
    model = MsstModel(Scaled(3), settings)
    assert model.stems == ["vocals"]
    assert model(torch.zeros(1, 2, 400)).shape == (1, 1, 2, 400)
    assert MsstModel(Scaled(2), config_dict()).stems == ["vocals", "other"]


def test_tta_averages_channel_swap_and_polarity_inversion():
    torch.manual_seed(1)
    mix = 0.4 * torch.randn(2, 2, 400)
    net = Scaled(2)
    out = MsstModel(net, config_dict(), tta=True)(mix)
    expected = (net(mix) + net(mix.flip(1)).flip(2) - net(-mix)) / 3
    assert torch.equal(out, expected)
    assert not torch.allclose(out, net(mix), atol=1e-3)


def test_normalize_flag_comes_from_the_config():
    settings = config_dict()
    settings["inference"]["normalize"] = True
    assert MsstModel(Scaled(2), settings).normalize


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda c: c["audio"].pop("sample_rate"), "audio.sample_rate"),
        (lambda c: c["audio"].pop("chunk_size"), "audio.chunk_size"),
        (lambda c: c["inference"].update(num_overlap=0), "inference.num_overlap"),
        (lambda c: c["inference"].update(num_overlap=500), "exceeds the chunk size"),
        (lambda c: c["training"].update(target_instrument="bass"), "not one of"),
        (lambda c: c["training"].update(instruments="vocals"), "list of stem names"),
    ],
)
def test_bad_configs_are_registry_errors(edit, problem: str):
    settings = config_dict()
    edit(settings)
    with pytest.raises(RegistryError, match=problem) as info:
        MsstModel(Scaled(2), settings, source="m.yaml")
    assert "m.yaml" in str(info.value)


def test_network_that_disagrees_with_the_config_is_reported():
    model = MsstModel(Scaled(3), config_dict(), source="m.yaml")
    with pytest.raises(DSUError, match="expected 2 stem"):
        model(torch.zeros(1, 2, 400))


def test_config_stems():
    assert config_stems(config_dict()) == ["vocals", "other"]
    assert config_stems(config_dict(target_instrument="other")) == ["other", "vocals"]
    assert config_stems(
        {"training": {"instruments": ("a", "b", "c"), "target_instrument": "b"}}
    ) == ["b"]
    with pytest.raises(RegistryError, match=r"x\.yaml"):
        config_stems({"model": {}}, "x.yaml")
