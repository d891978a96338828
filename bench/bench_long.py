"""A long input through ``dsu separate`` to stem files: peak RSS per family.

One ``--minutes``-long stereo WAV (60 by default) is generated to disk; each family
separates it with a small random-weight network (a full-size one would take hours: the
memory measured is the engine's streaming, not the network's) to stem files, as a user
runs ``dsu separate``. Each run is its own process; its peak RSS comes from ``wait4``.
Families: ``center`` (built-in, no weights), ``demucs`` (a tiny HTDemucs package),
``roformer`` (a tiny BS-RoFormer ``.ckpt`` + ``.yaml``, in the ``msst`` and ``uvr``
framings), ``mdx23c`` (a tiny TFC-TDF U-Net ``.ckpt`` + ``.yaml``), ``vr`` (a tiny v5.1
cascaded net, ``tests/test_vr_parity.write_v51``), ``mdx`` (a tiny UVR ONNX graph,
``tests/tiny_mdx``), ``apollo``, ``scnet`` and ``bandit`` (small MSST ``.ckpt`` + ``.yaml``
pairs; BandIt v2 runs at 48 kHz, so its input is resampled on the way). Saved to
``bench/out/long.json``; the target is 1.5 GB.

Usage: ``python bench/bench_long.py [--minutes 60] [--families center,demucs,roformer]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import OUT, machine, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

RATE = 44100
LIMIT_MB = 1536
TINY_ROFORMER = {
    "audio": {"chunk_size": 441 * 100, "num_channels": 2, "sample_rate": RATE},
    "model": {
        "dim": 16,
        "depth": 1,
        "stereo": True,
        "num_stems": 1,
        "time_transformer_depth": 1,
        "freq_transformer_depth": 1,
        "freqs_per_bands": (64, 64, 128, 256, 513),
        "dim_head": 8,
        "heads": 2,
        "stft_n_fft": 2048,
        "stft_hop_length": 441,
        "stft_win_length": 2048,
        "mask_estimator_depth": 1,
    },
    "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
    "inference": {"dim_t": 101, "num_overlap": 2},
}
"""A 1-second-chunk BS-RoFormer small enough that an hour takes minutes."""
TINY_MDX23C = {
    "audio": {
        "chunk_size": 64 * 255,
        "dim_f": 128,
        "dim_t": 256,
        "hop_length": 64,
        "n_fft": 256,
        "num_channels": 2,
        "sample_rate": RATE,
        "min_mean_abs": 0.001,
    },
    "model": {
        "act": "gelu",
        "bottleneck_factor": 4,
        "growth": 8,
        "norm": "InstanceNorm",
        "num_blocks_per_scale": 1,
        "num_channels": 8,
        "num_scales": 2,
        "num_subbands": 4,
        "scale": [2, 2],
    },
    "training": {
        "instruments": ["Vocals", "Instrumental"],
        "target_instrument": None,
        "model_type": "mdx23c",
    },
    "inference": {"batch_size": 1, "dim_t": 256, "num_overlap": 2},
}
"""A TFC-TDF U-Net (MDX23C) of 0.37-second chunks, two scales, eight channels."""
SCNET_CHUNK = 64 * 690
"""About one second: 690 hops of the small SCNet's 64-sample STFT hop."""
BANDIT_CHUNK = 64 * 750
"""One second at BandIt v2's 48 kHz."""


def write_input(path: Path, minutes: float) -> None:
    """Stereo noise, written a minute at a time (the bench itself stays small)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    total = int(minutes * 60 * RATE)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as f:
        for start in range(0, total, 60 * RATE):
            n = min(60 * RATE, total - start)
            f.write((0.1 * rng.standard_normal((n, 2))).astype(np.float32))


def write_models(work: Path) -> Path:
    """A models folder with a tiny network of each family in :data:`CASES`."""
    import torch
    import yaml
    from ml_collections import ConfigDict
    from msst.models.bs_roformer.bs_roformer import BSRoformer
    from msst.models.mdx23c_tfc_tdf_v3 import TFC_TDF_net

    from dsu.archs.apollo import ApolloConfig
    from dsu.registry.scan import scan
    from test_apollo import random_net, write_msst
    from test_bandit_parity import reference as bandit_reference
    from test_bandit_parity import small as bandit_small
    from test_bandit_parity import write_folder as write_bandit
    from test_scnet_parity import SMALL as SCNET_SMALL
    from test_scnet_parity import msst_config, write_pair
    from test_scnet_parity import reference as scnet_reference
    from test_vr_parity import V51_DATA, WINDOW, write_v51
    from tiny_demucs import tiny_net, write_package
    from tiny_mdx import SMALL_DATA, export

    models = work / "models"
    models.mkdir()
    torch.manual_seed(0)
    torch.save(BSRoformer(**TINY_ROFORMER["model"]).state_dict(), models / "tiny-bs.ckpt")
    (models / "tiny-bs.yaml").write_text(yaml.dump(TINY_ROFORMER, Dumper=yaml.Dumper))
    net = TFC_TDF_net(ConfigDict(TINY_MDX23C))
    torch.save(net.state_dict(), models / "tiny-mdx23c.ckpt")
    (models / "tiny-mdx23c.yaml").write_text(yaml.dump(TINY_MDX23C, Dumper=yaml.Dumper))
    write_msst(random_net(ApolloConfig(feature_dim=16, layer=1)), models, name="tiny-apollo")
    scnet_config = msst_config("scnet", SCNET_SMALL)
    scnet_config["audio"]["chunk_size"] = SCNET_CHUNK
    write_pair(models, "tiny-scnet", scnet_config, scnet_reference("scnet", SCNET_SMALL))
    bandit_config = bandit_small()
    bandit_config["audio"]["chunk_size"] = BANDIT_CHUNK
    write_bandit(models, bandit_config, bandit_reference(bandit_config).state_dict())
    # The MSST pairs' entries as `dsu models scan` makes them; a manifest replaces the scan.
    entries = scan(models, warn=lambda _: None)["models"]
    weights = write_package(tiny_net("htdemucs"), models / "weights", "tiny0000")
    entries["tiny-demucs"] = {
        "arch": "demucs",
        "weights": [str(weights.relative_to(models))],
        "stems": ["drums", "bass", "other", "vocals"],
    }
    write_v51(models / "tiny-vr.pth", 672)
    entries["tiny-vr"] = {
        "arch": "vr",
        "weights": "tiny-vr.pth",
        "stems": ["vocals", "instrumental"],
        "options": {**V51_DATA, **WINDOW},
    }
    export(models / "tiny-mdx.onnx", SMALL_DATA)
    entries["tiny-mdx"] = {
        "arch": "mdx",
        "weights": "tiny-mdx.onnx",
        "stems": ["vocals", "instrumental"],
        "options": {"model_data": SMALL_DATA},
    }
    (models / "models.json").write_text(json.dumps({"version": 1, "models": entries}))
    return models


CASES = {
    "center": ["-m", "center"],
    "demucs": ["-m", "tiny-demucs"],
    "roformer": ["-m", "tiny-bs"],
    "roformer-uvr": ["-m", "tiny-bs", "--framing", "uvr"],
    "mdx23c": ["-m", "tiny-mdx23c"],
    "vr": ["-m", "tiny-vr"],
    "mdx": ["-m", "tiny-mdx"],
    "apollo": ["-m", "tiny-apollo"],
    "scnet": ["-m", "tiny-scnet"],
    "bandit": ["-m", "dnr"],
}


def run_case(song: Path, models: Path, out: Path, args: list[str]) -> dict[str, Any]:
    """``dsu separate`` in its own process: wall time and that process's peak RSS."""
    command = [sys.executable, "-m", "dsu", "separate", str(song), "--models-dir", str(models)]
    started = time.perf_counter()
    child = subprocess.Popen([*command, *args, "-o", str(out)], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {child.stderr.read().decode()[-2000:]}")
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    return {"seconds": elapsed, "peak_rss_mb": usage.ru_maxrss / 1024, "files": files}


def earlier_results(minutes: float) -> dict[str, Any]:
    """The families a previous run saved for the same length, kept beside this run's.

    A 60-minute run of every family takes hours here, so it is often split by
    ``--families``; each part adds to ``long.json`` instead of replacing it.
    """
    try:
        saved = json.loads((OUT / "long.json").read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) and saved.get("minutes") == minutes else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--families", default=",".join(CASES))
    opts = parser.parse_args()
    results = earlier_results(opts.minutes)
    results.update({"machine": machine(), "minutes": opts.minutes, "limit_mb": LIMIT_MB})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        song = work / "long.wav"
        write_input(song, opts.minutes)
        models = write_models(work)
        for name in opts.families.split(","):
            run = run_case(song, models, work / f"out-{name}", CASES[name])
            results[name] = {"seconds": run["seconds"], "peak_rss_mb": run["peak_rss_mb"]}
            verdict = "ok" if run["peak_rss_mb"] <= LIMIT_MB else "OVER"
            print(
                f"{name:<13} {opts.minutes:g} min -> {len(run['files'])} stem files: "
                f"{run['seconds']:7.1f} s, peak RSS {run['peak_rss_mb']:6.0f} MB ({verdict})"
            )
    print(f"saved {write_result('long', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
