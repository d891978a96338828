"""UVR VR models in the catalog and in ``dsu models scan``: model data that loads.

A VR checkpoint holds neither its band parameters nor its primary stem; DSU finds them in
the catalog entry's ``options`` (written into ``models.json`` by pull), in a folder's own
UVR model data, or in the hash-keyed table it ships (UVR's). These tests check that every
catalog VR model gets model data the VR family accepts, that pull carries it over, and
that a scan recognises VR checkpoints by hash or by their tensor names.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsu.archs.vr import load, model_data, stem_name
from dsu.archs.vr import params as vr_params
from dsu.archs.vr.cascaded import CascadedNet
from dsu.archs.vr.nets import CascadedASPPNet, V5Shape
from dsu.archs.vr.params import ModelData, load_params, shipped_model_data
from dsu.errors import RegistryError
from dsu.registry import Catalog, Registry, builtin_catalog, pull, scan
from dsu.registry.entry import ModelEntry
from dsu.registry.scan import uvr_hash

VR_ENTRIES = [e for e in builtin_catalog().entries() if e.arch == "vr"]
CATALOG_DIR = Path(__file__).resolve().parents[1] / "src" / "dsu" / "registry" / "catalog"
WITH_OPTIONS = [e for e in VR_ENTRIES if e.options]
V51_RECORD = {"vr_model_param": "4band_v3", "primary_stem": "Vocals", "nout": 4, "nout_lstm": 8}
"""Model data of the tiny v5.1 net :func:`write_v51` saves (``4band_v3`` has 672 bins)."""


def write_v51(path: Path, seed: int = 0, *, legacy: bool = False) -> Path:
    torch.manual_seed(seed)
    state = CascadedNet(672, 4, 8).state_dict()
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def write_v5(path: Path, bins: int) -> Path:
    torch.manual_seed(0)
    torch.save(CascadedASPPNet(bins, V5Shape(16)).state_dict(), path)
    return path


def test_catalog_lists_the_public_vr_models() -> None:
    assert len(VR_ENTRIES) == 29
    # Most of them carry their model data; the rest load by UVR hash (see the next tests).
    assert len(WITH_OPTIONS) >= 20


def test_the_shipped_table_is_uvr_s_whole_vr_table() -> None:
    table = shipped_model_data()
    assert len(table) == 32
    # One record from each source: UVR's own table, and audio-separator's overlay.
    assert table["944950a9c5963a5eb70b445d67b7068a"]["vr_model_param"] == "4band_v3_sn"
    assert table["97dc361a7a88b2c4542f68364b32c7f6"]["primary_stem"] == "Dry"


@pytest.mark.parametrize("digest", sorted(shipped_model_data()))
def test_every_shipped_record_names_band_parameters_dsu_runs(digest: str) -> None:
    data = ModelData.from_dict(shipped_model_data()[digest], digest)
    params = load_params(data.vr_model_param)
    assert params.bins > 0 and params.bands


@pytest.mark.parametrize("item", WITH_OPTIONS, ids=lambda e: e.name)
def test_catalog_options_are_uvr_model_data_the_loader_accepts(item, tmp_path: Path) -> None:
    # Options that name the band parameters are used as they are; the file is not read.
    entry = ModelEntry(item.name, "vr", (tmp_path / item.weights[0],), options=item.options)
    data = model_data(entry)
    assert load_params(data.vr_model_param).bins > 0
    # Not invented: every option set is one of UVR's published records.
    assert item.options in shipped_model_data().values()


@pytest.mark.parametrize("item", VR_ENTRIES, ids=lambda e: e.name)
def test_catalog_stems_are_the_ones_the_loader_derives(item) -> None:
    """The loader refuses an entry whose stems differ from its model data's."""
    if item.options:
        candidates = [ModelData.from_dict(item.options, item.name)]
    else:
        # Loaded by hash: the stems must be those of some UVR record.
        candidates = [ModelData.from_dict(r, item.name) for r in shipped_model_data().values()]
    derived = [sorted(map(stem_name, (d.primary_stem, d.secondary_stem))) for d in candidates]
    assert sorted(item.stems) in derived


def test_pull_writes_the_options_into_models_json(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    # The two entries without their published size and digest: the files are stand-ins.
    raw = json.loads((CATALOG_DIR / "uvr_vr.json").read_text(encoding="utf-8"))["models"]
    drop = ("sha256", "size", "verified")
    models = {n: {k: v for k, v in raw[n].items() if k not in drop} for n in raw}
    catalog = Catalog.from_dict({"version": 1, "models": models}, "test catalog")
    for item in ("vr-uvr-denoise-lite", "vr-1-hp-uvr"):
        (mirror / builtin_catalog().get(item).weights[0]).write_bytes(b"not read by pull")
        pull(item, tmp_path / "models", mirror=mirror, catalog=catalog)
    document = json.loads((tmp_path / "models" / "models.json").read_text())
    lite = document["models"]["vr-uvr-denoise-lite"]
    assert lite["options"] == builtin_catalog().get("vr-uvr-denoise-lite").options
    assert "options" not in document["models"]["vr-1-hp-uvr"]
    entry = Registry.open(tmp_path / "models", catalog=catalog).resolve("vr-uvr-denoise-lite")
    data = model_data(entry)
    assert (data.vr_model_param, data.primary_stem, data.nout) == (
        "1band_sr44100_hl1024",
        "Noise",
        16,
    )


def test_catalog_options_must_be_an_object() -> None:
    raw = {
        "arch": "vr",
        "weights": ["a.pth"],
        "url": {"a.pth": "https://example.invalid/a.pth"},
        "options": ["4band_v3"],
    }
    with pytest.raises(RegistryError, match="options: must be an object"):
        Catalog.from_dict({"version": 1, "models": {"a": raw}}, "test catalog")


@pytest.fixture
def table_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Ship a copy of DSU's VR table with extra records (a tiny file has no real hash)."""

    def extend(records: dict[str, dict]) -> None:
        path = tmp_path / "model_data.json"
        path.write_text(json.dumps({**shipped_model_data(), **records}), encoding="utf-8")
        monkeypatch.setattr(vr_params, "MODEL_DATA_FILE", path)

    return extend


def test_scan_finds_a_v51_checkpoint_in_the_shipped_table(tmp_path: Path, table_with) -> None:
    folder = tmp_path / "VR_Models"
    folder.mkdir()
    weights = write_v51(folder / "tiny_v51.pth")
    table_with({uvr_hash(weights): V51_RECORD})
    warnings: list[str] = []
    document = scan(folder, warn=warnings.append)
    found = document["models"]["tiny_v51"]
    assert warnings == []
    assert (found["arch"], found["stems"], found["options"]) == (
        "vr",
        ["vocals", "instrumental"],
        V51_RECORD,
    )
    # What the scan wrote is what the VR family loads.
    (folder / "models.json").write_text(json.dumps(document), encoding="utf-8")
    model = load(Registry.open(folder).resolve("tiny_v51"))
    assert list(model.stems) == ["vocals", "instrumental"]


def test_scan_reads_a_uvr_folder_s_own_model_data(tmp_path: Path) -> None:
    weights = write_v5(tmp_path / "tiny_v5.pth", load_params("1band_sr44100_hl512").bins)
    record = {"vr_model_param": "1band_sr44100_hl512", "primary_stem": "Instrumental"}
    (tmp_path / "model_data").mkdir()
    (tmp_path / "model_data" / "model_data.json").write_text(
        json.dumps({uvr_hash(weights): record}), encoding="utf-8"
    )
    found = scan(tmp_path, warn=pytest.fail)["models"]["tiny_v5"]
    assert (found["arch"], found["stems"], found["options"]) == (
        "vr",
        ["instrumental", "vocals"],
        record,
    )


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_scan_of_an_unknown_vr_checkpoint_warns(tmp_path: Path, legacy: bool) -> None:
    weights = write_v51(tmp_path / "mystery.pth", seed=3, legacy=legacy)
    warnings: list[str] = []
    found = scan(tmp_path, warn=warnings.append)["models"]["mystery"]
    assert (found["arch"], found["stems"], "options" in found) == ("vr", [], False)
    assert len(warnings) == 1
    assert uvr_hash(weights) in warnings[0] and "vr_model_param" in warnings[0]


def test_scan_does_not_take_any_state_dict_for_vr(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    warnings: list[str] = []
    found = scan(tmp_path, warn=warnings.append)["models"]["other"]
    assert found["arch"] == "unknown"
    assert len(warnings) == 1 and "no UVR model data" in warnings[0]
