"""RoFormer end to end: an MSST folder (``.ckpt`` + ``.yaml``, no ``models.json``) through
``dsu separate`` against MSST's own ``demix``, and the seed's worker lines with the
``denoise`` alias once that catalog model is installed."""

from __future__ import annotations

import json
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml
from ml_collections import ConfigDict
from msst.utils.model_utils import demix

from corpus import run_cli
from helpers import sdr, write_noise
from roformer_configs import TINY_BS, msst_bs, msst_mel
from test_worker_support import request, spawn

CHUNK = 2048  # 64 hops of the tiny config
CONFIG = {
    "audio": {"chunk_size": CHUNK, "num_channels": 2, "sample_rate": 44100},
    "model": {**TINY_BS, "stereo": True},
    "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
    "inference": {"batch_size": 2, "num_overlap": 4},
}


def _write_yaml(path: Path, config: dict) -> None:
    """As MSST writes them: tuples tagged ``!!python/tuple``."""
    path.write_text(yaml.dump(config, Dumper=yaml.Dumper), encoding="utf-8")


def test_dsu_separate_on_an_msst_folder_matches_msst_demix(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = msst_bs.BSRoformer(**CONFIG["model"]).eval()
    models = tmp_path / "models"
    models.mkdir()
    torch.save({"state_dict": reference.state_dict()}, models / "tiny-bs.ckpt")
    _write_yaml(models / "tiny-bs.yaml", CONFIG)
    rng = np.random.default_rng(0)
    mix = (0.2 * rng.standard_normal((2, 5 * CHUNK + 777))).astype(np.float32)
    sf.write(tmp_path / "song.wav", mix.T, 44100, subtype="FLOAT")

    out = tmp_path / "out"
    song, flags = str(tmp_path / "song.wav"), ["-o", str(out), "--bit-depth", "32"]
    done = run_cli(["separate", song, "--models-dir", str(models), "-m", "tiny-bs", *flags])
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (models / "models.json").exists()
    ours = {
        p.stem: sf.read(p, dtype="float32", always_2d=True)[0].T for p in (out / "song").iterdir()
    }
    assert set(ours) == {"vocals", "other"}

    with torch.inference_mode():
        theirs = demix(ConfigDict(CONFIG), reference, torch.from_numpy(mix), "cpu", "bs_roformer")
    vocals = np.asarray(theirs["vocals"], dtype=np.float32)
    assert sdr(vocals, ours["vocals"]) >= 60
    assert sdr(mix - vocals, ours["other"]) >= 60


def test_seed_worker_lines_with_the_denoise_alias(tmp_path: Path) -> None:
    """``denoise`` is the seed's short name for aufr33's Mel-Band denoise model: installed
    from a mirror (random weights in the published layout), it loads by that name."""
    from dsu.archs.msst_config import read_config
    from dsu.registry.catalog import builtin_catalog

    entry = builtin_catalog().get("mel-roformer-denoise-aufr33")
    assert entry is not None and "denoise" in entry.aliases
    assert entry.shipped_config is not None
    with as_file(entry.shipped_config) as shipped:
        config = read_config(shipped)
        shipped_text = shipped.read_text(encoding="utf-8")
    torch.manual_seed(0)
    net = msst_mel.MelBandRoformer(**config["model"])
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    torch.save(net.state_dict(), mirror / entry.weights[0])
    models = tmp_path / "models"
    pull = ["models", "pull", "denoise", "--models-dir", str(models), "--mirror", str(mirror)]
    refused = run_cli(pull)
    # The catalog knows the published file's size and digest; a stand-in is not that file.
    assert refused.returncode == 1 and "size mismatch" in refused.stderr
    # The same entry without them, as an extra catalog, installs the stand-in.
    own = tmp_path / "catalog"
    (own / "configs").mkdir(parents=True)
    (own / "configs" / entry.shipped_config.name).write_text(shipped_text, encoding="utf-8")
    raw = json.loads((files("dsu.registry") / "catalog" / "roformer.json").read_text())
    published = dict(raw["models"][entry.name])
    del published["size"], published["sha256"]
    published["verified"] = {**published["verified"], "sha256": False}
    catalog = own / "denoise.json"
    catalog.write_text(json.dumps({**raw, "models": {entry.name: published}}), encoding="utf-8")
    pulled = run_cli([*pull, "--catalog", str(catalog)])
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    source = write_noise(tmp_path / "noisy.wav", 1.0, seed=1, amplitude=0.1)

    process, ready = spawn(["--models-dir", str(models)])
    try:
        assert "mel_band_roformer" in ready["architectures"]
        loaded = request(process, {"cmd": "load_model", "model": "denoise"})
        assert loaded["status"] == "model_loaded", loaded
        assert loaded["stems"] == ["dry", "other"]
        done = request(
            process,
            # 1 s chunks: the full-size network at an eighth of its 8 s chunk's cost.
            {
                "cmd": "separate",
                "input": str(source),
                "output": str(tmp_path / "out"),
                "segment": 1,
            },
            timeout=600,
        )
        assert done["status"] == "done", done
        dry, rate = sf.read(done["stems"]["dry"], always_2d=True)
        assert rate == 44100 and dry.shape == (44100, 2)
        assert request(process, {"cmd": "ping"})["model_loaded"] == loaded["model"]
    finally:
        process.kill()
    assert json.loads((models / "models.json").read_text())["models"]
