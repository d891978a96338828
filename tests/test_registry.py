"""The model registry: models.json validation, resolution, scan, verify and the catalog."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from dsu.errors import BadRequest, ModelNotFound, RegistryError
from dsu.registry import Registry, RegistrySettings, builtin_catalog, scan, scan_to_file, verify
from dsu.registry.scan import uvr_hash
from tiny_demucs import tiny_net, write_package

DEMUCS_REMOTE = Path(__import__("demucs").__file__).parent / "remote"


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def manifest(models: dict, **top: object) -> dict:
    return {"version": 1, "models": models, **top}


def one_model(root: Path, **fields: object) -> Path:
    """A models dir with one weight file ``weights/a.th`` and an entry ``m`` with ``fields``."""
    (root / "weights").mkdir(parents=True, exist_ok=True)
    (root / "weights" / "a.th").write_bytes(b"weights")
    entry = {"arch": "demucs", "weights": "weights/a.th", "stems": ["x", "y"], **fields}
    return write_json(root / "models.json", manifest({"m": entry}))


# models.json validation


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        ({"version": 2, "models": {}}, "version", "not supported"),
        ({"models": {}}, "version", "missing"),
        (manifest({"m": {"weights": "weights/a.th"}}), "models.m.arch", "missing"),
        (manifest({"m": {"arch": "demucs", "weights": "../a.th"}}), "weights[0]", "leaves"),
        (manifest({"m": {"arch": "demucs", "weights": ["weights/../../a.th"]}}), "weights[0]", ""),
        (manifest({"m": {"arch": "demucs", "weights": "/etc/passwd"}}), "weights[0]", "absolute"),
        (manifest({"m": {"arch": "demucs", "weights": "C:/w/a.th"}}), "weights[0]", "absolute"),
        (manifest({"m": {"arch": "demucs", "config": "../c.yaml"}}), "models.m.config", "leaves"),
        (manifest({"m": {"arch": "demucs", "weight": "a.th"}}), "models.m", "unknown field"),
        (manifest({"m": {"arch": "demucs", "stems": "vocals"}}), "models.m.stems", "list"),
        (manifest({"m": {"arch": "x"}}, default="nope"), "default", "names no model"),
        (manifest({"center": {"arch": "x"}}), "models.center", "built-in"),
        (manifest({"bad name": {"arch": "x"}}), "models.bad name", "not a valid model name"),
        (
            manifest({"a": {"arch": "x", "aliases": ["b"]}, "b": {"arch": "x"}}),
            "models.a.aliases",
            "already",
        ),
        (
            manifest({"m": {"arch": "x", "weights": "a.th", "sha256": {"b.th": "0" * 64}}}),
            "models.m.sha256",
            "names no file",
        ),
        (
            manifest({"m": {"arch": "x", "weights": "a.th", "sha256": {"a.th": "xyz"}}}),
            "models.m.sha256.a.th",
            "not a lowercase hex",
        ),
        ([1, 2], "top level", "object"),
    ],
)
def test_invalid_manifest_names_file_and_field(
    tmp_path: Path, document: object, field: str, words: str
) -> None:
    path = write_json(tmp_path / "models.json", document)
    with pytest.raises(RegistryError) as caught:
        Registry.open(tmp_path)
    message = caught.value.message
    assert message.startswith(f"{path}: ")
    assert field in message
    assert words in message


def test_invalid_json_reports_line(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text('{"version": 1,\n "models": {,}}')
    with pytest.raises(RegistryError, match=r"models\.json: not valid JSON \(line 2"):
        Registry.open(tmp_path)


def test_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.th"
    outside.write_bytes(b"secret")
    root = tmp_path / "models"
    (root / "weights").mkdir(parents=True)
    os.symlink(outside, root / "weights" / "a.th")
    write_json(root / "models.json", manifest({"m": {"arch": "demucs", "weights": "weights/a.th"}}))
    with pytest.raises(RegistryError, match=r"models\.m\.weights\[0\].*outside the models dir"):
        Registry.open(root)


def test_symlink_inside_the_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "real.th").write_bytes(b"w")
    (tmp_path / "weights").mkdir()
    os.symlink(tmp_path / "store" / "real.th", tmp_path / "weights" / "a.th")
    write_json(tmp_path / "models.json", manifest({"m": {"arch": "x", "weights": "weights/a.th"}}))
    assert Registry.open(tmp_path).resolve("m").weights == (tmp_path / "weights" / "a.th",)


def test_weight_beside_models_json_loads(tmp_path: Path) -> None:
    (tmp_path / "net.pt").write_bytes(b"w")
    write_json(tmp_path / "models.json", manifest({"m": {"arch": "x", "weights": "net.pt"}}))
    assert Registry.open(tmp_path).resolve("m").weights == (tmp_path / "net.pt",)


def test_real_shared_tdc_manifest_loads(shared_dir: Path) -> None:
    root = shared_dir / "models" / "tdc-vocals-ismir2020"
    registry = Registry.open(root)
    entry = registry.resolve("tdc")
    assert entry.name == "tdc-vocals" == registry.default
    assert entry.arch == "tdc_unet"
    assert entry.stems == ("vocals", "accompaniment")
    assert entry.weights == (root.absolute() / "cac_tdc_17_vocals_top1.pt",)
    assert entry.weights[0].is_file()
    [result] = verify(root)
    assert result.ok and result.checked, result


# resolution


def test_builtins_resolve_without_a_directory(tmp_path: Path) -> None:
    registry = Registry.open(tmp_path / "does-not-exist")
    assert registry.names() == ["center", "hpss"]
    assert registry.default is None
    assert registry.resolve("center").stems == ("vocals", "instrumental")
    assert registry.resolve("hpss").arch == "hpss"
    assert registry.resolve(None).name == "center"
    assert not (tmp_path / "does-not-exist").exists()


def test_resolve_name_and_alias_with_absolute_paths(tmp_path: Path) -> None:
    one_model(tmp_path, aliases=["mm", "my-model"], options={"segment": 7.8})
    registry = Registry.open(tmp_path)
    entry = registry.resolve("mm")
    assert entry == registry.resolve("m") == registry.resolve("my-model")
    assert entry.weights[0].is_absolute() and entry.weights[0] == tmp_path / "weights" / "a.th"
    assert entry.options == {"segment": 7.8}
    assert registry.names() == ["center", "hpss", "m"]


def test_unknown_name_lists_close_names(tmp_path: Path) -> None:
    one_model(tmp_path, aliases=["vocalist"])
    with pytest.raises(ModelNotFound) as caught:
        Registry.open(tmp_path).resolve("vocalis")
    assert "'vocalis'" in caught.value.message
    assert "did you mean vocalist" in caught.value.message
    assert "dsu models list" in caught.value.message
    with pytest.raises(ModelNotFound, match="did you mean htdemucs"):
        Registry.open(tmp_path).resolve("htdemucz")


def test_catalog_model_not_pulled_says_how_to_pull(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="dsu models pull htdemucs_ft"):
        Registry.open(tmp_path).resolve("htdemucs_ft")


def test_missing_weight_file_is_model_not_found(tmp_path: Path) -> None:
    one_model(tmp_path)
    (tmp_path / "weights" / "a.th").unlink()
    registry = Registry.open(tmp_path)
    assert registry.lookup("m").name == "m"
    with pytest.raises(ModelNotFound, match=r"weights/a\.th is missing"):
        registry.resolve("m")
    statuses = {info.name: info.status for info in registry.listing()}
    assert statuses["m"] == "incomplete"
    assert statuses["center"] == "builtin"
    assert statuses["htdemucs"] == "available"


def test_default_may_be_an_alias(tmp_path: Path) -> None:
    (tmp_path / "a.th").write_bytes(b"w")
    write_json(
        tmp_path / "models.json",
        manifest({"m": {"arch": "x", "weights": "a.th", "aliases": ["q"]}}, default="q"),
    )
    registry = Registry.open(tmp_path)
    assert registry.default == "m"
    assert registry.resolve(None).name == "m"


# scan


def demucs_repo(root: Path) -> dict[str, Path]:
    """Three tiny real HTDemucs packages, a two-member bag yaml, one lone package."""
    paths = {
        "aaaa0001": write_package(tiny_net("htdemucs", 1, ["vocals", "other"]), root, "aaaa0001"),
        "bbbb0002": write_package(tiny_net("htdemucs", 2, ["vocals", "other"]), root, "bbbb0002"),
        "cccc0003": write_package(tiny_net("htdemucs", 3, ["drums", "rest"]), root, "cccc0003"),
    }
    (root / "duo.yaml").write_text(
        "models: ['bbbb0002', 'aaaa0001']\nweights: [[1., 0.], [0., 1.]]\nsegment: 1\n"
    )
    return paths


def test_scan_demucs_repo(tmp_path: Path) -> None:
    paths = demucs_repo(tmp_path)
    warnings: list[str] = []
    document = scan(tmp_path, warn=warnings.append)
    assert warnings == []
    models = document["models"]
    assert sorted(models) == ["cccc0003", "duo"]
    duo = models["duo"]
    assert duo["arch"] == "demucs"
    assert duo["weights"] == [paths["bbbb0002"].name, paths["aaaa0001"].name]
    assert duo["config"] == "duo.yaml"
    assert duo["stems"] == ["vocals", "other"]
    assert duo["options"] == {"weights": [[1.0, 0.0], [0.0, 1.0]], "segment": 1}
    for path in paths.values():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entry = duo if path.name in duo["weights"] else models["cccc0003"]
        assert entry["sha256"][path.name] == digest[:8]
    assert models["cccc0003"]["stems"] == ["drums", "rest"]
    assert models["cccc0003"]["config"] is None
    assert document["default"] == "duo"

    registry = Registry.open(tmp_path)  # no models.json: scanned in memory
    assert registry.scanned
    entry = registry.resolve("duo")
    assert entry.weights == (paths["bbbb0002"], paths["aaaa0001"])
    assert entry.config == tmp_path / "duo.yaml"
    assert not (tmp_path / "models.json").exists()
    results = {r.file: r for r in verify(tmp_path)}
    assert all(r.ok for r in results.values())
    assert all(results[path.name].checked for path in paths.values())
    assert not results["duo.yaml"].checked  # a bag yaml carries no checksum


def test_scan_to_file_refuses_overwrite_without_force(tmp_path: Path) -> None:
    demucs_repo(tmp_path)
    target = scan_to_file(tmp_path)
    written = json.loads(target.read_text())
    assert sorted(written["models"]) == ["cccc0003", "duo"]
    assert not Registry.open(tmp_path).scanned
    target.write_text(json.dumps(manifest({})))
    with pytest.raises(RegistryError, match=r"already exists.*--force"):
        scan_to_file(tmp_path)
    assert json.loads(target.read_text())["models"] == {}
    scan_to_file(tmp_path, force=True)
    assert sorted(json.loads(target.read_text())["models"]) == ["cccc0003", "duo"]


def test_scan_bag_with_missing_member_is_skipped_with_warning(tmp_path: Path) -> None:
    write_package(tiny_net("htdemucs", 1), tmp_path, "aaaa0001")
    (tmp_path / "pair.yaml").write_text("models: ['aaaa0001', 'ffff9999']\n")
    warnings: list[str] = []
    document = scan(tmp_path, warn=warnings.append)
    assert list(document["models"]) == ["aaaa0001"]
    assert any("pair" in w and "ffff9999" in w for w in warnings)


def test_scan_uses_catalog_stems_for_known_files_and_warns_on_unreadable(tmp_path: Path) -> None:
    # Official file names: stems come from the catalog, the file is never unpickled.
    (tmp_path / "5c90dfd2-34c22ccb.th").write_bytes(b"not a real package")
    (tmp_path / "htdemucs_6s.yaml").write_text("models: ['5c90dfd2']\n")
    (tmp_path / "deadbeef-00000000.th").write_bytes(b"not a real package either")
    warnings: list[str] = []
    models = scan(tmp_path, warn=warnings.append)["models"]
    assert models["htdemucs_6s"]["stems"] == list(builtin_catalog().get("htdemucs_6s").stems)
    assert models["deadbeef"]["stems"] == []
    assert len(warnings) == 1 and "deadbeef-00000000.th" in warnings[0]


def test_scan_layout_with_weights_and_configs_folders(tmp_path: Path) -> None:
    path = write_package(tiny_net("htdemucs", 1), tmp_path / "weights", "aaaa0001")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "solo.yaml").write_text("models: ['aaaa0001']\n")
    models = scan(tmp_path, warn=pytest.fail)["models"]
    assert models["solo"]["weights"] == [f"weights/{path.name}"]
    assert models["solo"]["config"] == "configs/solo.yaml"


MSST_BS = """\
audio: {sample_rate: 44100, chunk_size: 352800}
model:
  dim: 8
  freqs_per_bands: !!python/tuple
    - 2
    - 4
training:
  instruments: [vocals, other]
  target_instrument: vocals
"""
MSST_MEL = "model: {dim: 8, num_bands: 60}\ntraining: {instruments: [vocals, other]}\n"
MSST_MDX23C = "model: {num_subbands: 4, num_scales: 5}\ntraining: {instruments: [a, b, c]}\n"


def test_scan_msst_layout(tmp_path: Path) -> None:
    for stem, config, suffix in [
        ("bs", MSST_BS, ".ckpt"),
        ("mel", MSST_MEL, ".ckpt"),
        ("c23", MSST_MDX23C, ".pth"),
        ("odd", "model: {foo: 1}\n", ".ckpt"),
    ]:
        (tmp_path / f"{stem}{suffix}").write_bytes(b"w")
        (tmp_path / f"{stem}.yaml").write_text(config)
    warnings: list[str] = []
    models = scan(tmp_path, warn=warnings.append)["models"]
    assert models["bs"] == {
        "arch": "bs_roformer",
        "weights": "bs.ckpt",
        "config": "bs.yaml",
        "stems": ["vocals", "other"],  # the target and the residual, as the model gives
    }
    assert (models["mel"]["arch"], models["mel"]["stems"]) == (
        "mel_band_roformer",
        ["vocals", "other"],
    )
    assert (models["c23"]["arch"], models["c23"]["stems"]) == ("mdx23c", ["a", "b", "c"])
    assert models["odd"]["arch"] == "unknown"
    assert len(warnings) == 1 and "odd.yaml" in warnings[0]
    assert Registry.open(tmp_path).resolve("bs").config == tmp_path / "bs.yaml"


def test_scan_uvr_layout_with_hash_keyed_model_data(tmp_path: Path) -> None:
    onnx = tmp_path / "UVR-MDX-NET-Inst_HQ_3.onnx"
    onnx.write_bytes(os.urandom(3000))
    vr = tmp_path / "5_HP-Karaoke-UVR.pth"
    vr.write_bytes(os.urandom(2000))
    stray = tmp_path / "mystery.pth"
    stray.write_bytes(os.urandom(100))
    model_data = {
        uvr_hash(onnx): {
            "compensate": 1.022,
            "mdx_dim_f_set": 3072,
            "primary_stem": "Instrumental",
        },
        uvr_hash(vr): {"vr_model_param": "4band_v2", "primary_stem": "Vocals"},
    }
    write_json(tmp_path / "model_data" / "model_data.json", model_data)
    warnings: list[str] = []
    models = scan(tmp_path, warn=warnings.append)["models"]
    mdx = models["UVR-MDX-NET-Inst_HQ_3"]
    assert mdx["arch"] == "mdx"
    assert mdx["stems"] == ["instrumental", "vocals"]
    assert mdx["options"]["model_data"]["mdx_dim_f_set"] == 3072
    assert models["5_HP-Karaoke-UVR"]["arch"] == "vr"
    assert models["mystery"]["arch"] == "unknown"
    assert len(warnings) == 1 and "mystery.pth" in warnings[0]


def test_uvr_hash_is_md5_of_the_last_10000_kib(tmp_path: Path) -> None:
    small = tmp_path / "small.onnx"
    small.write_bytes(b"abc")
    assert uvr_hash(small) == hashlib.md5(b"abc").hexdigest()
    big = tmp_path / "big.onnx"
    data = os.urandom(10000 * 1024 + 5)
    big.write_bytes(data)
    assert uvr_hash(big) == hashlib.md5(data[5:]).hexdigest()


# verify


def test_verify_detects_corrupted_and_missing_files(tmp_path: Path) -> None:
    demucs_repo(tmp_path)
    scan_to_file(tmp_path)
    assert all(r.ok for r in verify(tmp_path))
    document = json.loads((tmp_path / "models.json").read_text())
    duo = document["models"]["duo"]["weights"]
    corrupted = tmp_path / duo[0]
    data = bytearray(corrupted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    (tmp_path / document["models"]["cccc0003"]["weights"][0]).unlink()

    results = verify(tmp_path)
    bad = {r.file: r for r in results if not r.ok}
    assert set(bad) == {duo[0], document["models"]["cccc0003"]["weights"][0]}
    assert "sha256 mismatch" in bad[duo[0]].problem
    assert bad[duo[0]].name == "duo"
    assert bad[document["models"]["cccc0003"]["weights"][0]].problem == "missing"
    only = verify(tmp_path, ["duo"])
    assert {r.name for r in only} == {"duo"} and any(not r.ok for r in only)
    with pytest.raises(ModelNotFound):
        verify(tmp_path, ["nope"])


def test_verify_reports_unreadable_manifest(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text("{oops")
    [result] = verify(tmp_path)
    assert not result.ok
    assert result.file.endswith("models.json")
    assert "not valid JSON" in result.problem


def test_verify_full_digest_and_no_checksum(tmp_path: Path) -> None:
    (tmp_path / "a.pt").write_bytes(b"aaa")
    (tmp_path / "b.pt").write_bytes(b"bbb")
    full = hashlib.sha256(b"aaa").hexdigest()
    entry = {"arch": "x", "weights": ["a.pt", "b.pt"], "sha256": {"a.pt": full}}
    write_json(tmp_path / "models.json", manifest({"m": entry}))
    results = {r.file: r for r in verify(tmp_path)}
    assert results["a.pt"].ok and results["a.pt"].checked
    assert results["b.pt"].ok and not results["b.pt"].checked


# catalog


def demucs_remote_files() -> dict[str, str]:
    """signature -> official URL, read from the installed demucs package's files.txt."""
    files, root = {}, ""
    for line in (DEMUCS_REMOTE / "files.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("root:"):
            root = line.split(":", 1)[1].strip()
        else:
            files[line.split("-")[0]] = "https://dl.fbaipublicfiles.com/demucs/" + root + line
    return files


def test_builtin_catalog_matches_the_demucs_package() -> None:
    catalog = builtin_catalog()
    names = ["htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi"]
    names += ["mdx", "mdx_extra", "mdx_q", "mdx_extra_q"]
    names += ["repro_mdx_a", "repro_mdx_a_time_only", "repro_mdx_a_hybrid_only"]
    # htdemucs_ft's members, each also listed alone (pymss and MSST list them so).
    members = [f"htdemucs_ft_{stem}" for stem in ("drums", "bass", "other", "vocals")]
    demucs = sorted(n for n in catalog.names() if catalog.get(n).arch == "demucs")
    assert demucs == sorted(names + members)
    for member, file_name in zip(members, catalog.get("htdemucs_ft").weights, strict=True):
        assert catalog.get(member).weights == (file_name,)
    remote = demucs_remote_files()
    for name in names:
        item = catalog.get(name)
        bag = yaml.safe_load((DEMUCS_REMOTE / f"{name}.yaml").read_text())
        assert item.bag == bag, name
        assert [w.split("-")[0] for w in item.weights] == bag["models"]
        for file_name in item.weights:
            assert item.url[file_name] == remote[file_name.split("-")[0]]
            assert item.sha256[file_name].startswith(file_name.split("-")[1].removesuffix(".th"))
        assert item.arch == "demucs"
        expected = ["drums", "bass", "other", "vocals"]
        if name == "htdemucs_6s":
            expected += ["guitar", "piano"]
        assert list(item.stems) == expected
        assert item.requires == ("quantized" if name.endswith("_q") else None)


# settings


def test_settings_from_env(tmp_path: Path) -> None:
    defaults = RegistrySettings.from_env({})
    assert defaults.models_dir == Path.home() / ".cache" / "dsu" / "models"
    assert defaults.mirror is None
    custom = RegistrySettings.from_env(
        {"DSU_MODELS_DIR": str(tmp_path), "DSU_MODELS_MIRROR": "http://mirror/x/"}
    )
    assert (custom.models_dir, custom.mirror) == (tmp_path, "http://mirror/x/")
    with pytest.raises(BadRequest, match="DSU_DOWNLOAD_TIMEOUT"):
        RegistrySettings.from_env({"DSU_DOWNLOAD_TIMEOUT": "soon"})
