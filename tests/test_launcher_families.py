"""Every family of the seed's table loads and separates through its launcher with the
seed's JSON lines: BS-RoFormer, MDX23C, SCNet and BandIt v2 (``dsu-bsroformer``), VR, MDX-Net,
MDX23C, Demucs and the RoFormers (``dsu-audio-separator``), Apollo (``dsu-apollo``), an
MSST-layout HTDemucs (``dsu-demucs``).

One models directory holds a tiny random-weight model of each family in the layout its
users have (MSST ``.ckpt`` + ``.yaml``, UVR ``.onnx`` / ``.pth`` with model data, Demucs
``.th``); each launcher is a real subprocess.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from dsu.archs import bandit, msst_htdemucs, scnet
from dsu.archs.mdx23c import Mdx23cConfig, TfcTdfNet
from dsu.archs.vr.params import load_params
from helpers import write_noise
from roformer_configs import TINY_BS, msst_bs
from test_apollo_cli import msst_folder
from test_bandit_parity import small as bandit_small
from test_mdx23c_parity import SMALL as MDX23C_SMALL
from test_msst_htdemucs import CONFIG as HTDEMUCS_MSST
from test_scnet_parity import SMALL as SCNET_SMALL
from test_scnet_parity import msst_config as scnet_config
from test_vr_parity import V51_DATA, write_v51
from test_worker_support import launcher_path, request, spawn, write_models_json
from tiny_demucs import write_models_dir
from tiny_mdx import SMALL_DATA, export

SEED_SECONDS = 1.0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_models_dir(
        tmp_path_factory.mktemp("families") / "models", {"tiny-demucs": {"nets": [("demucs", 0)]}}
    )
    manifest = yaml.safe_load((root / "models.json").read_text())["models"]
    weights = root / "weights"
    configs = root / "configs"
    configs.mkdir(exist_ok=True)

    torch.manual_seed(0)
    roformer = {
        "audio": {"chunk_size": 2048, "num_channels": 2, "sample_rate": 44100},
        "model": {**TINY_BS, "stereo": True},
        "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
        "inference": {"num_overlap": 2},
    }
    torch.save(msst_bs.BSRoformer(**roformer["model"]).state_dict(), weights / "bs.ckpt")
    (configs / "bs.yaml").write_text(yaml.dump(roformer, Dumper=yaml.Dumper))
    manifest["tiny-bs-roformer"] = {
        "arch": "bs_roformer",
        "weights": "weights/bs.ckpt",
        "config": "configs/bs.yaml",
    }

    parsed = Mdx23cConfig.from_dict(MDX23C_SMALL)
    net = TfcTdfNet(parsed.audio, parsed.model, len(parsed.targets))
    torch.save(net.state_dict(), weights / "mdx23c.ckpt")
    (configs / "mdx23c.yaml").write_text(yaml.safe_dump(MDX23C_SMALL))
    manifest["tiny-mdx23c"] = {
        "arch": "mdx23c",
        "weights": "weights/mdx23c.ckpt",
        "config": "configs/mdx23c.yaml",
    }

    export(weights / "mdx.onnx", SMALL_DATA)
    manifest["tiny-mdx"] = {
        "arch": "mdx",
        "weights": "weights/mdx.onnx",
        "options": {"model_data": SMALL_DATA},
    }

    write_v51(weights / "vr.pth", load_params(V51_DATA["vr_model_param"]).bins)
    manifest["tiny-vr"] = {
        "arch": "vr",
        "weights": "weights/vr.pth",
        "options": {**V51_DATA, "window_size": 320},
    }

    at_44k = {"chunk_size": 64 * 160, "sample_rate": 44100}
    htdemucs_44k = {**HTDEMUCS_MSST["training"], "samplerate": 44100}
    for name, arch, config, build in (
        ("bandit", "bandit_v2", {**bandit_small(), "audio": at_44k}, bandit.build_network),
        ("scnet", "scnet", scnet_config("scnet", SCNET_SMALL), scnet.build_network),
        (
            "htdemucs-msst",
            "htdemucs",
            {**HTDEMUCS_MSST, "training": htdemucs_44k},
            msst_htdemucs.build_network,
        ),
    ):
        torch.save(build(config).state_dict(), weights / f"{name}.ckpt")
        (configs / f"{name}.yaml").write_text(yaml.safe_dump(config))
        manifest[f"tiny-{name}"] = {
            "arch": arch,
            "weights": f"weights/{name}.ckpt",
            "config": f"configs/{name}.yaml",
        }

    msst_folder(root / "apollo")
    manifest["tiny-apollo"] = {
        "arch": "apollo",
        "weights": "apollo/apollo_tiny.ckpt",
        "config": "apollo/apollo_tiny.yaml",
    }
    return write_models_json(root, manifest, default="tiny-demucs")


LAUNCHES = [
    ("dsu-bsroformer", "tiny-bs-roformer"),
    ("dsu-bsroformer", "tiny-mdx23c"),
    ("dsu-audio-separator", "tiny-vr"),
    ("dsu-audio-separator", "tiny-mdx"),
    ("dsu-audio-separator", "tiny-mdx23c"),
    ("dsu-audio-separator", "tiny-demucs"),
    ("dsu-audio-separator", "tiny-bs-roformer"),
    ("dsu-apollo", "tiny-apollo"),
    ("dsu-bsroformer", "tiny-bandit"),
    ("dsu-bsroformer", "tiny-scnet"),
    ("dsu-demucs", "tiny-htdemucs-msst"),
]


@pytest.mark.parametrize(("launcher", "model"), LAUNCHES, ids=lambda v: v)
def test_seed_lines_through_the_launcher(
    launcher: str, model: str, models: Path, tmp_path: Path
) -> None:
    source = write_noise(tmp_path / "song.wav", SEED_SECONDS)
    process, ready = spawn(
        command=[str(launcher_path(launcher)), "--worker", "--models-dir", str(models)]
    )
    try:
        assert ready["status"] == "ready"
        assert request(process, {"cmd": "ping"})["status"] == "pong"
        loaded = request(process, {"cmd": "load_model", "model": model})
        assert loaded["status"] == "model_loaded", loaded
        out = tmp_path / "out"
        done = request(process, {"cmd": "separate", "input": str(source), "output": str(out)})
        assert done["status"] == "done", done
        assert sorted(done["stems"]) == sorted(loaded["stems"])
        for path in done["stems"].values():
            data, rate = sf.read(path, always_2d=True)
            assert rate == 44100 and data.shape == (int(SEED_SECONDS * 44100), 2)
        assert request(process, {"cmd": "exit"})["status"] == "exiting"
        assert process.wait(30) == 0
    finally:
        process.kill()
