"""Demucs parity: DSU's engine against ``demucs.apply.apply_model`` on the same weights.

The reference is ``demucs.api.Separator.separate_tensor``'s arithmetic: standardise by
the mono mix's mean and std, ``apply_model(shifts=0, split=True, overlap=0.25)``, undo.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from demucs.apply import BagOfModels, apply_model

from dsu.archs import demucs as demucs_family
from dsu.archs.base import Bag
from dsu.engine import EngineOptions, separate_array
from dsu.registry.entry import ModelEntry
from helpers import sdr
from tiny_demucs import SOURCES, tiny_net, write_package


def reference(model: torch.nn.Module, mix: torch.Tensor, **kwargs: object) -> torch.Tensor:
    ref = mix.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    with torch.no_grad():
        out = apply_model(model, ((mix - mean) / std)[None], shifts=0, overlap=0.25, **kwargs)
    return out[0] * std + mean


@pytest.fixture(scope="module")
def mix() -> torch.Tensor:
    torch.manual_seed(1)
    # 2.5 s: several chunks, a short last chunk, and a length no segment divides.
    return 0.3 * torch.randn(2, 110_263)


def load_entry(tmp_path: Path, nets: list[torch.nn.Module], **options: object) -> object:
    paths = tuple(write_package(n, tmp_path, f"sig{i}") for i, n in enumerate(nets))
    entry = ModelEntry("tiny", "demucs", weights=paths, stems=tuple(SOURCES), options=options)
    return demucs_family.load(entry)


@pytest.mark.parametrize("backend", ["auto", "openvino"])
@pytest.mark.parametrize("kind", ["htdemucs", "hdemucs", "demucs"])
def test_each_demucs_class_matches_apply_model(
    kind: str, backend: str, mix: torch.Tensor, tmp_path: Path
):
    """``openvino`` (in the test extra) runs an HTDemucs only: the others stay on ``auto``."""
    if backend == "openvino" and kind != "htdemucs":
        backend = "auto"
    net = tiny_net(kind).eval()
    model = load_entry(tmp_path, [net])
    expected = reference(net, mix)
    assert sdr(expected, separate_array(model, mix, options=EngineOptions(backend=backend))) >= 60
    # Batching chunks changes the order of float work, not the result.
    batched = separate_array(model, mix, options=EngineOptions(batch_size=4, backend=backend))
    assert sdr(expected, batched) >= 60


def test_bag_matches_apply_model(mix: torch.Tensor, tmp_path: Path):
    nets = [tiny_net("htdemucs", 0).eval(), tiny_net("hdemucs", 1).eval()]
    weights = [[1.0, 1.0, 0.0, 0.5], [0.0, 1.0, 1.0, 1.0]]
    model = load_entry(tmp_path, nets, weights=weights)
    assert isinstance(model, Bag)
    expected = reference(BagOfModels(nets, weights), mix)
    assert sdr(expected, separate_array(model, mix)) >= 60


@pytest.mark.parametrize("backend", ["auto", "openvino"])
def test_segment_override_matches_apply_model(backend: str, mix: torch.Tensor, tmp_path: Path):
    net = tiny_net("htdemucs").eval()
    model = load_entry(tmp_path, [net])
    expected = reference(net, mix, segment=0.5)
    got = separate_array(model, mix, options=EngineOptions(segment=0.5, backend=backend))
    assert sdr(expected, got) >= 60


def test_one_stem_from_a_bag_runs_one_model(mix: torch.Tensor, tmp_path: Path):
    """Like htdemucs_ft: each member owns one stem, so one stem costs one member."""
    nets = [tiny_net("htdemucs", seed).eval() for seed in range(4)]
    weights = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    bag = load_entry(tmp_path, nets, weights=weights)
    calls = [0] * 4
    for index, member in enumerate(bag.members):
        member.net.register_forward_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
    # torch's backend: the hooks count calls of the torch network itself.
    vocals = separate_array(bag, mix, stems=["vocals"], options=EngineOptions(backend="torch"))
    assert calls[:3] == [0, 0, 0] and calls[3] > 0
    assert sdr(reference(nets[3], mix)[3], vocals[0]) >= 60


def test_shifts_are_seeded_and_average_passes(mix: torch.Tensor, tmp_path: Path):
    net = tiny_net("hdemucs").eval()
    model = load_entry(tmp_path, [net])
    first = separate_array(model, mix, options=EngineOptions(shifts=2, seed=3))
    again = separate_array(model, mix, options=EngineOptions(shifts=2, seed=3))
    other = separate_array(model, mix, options=EngineOptions(shifts=2, seed=4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # Shifted passes still estimate the same stems: close to the unshifted output.
    assert sdr(separate_array(model, mix), first) > 10


def test_diffq_quantized_package_loads_like_demucs(mix: torch.Tensor, tmp_path: Path):
    """``mdx_q``-style checkpoints: a diffq-quantized state in the same package format."""
    from demucs.states import load_model
    from diffq import DiffQuantizer

    net = tiny_net("hdemucs", 5)
    quantizer = DiffQuantizer(net, min_size=0.0001, group_size=8)
    state = quantizer.get_quantized_state()
    state["__quantized"] = True
    path = write_package(net, tmp_path, "q0000000", state)
    entry = ModelEntry("tiny_q", "demucs", weights=(path,), stems=tuple(SOURCES))
    ours = demucs_family.load(entry)
    theirs = load_model(path).eval()
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.net.state_dict()[key], value), key
    assert sdr(reference(theirs, mix), separate_array(ours, mix)) >= 60


def test_htdemucs_on_the_cpu_is_channels_last_and_matches(mix: torch.Tensor, tmp_path: Path):
    net = tiny_net("htdemucs").eval()
    expected = reference(net, mix)
    model = load_entry(tmp_path, [net]).to(torch.device("cpu"))
    convs = [p for p in model.net.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert sdr(expected, separate_array(model, mix)) >= 60
