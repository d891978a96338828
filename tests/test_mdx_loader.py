"""Loading UVR MDX-Net (.onnx) models: parameters by hash, models.json, errors, the CLI.

Models are tiny random-weight graphs exported at test time (tests/tiny_mdx.py); the CLI
cases run ``python -m dsu`` as real subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsu.archs import mdx
from dsu.archs.mdx.params import MdxParams, shipped_model_data, stem_names
from dsu.errors import CorruptCheckpoint, RegistryError
from dsu.metrics import sdr
from dsu.registry import Registry, scan_to_file
from dsu.registry.catalog import builtin_catalog
from dsu.registry.entry import ModelEntry
from dsu.registry.scan import uvr_hash
from tiny_mdx import SMALL_DATA, export, mixture_signal, write_model_data

ROOT = Path(__file__).resolve().parents[1]

# Makes ``onnxruntime`` look uninstalled in a subprocess: the path finder stops seeing it,
# so both ``importlib.util.find_spec`` and ``import`` fail as they would without it.
HIDE_ONNXRUNTIME = """
import importlib.machinery

_find_spec = importlib.machinery.PathFinder.find_spec.__func__


def _hidden(cls, name, path=None, target=None):
    if name == "onnxruntime" or name.startswith("onnxruntime."):
        return None
    return _find_spec(cls, name, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(_hidden)
"""


def entry_for(onnx: Path, **fields: object) -> ModelEntry:
    return ModelEntry(name="tiny", arch="mdx", weights=(onnx,), **fields)  # type: ignore[arg-type]


def dsu(*args: str | Path, pythonpath: list[Path] | None = None) -> subprocess.CompletedProcess:
    paths = [*(pythonpath or []), ROOT / "src"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    env.pop("DSU_MODELS_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "dsu", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=ROOT,
    )


def registered(root: Path, *, options: dict | None = None, stems: list[str] | None = None) -> Path:
    """A models directory whose models.json gives the tiny model's parameters."""
    onnx = export(root / "weights" / "tiny.onnx", SMALL_DATA)
    entry = {
        "arch": "mdx",
        "weights": "weights/tiny.onnx",
        "config": None,
        "stems": stems if stems is not None else ["vocals", "instrumental"],
        "options": options if options is not None else {"model_data": SMALL_DATA},
    }
    manifest = {"version": 1, "default": "tiny", "models": {"tiny": entry}}
    (root / "models.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert onnx.is_file()
    return root


def test_unknown_hash_says_how_to_give_parameters(tmp_path: Path) -> None:
    onnx = export(tmp_path / "mystery.onnx", SMALL_DATA)
    with pytest.raises(RegistryError) as caught:
        mdx.load(entry_for(onnx))
    message = str(caught.value)
    assert uvr_hash(onnx) in message
    assert '"options": {"model_data"' in message
    assert "mdx_dim_f_set" in message


def test_models_json_gives_parameters(tmp_path: Path) -> None:
    root = registered(tmp_path / "models", options={"model_data": SMALL_DATA, "denoise": True})
    model = mdx.load(Registry.open(root).lookup("tiny"))
    assert model.stems == ["vocals", "instrumental"]
    assert model.denoise is True
    assert model.segment == 1024 * 31
    assert model.trim == 1024


def test_scan_reads_uvr_model_data_by_hash(tmp_path: Path) -> None:
    """A folder as UVR keeps it (the .onnx and UVR's model_data.json): scan, then load."""
    root = tmp_path / "uvr"
    onnx = export(root / "tiny.onnx", {**SMALL_DATA, "primary_stem": "Instrumental"})
    write_model_data(root, onnx, {**SMALL_DATA, "primary_stem": "Instrumental"})
    scan_to_file(root)
    model = mdx.load(Registry.open(root).lookup("tiny"))
    assert model.stems == ["instrumental", "vocals"]
    assert model.params.compensate == SMALL_DATA["compensate"]


def test_unknown_model_data_key_is_named(tmp_path: Path) -> None:
    onnx = export(tmp_path / "tiny.onnx", SMALL_DATA)
    bad = {**SMALL_DATA, "mdx_dim_x_set": 1}
    with pytest.raises(RegistryError, match=r"models\.tiny\.options\.model_data.*'mdx_dim_x_set'"):
        mdx.load(entry_for(onnx, options={"model_data": bad}))


def test_graph_that_does_not_fit_its_parameters(tmp_path: Path) -> None:
    onnx = export(tmp_path / "tiny.onnx", SMALL_DATA)
    other = {**SMALL_DATA, "mdx_dim_f_set": 128}
    with pytest.raises(RegistryError, match="takes 256 frequency bins"):
        mdx.load(entry_for(onnx, options={"model_data": other}))


def test_stems_must_match_the_model_data(tmp_path: Path) -> None:
    root = registered(tmp_path / "models", stems=["instrumental", "vocals"])
    with pytest.raises(RegistryError, match="fix the entry's 'stems'"):
        mdx.load(Registry.open(root).lookup("tiny"))


def test_not_an_onnx_file(tmp_path: Path) -> None:
    fake = tmp_path / "broken.onnx"
    fake.write_bytes(b"not a protobuf at all")
    with pytest.raises(CorruptCheckpoint, match="not a readable ONNX model"):
        mdx.load(entry_for(fake, options={"model_data": SMALL_DATA}))


def test_shipped_table_and_catalog_are_consistent() -> None:
    table = shipped_model_data()
    assert len(table) >= 40
    primaries = {MdxParams.from_model_data(raw, key).stems[0] for key, raw in table.items()}
    catalog = [e for e in builtin_catalog().entries() if e.arch == "mdx"]
    assert {"uvr-mdx-net-inst-hq-3", "kim-vocal-2", "uvr-mdx-net-voc-ft"} <= {
        e.name for e in catalog
    }
    for entry in catalog:
        assert list(entry.stems) == stem_names(entry.stems[0]), entry.name
        assert entry.stems[0] in primaries, entry.name
        assert all(url.startswith("https://github.com/TRvlvr/") for url in entry.url.values())


def test_loader_without_onnxruntime(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(HIDE_ONNXRUNTIME, encoding="utf-8")
    onnx = export(tmp_path / "tiny.onnx", SMALL_DATA)
    code = (
        "from pathlib import Path\n"
        "from dsu.archs import mdx\n"
        "from dsu.errors import UnsupportedModel\n"
        "from dsu.registry.entry import ModelEntry\n"
        "try:\n"
        f"    mdx.load(ModelEntry('tiny', 'mdx', (Path({str(onnx)!r}),)))\n"
        "except UnsupportedModel as exc:\n"
        "    print(exc.message)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src")])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "onnxruntime" in result.stdout
    assert "pip install 'dsu[onnx]'" in result.stdout


def test_cli_without_onnxruntime(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_ONNXRUNTIME, encoding="utf-8")
    root = registered(tmp_path / "models")
    song = tmp_path / "song.wav"
    sf.write(song, mixture_signal(44100).T, 44100)
    result = dsu(
        "separate", song, "--models-dir", root, "-o", tmp_path / "out", "-q", pythonpath=[hide]
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "onnxruntime" in result.stderr
    assert "dsu[onnx]" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.wav"))


def test_cli_resamples_48k_input(tmp_path: Path) -> None:
    """A 44.1 kHz model given 48 kHz audio: stems come back at 48 kHz, full length, and
    ``primary * compensate + secondary`` is the input again (a mixture without content
    above 22.05 kHz, which the model's rate cannot carry)."""
    root = registered(tmp_path / "models")
    length = 48000 * 2 + 123
    mix = mixture_signal(length, rate=48000, noise=0.0)
    song = tmp_path / "song48.wav"
    sf.write(song, mix.T, 48000, subtype="FLOAT")
    out = tmp_path / "out"
    result = dsu("separate", song, "--models-dir", root, "-o", out, "-q", "--bit-depth", "32")
    assert result.returncode == 0, result.stderr
    files = {path.stem: path for path in out.rglob("*.wav")}
    assert set(files) == {"vocals", "instrumental"}, files
    stems = {}
    for name, path in files.items():
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        assert rate == 48000
        assert audio.shape == (length, 2)
        stems[name] = audio.T
    rebuilt = stems["vocals"] * SMALL_DATA["compensate"] + stems["instrumental"]
    assert np.abs(stems["vocals"]).max() > 0.01
    assert sdr(mix, rebuilt) > 40
