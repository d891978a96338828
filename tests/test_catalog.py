"""The built-in catalog as a whole: larger than pymss' 326 models, every entry pointing at
a family DSU runs, every distinct shipped config building its network and describing its
checkpoints' byte counts, the VR and MDX entries' model data valid, ``dsu models list``
filters through the real CLI, and pull checking sizes and taking a fetched config's stems
(against a real server on loopback).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from dsu.archs.families import family_of
from dsu.archs.mdx.params import MdxParams
from dsu.archs.mdx.params import shipped_model_data as mdx_model_data
from dsu.archs.msst_config import ConfigLoader, config_stems
from dsu.archs.vr import build_net
from dsu.archs.vr.cascaded import CascadedNet
from dsu.archs.vr.nets import CascadedASPPNet, V5Shape
from dsu.archs.vr.params import ModelData, load_params
from dsu.errors import ChecksumMismatch, RegistryError
from dsu.registry import Catalog, Registry, builtin_catalog, pull
from dsu.registry.catalog import CATEGORIES
from test_registry_cli import dsu, user_error
from test_registry_pull import FileServer, sha

PYMSS_MODELS = 326
"""Models in pymss 2.1.12's catalog (``pymss/resources/model_catalog.json``)."""
CATALOG = builtin_catalog()
ENTRIES = CATALOG.entries()


def test_the_catalog_names_more_models_than_pymss() -> None:
    assert len(ENTRIES) > PYMSS_MODELS
    archs = Counter(e.arch for e in ENTRIES)
    # Every architecture of pymss' that DSU runs, plus UVR's ONNX MDX-Net.
    for arch in ("bs_roformer", "mel_band_roformer", "mdx23c", "vr", "apollo", "demucs"):
        assert archs[arch] > 0, arch
    for arch in ("scnet", "scnet_masked", "scnet_tran", "bandit_v2", "htdemucs", "mdx"):
        assert archs[arch] > 0, arch


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_entry_points_at_a_family_dsu_runs(entry) -> None:
    family = family_of(entry.arch)
    assert family is not None and family.module is not None, entry.arch
    assert importlib.util.find_spec(family.module) is not None, family.module
    assert entry.category in CATEGORIES
    assert entry.stems, entry.name
    assert all(url.startswith("https://") for url in entry.url.values()), entry.name
    # The marker agrees with the entry: what it lacks is said.
    assert ("sha256" in entry.unverified) == any(f not in entry.sha256 for f in entry.files)
    stand_in = entry.shipped_config is not None and not entry.verified["config"]
    assert ("config" in entry.unverified) == (entry.config_url is not None or stand_in)
    if stand_in:
        assert "size-consistent), not the published file" in entry.source, entry.name


def test_one_file_is_one_entry() -> None:
    """De-duplicated across the sources: a weights file belongs to one entry, except the
    members of a Demucs bag (also listed alone)."""
    owners: dict[str, list[str]] = {}
    for entry in ENTRIES:
        for file_name in set(entry.weights):
            owners.setdefault(file_name, []).append(entry.name)
    shared = {f: names for f, names in owners.items() if len(names) > 1}
    assert all(CATALOG.get(n).arch == "demucs" for names in shared.values() for n in names)
    assert CATALOG.get("HTDemucs4").name == "htdemucs"  # the same file under pymss' name


def _shipped_configs() -> dict[str, tuple[str, dict, list]]:
    """Each distinct shipped config once: digest -> (arch, config, entries using it)."""
    found: dict[str, tuple[str, dict, list]] = {}
    for entry in ENTRIES:
        if entry.shipped_config is None:
            continue
        data = entry.shipped_config.read_bytes()
        key = hashlib.sha256(data + entry.arch.encode()).hexdigest()
        if key not in found:
            found[key] = (entry.arch, yaml.load(data.decode(), ConfigLoader), [])
        found[key][2].append(entry)
    return found


SHIPPED = _shipped_configs()
SIZE_MISMATCH = {"model-vocals-mel-band-roformer-sdr-8.42"}
"""Entries whose shipped config does not describe the checkpoint's published byte count:
MSST's config_vocals_mel_band_roformer.yaml (the config MSST and MSST-WebUI pair with it)
builds a 276 MB state dict, the file is 135 MB."""
SLACK_PER_TENSOR = 200
"""Bytes per tensor a real checkpoint may carry beyond the measured overhead: 64-byte
alignment of each tensor record and longer record names in older savers (the shipped
checkpoints that fit measure 8 to 140)."""


def _save_overhead(state: dict[str, torch.Tensor]) -> int:
    """What ``torch.save`` adds to the tensor bytes of this state dict: the pickle of its
    keys and the zip records, measured by saving one-element tensors under the same keys."""
    small = {key: torch.zeros(1, dtype=value.dtype) for key, value in state.items()}
    buffer = io.BytesIO()
    torch.save(small, buffer)
    return buffer.tell() - sum(t.element_size() for t in small.values())


def _size_fits(size: int, state: dict[str, torch.Tensor], overhead: int) -> bool:
    """Whether a checkpoint of ``size`` bytes holds this state dict in fp32 or in fp16."""
    for half in (False, True):
        data = sum(
            t.numel() * (2 if half and t.dtype.is_floating_point else t.element_size())
            for t in state.values()
        )
        if 0 <= size - data - overhead <= SLACK_PER_TENSOR * len(state):
            return True
    return False


@pytest.mark.parametrize("key", sorted(SHIPPED), ids=lambda k: f"{SHIPPED[k][0]}-{k[:8]}")
def test_every_shipped_config_builds_its_network(key: str) -> None:
    """...and the network's state dict is what each user's checkpoint holds: its byte count
    (where a source gives one) is the tensors' fp32 or fp16 bytes plus torch.save's
    overhead, strong evidence that the config describes that checkpoint."""
    arch, config, users = SHIPPED[key]
    module = importlib.import_module(family_of(arch).module)
    # On the meta device: full-size networks cost no memory and little time.
    with torch.device("meta"):
        net = module.build_network(config)
    assert isinstance(net, torch.nn.Module)
    assert sum(p.numel() for p in net.parameters()) > 0
    residual = family_of(arch).residual
    state = net.state_dict()
    overhead = _save_overhead(state)
    for entry in users:
        assert list(entry.stems) == config_stems(config, entry.name, residual=residual)
        size = entry.size.get(entry.weights[0])
        if size is not None:
            assert _size_fits(size, state, overhead) != (entry.name in SIZE_MISMATCH), entry.name


def test_the_size_check_tells_a_different_network() -> None:
    """One transformer layer fewer than the config says no longer fits the checkpoint."""
    entry = CATALOG.get("mel-roformer-kj-vocals")
    config = yaml.load(entry.shipped_config.read_text(), ConfigLoader)
    module = importlib.import_module(family_of(entry.arch).module)
    size = entry.size[entry.weights[0]]
    fits = []
    for depth in (config["model"]["depth"], config["model"]["depth"] - 1):
        with torch.device("meta"):
            net = module.build_network({**config, "model": {**config["model"], "depth": depth}})
        state = net.state_dict()
        fits.append(_size_fits(size, state, _save_overhead(state)))
    assert fits == [True, False]


VR_WITH_OPTIONS = [e for e in ENTRIES if e.arch == "vr" and e.options]


@pytest.mark.parametrize("entry", VR_WITH_OPTIONS, ids=lambda e: e.name)
def test_vr_model_data_resolves_and_its_net_builds(entry) -> None:
    data = ModelData.from_dict(entry.options, entry.name)
    params = load_params(data.vr_model_param)
    with torch.device("meta"):
        if data.nout is not None:
            net = CascadedNet(params.bins, data.nout, data.nout_lstm)
            state = net.state_dict()
        else:
            state = CascadedASPPNet(params.bins, V5Shape(16)).state_dict()
        built, v51 = build_net(state, params.bins, data, entry.name)
    assert v51 == (data.nout is not None)
    assert isinstance(built, torch.nn.Module)


def test_mdx_entries_have_valid_parameters() -> None:
    records = mdx_model_data()
    for digest, record in records.items():
        MdxParams.from_model_data(record, digest)
    assert len(records) >= sum(e.arch == "mdx" for e in ENTRIES)


def test_a_bad_category_or_marker_is_refused() -> None:
    raw = {"arch": "mdx23c", "weights": ["w.ckpt"], "url": {"w.ckpt": "https://x/w.ckpt"}}
    with pytest.raises(RegistryError, match="category: 'loud' is not one of vocals"):
        Catalog.from_dict({"version": 1, "models": {"m": {**raw, "category": "loud"}}}, "t")
    lying = {**raw, "verified": {"sha256": True}}
    with pytest.raises(RegistryError, match=r"verified\.sha256: says true but the entry lacks"):
        Catalog.from_dict({"version": 1, "models": {"m": lying}}, "t")
    with pytest.raises(RegistryError, match="size: must be an object"):
        Catalog.from_dict({"version": 1, "models": {"m": {**raw, "size": {"x": 1}}}}, "t")


def test_a_fetched_config_is_never_verified_and_a_stand_in_may_say_so(tmp_path: Path) -> None:
    raw = {"arch": "mdx23c", "weights": ["w.ckpt"], "url": {"w.ckpt": "https://x/w.ckpt"}}
    fetched = {**raw, "config": "w.yaml", "url": {**raw["url"], "w.yaml": "https://x/w.yaml"}}
    with pytest.raises(RegistryError, match=r"verified\.config: says true but the entry lacks"):
        Catalog.from_dict(
            {"version": 1, "models": {"m": {**fetched, "verified": {"config": True}}}}, "t"
        )
    (tmp_path / "w.yaml").write_text(CONFIG)
    shipped = {**raw, "config": "w.yaml"}
    for claim, unverified in ((True, False), (False, True), (None, False)):
        marker = {} if claim is None else {"verified": {"config": claim}}
        catalog = Catalog.from_dict(
            {"version": 1, "models": {"m": {**shipped, **marker}}}, "t", tmp_path
        )
        assert ("config" in catalog.get("m").unverified) == unverified
        assert catalog.get("m").config_url is None


# the real CLI


def _listing(tmp_path: Path, *args: str) -> list[dict]:
    result = dsu("models", "list", "--json", *args, env_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["count"] == len(document["models"])
    return document["models"]


def test_list_filters_and_json(tmp_path: Path) -> None:
    everything = _listing(tmp_path)
    assert len([m for m in everything if m["status"] == "available"]) > PYMSS_MODELS
    dereverb = _listing(tmp_path, "--category", "dereverb")
    assert dereverb and {m["category"] for m in dereverb} == {"dereverb"}
    drums = _listing(tmp_path, "--stem", "DRUMS", "--arch", "scnet")
    assert drums and all("drums" in m["stems"] and m["arch"] == "scnet" for m in drums)
    assert len(drums) < len(_listing(tmp_path, "--stem", "drums"))
    fetched = next(m for m in everything if m["config_url"])
    assert "config" in fetched["unverified"]


def test_list_unknown_category_is_a_usage_error(tmp_path: Path) -> None:
    result = dsu("models", "list", "--category", "loud", env_dir=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'loud'" in result.stderr and "'dereverb'" in result.stderr
    user_error(dsu("models", "list", "--arch", "nope", env_dir=tmp_path))


def test_list_says_which_models_are_installed(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "weights").mkdir(parents=True)
    item = CATALOG.get("vocals")
    (models / "weights" / item.weights[0]).write_bytes(b"x")
    (models / "configs").mkdir()
    (models / "configs" / item.config).write_bytes(item.shipped_config.read_bytes())
    entry = {"arch": item.arch, "weights": [f"weights/{item.weights[0]}"]}
    entry["config"] = f"configs/{item.config}"
    document = {"version": 1, "models": {item.name: entry}}
    (models / "models.json").write_text(json.dumps(document))
    listing = {m["name"]: m for m in _listing(models, "--installed")}
    assert listing[item.name]["installed"] and listing[item.name]["category"] == "vocals"
    assert set(listing) == {item.name, "center", "hpss"}
    table = dsu("models", "list", "--category", "vocals", env_dir=models)
    assert any(
        line.startswith(item.name) and " installed " in line for line in table.stdout.splitlines()
    )


# pull


CONFIG = """\
audio: {chunk_size: 4096, sample_rate: 44100}
model: {dim: 8}
training: {instruments: [Vocals, Instrumental], target_instrument: Instrumental}
"""


def _one(url: str, size: int, *, config: bool) -> Catalog:
    raw = {
        "arch": "mel_band_roformer",
        "weights": ["w.ckpt"],
        "url": {"w.ckpt": url + "w.ckpt"},
        "size": {"w.ckpt": size},
        "stems": ["instrumental"],
        "category": "instrumental",
    }
    if config:
        raw["config"] = "w.yaml"
        raw["url"]["w.yaml"] = url + "w.yaml"
    return Catalog.from_dict({"version": 1, "models": {"m": raw}}, "test catalog")


def test_pull_checks_the_size_and_takes_the_fetched_config_s_stems(tmp_path: Path) -> None:
    files = {"w.ckpt": b"weights!", "w.yaml": CONFIG.encode()}
    with FileServer(files) as server:
        with pytest.raises(ChecksumMismatch, match="size mismatch: expected 9 bytes, got 8"):
            pull("m", tmp_path / "a", catalog=_one(server.url(""), 9, config=False))
        assert not any((tmp_path / "a" / "weights").iterdir())
        entry = pull("m", tmp_path / "b", catalog=_one(server.url(""), 8, config=True))
    assert entry.stems == ("instrumental", "vocals")  # from the config, not the catalog
    document = json.loads((tmp_path / "b" / "models.json").read_text())
    recorded = document["models"]["m"]["sha256"]
    assert recorded == {"w.ckpt": sha(files["w.ckpt"]), "w.yaml": sha(files["w.yaml"])}
    assert Registry.open(tmp_path / "b").lookup("m").config.read_text() == CONFIG
