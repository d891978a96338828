"""The built-in catalog of RoFormer and MDX23C checkpoints, and the configs DSU ships."""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
import yaml

from dsu.archs.msst_config import ConfigLoader, config_stems
from dsu.errors import ChecksumMismatch, RegistryError
from dsu.registry import Catalog, Registry, builtin_catalog, pull

CATALOG = resources.files("dsu.registry") / "catalog"
MSST_FILES = ("roformer.json", "mdx23c.json")
# The model section keys each family needs to build its network.
ARCH_KEYS = {
    "bs_roformer": "freqs_per_bands",
    "mel_band_roformer": "num_bands",
    "mdx23c": "num_subbands",
}
REQUIRED = {
    "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
    "model_bs_roformer_ep_368_sdr_12.9628.ckpt",
    "MelBandRoformer.ckpt",
    "mel_band_roformer_vocals_becruily.ckpt",
    "mel_band_roformer_instrumental_becruily.ckpt",
    "model_bs_polarformer_float16.ckpt",
    "denoise_mel_band_roformer_aufr33_sdr_27.9959.ckpt",
    "denoise_mel_band_roformer_aufr33_aggr_sdr_27.9768.ckpt",
    "dereverb_mel_band_roformer_anvuew_sdr_19.1729.ckpt",
    "MDX23C-8KFFT-InstVoc_HQ.ckpt",
}


def _documents() -> dict[str, dict]:
    return {
        item.name: json.loads(item.read_text(encoding="utf-8"))
        for item in CATALOG.iterdir()
        if item.name.endswith(".json")
    }


def _msst_entries() -> list:
    catalog = builtin_catalog()
    names = [n for f in MSST_FILES for n in _documents()[f]["models"]]
    return [catalog.get(name) for name in names]


def test_every_msst_entry_parses_and_the_well_known_ones_are_there() -> None:
    entries = _msst_entries()
    assert len(entries) >= 30
    assert {w for e in entries for w in e.weights} >= REQUIRED
    assert {e.arch for e in entries} == set(ARCH_KEYS)


def test_names_and_aliases_are_unique_across_the_whole_catalog() -> None:
    seen = Counter()
    for document in _documents().values():
        for name, raw in document["models"].items():
            seen.update([name, *raw.get("aliases", [])])
    assert [k for k, n in seen.items() if n > 1] == []


@pytest.mark.parametrize(
    ("alias", "arch", "weight"),
    [
        ("vocals", "bs_roformer", "model_bs_roformer_ep_317_sdr_12.9755.ckpt"),
        ("instrumental", "mel_band_roformer", "mel_band_roformer_instrumental_becruily.ckpt"),
        ("denoise", "mel_band_roformer", "denoise_mel_band_roformer_aufr33_sdr_27.9959.ckpt"),
        ("dereverb", "mel_band_roformer", "dereverb_mel_band_roformer_anvuew_sdr_19.1729.ckpt"),
    ],
)
def test_seed_short_names(alias: str, arch: str, weight: str) -> None:
    entry = builtin_catalog().get(alias)
    assert entry is not None and entry.arch == arch and entry.weights == (weight,)


def test_every_config_exists_parses_and_has_its_arch_keys() -> None:
    for entry in _msst_entries():
        assert entry.config, entry.name
        for weight in entry.weights:
            url = urllib.parse.urlsplit(entry.url[weight])
            assert url.scheme == "https" and urllib.parse.unquote(url.path).endswith("/" + weight)
        if entry.shipped_config is None:
            assert entry.url[entry.config].startswith("https://"), entry.name
            continue
        config = yaml.load(entry.shipped_config.read_text(encoding="utf-8"), ConfigLoader)
        assert ARCH_KEYS[entry.arch] in config["model"], entry.name
        # What the loaded model outputs (lower-cased, the residual after a target).
        assert list(entry.stems) == config_stems(config, entry.name), entry.name
        for stem in entry.sdr:
            assert stem in entry.stems or entry.arch == "mdx23c", entry.name


def test_every_shipped_config_is_used() -> None:
    used = {e.config for e in builtin_catalog().entries() if e.shipped_config is not None}
    shipped = {p.name for p in (CATALOG / "configs").iterdir() if p.name.endswith(".yaml")}
    assert shipped == used


def test_sha256_left_out_is_allowed_but_a_bad_one_is_not(tmp_path: Path) -> None:
    raw = {"arch": "mdx23c", "weights": ["w.ckpt"], "url": {"w.ckpt": "https://x/w.ckpt"}}
    assert Catalog.from_dict({"version": 1, "models": {"m": raw}}, "t").get("m").sha256 == {}
    raw["sha256"] = {"w.ckpt": "not hex"}
    with pytest.raises(RegistryError, match="leave it out when unknown"):
        Catalog.from_dict({"version": 1, "models": {"m": raw}}, "t")
    raw = {**raw, "sha256": {}, "config": "absent.yaml"}
    with pytest.raises(RegistryError, match="no URL and is not shipped"):
        Catalog.from_dict({"version": 1, "models": {"m": raw}}, "t", tmp_path)


def test_alias_clash_is_refused() -> None:
    one = {"arch": "a", "weights": ["1.ckpt"], "url": {"1.ckpt": "https://x/1"}}
    two = {**one, "aliases": ["one"]}
    with pytest.raises(RegistryError, match="alias 'one'"):
        Catalog.from_dict({"version": 1, "models": {"one": one, "two": two}}, "t")


def test_pull_copies_a_shipped_config_and_records_digests(tmp_path: Path) -> None:
    """A catalog without published digests: pull records what it installed, and a file
    changed afterwards is refused at load time."""
    (tmp_path / "cat" / "configs").mkdir(parents=True)
    shipped = builtin_catalog().get("vocals").shipped_config
    (tmp_path / "cat" / "configs" / "c.yaml").write_bytes(shipped.read_bytes())
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "w.ckpt").write_bytes(b"weights")
    document = {
        "version": 1,
        "models": {
            "m": {
                "arch": "bs_roformer",
                "weights": ["w.ckpt"],
                "url": {"w.ckpt": "https://example.invalid/w.ckpt"},
                "config": "c.yaml",
                "stems": ["vocals", "other"],
            }
        },
    }
    (tmp_path / "cat" / "catalog.json").write_text(json.dumps(document))
    catalog = Catalog.load(tmp_path / "cat" / "catalog.json")
    models = tmp_path / "models"
    entry = pull("m", models, mirror=mirror, catalog=catalog)
    assert entry.config is not None
    assert entry.config.read_bytes() == shipped.read_bytes()
    recorded = json.loads((models / "models.json").read_text())["models"]["m"]["sha256"]
    assert set(recorded) == {"w.ckpt", "c.yaml"}

    (models / "weights" / "w.ckpt").write_bytes(b"WEIGHTS, changed")
    with pytest.raises(ChecksumMismatch, match=r"w\.ckpt"):
        Registry.open(models, catalog=catalog).resolve("m")
