"""SCNet XL: DSU against pymss-core's module run with MSST's ``demix``, and against
HTDemucs in DSU, side by side on the CPU.

A full-size SCNet XL IHF config (``config_musdb18_scnet_xl_more_wide_v5.yaml`` of MSST
release v1.0.15: dims 4-64-128-256, bands 0.23/0.37/0.40 with strides 1/4/4, conv depths
3/3/3, 8 dual-path layers; ``--variant xl`` takes v1.0.13's XL, strides 1/4/16, depths
3/2/1), random weights (speed does not depend on them), the published chunk (485,100
samples, 11 s) and overlap (``num_overlap`` 4; ``--num-overlap`` trades it for time on a
slow machine), one chunk per forward for both sides:

- ``pymss``: ``pymss_core.modules.scnet.SCNet`` run by ``msst.utils.model_utils.demix``;
- ``dsu``: ``Separator.separate`` on the array, the checkpoint loaded from a folder of
  ``.ckpt`` + ``.yaml`` as a user has it (MSST's framing);
- ``htdemucs``: a full-size HTDemucs (the released ``htdemucs`` configuration, random
  weights) through DSU's Demucs family, the network the SCNet paper compares costs with.

The input is ``--seconds`` of stereo noise. Each run is a fresh process, so its peak RSS
is its own. Printed, and saved to ``bench/out/scnet.json``: wall time (best of
``--rounds``), real-time factor, peak RSS, parity (SDR of DSU's stems against pymss'),
and the ratios pymss / DSU and HTDemucs / SCNet in DSU.

Usage: ``python bench/bench_scnet.py [--seconds 30] [--rounds 1] [--variant xl-ihf|xl]
[--only pymss,dsu,htdemucs]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import machine, peak_rss_mb, run_child, sdr, write_result
from scnet_configs import XL, XL_IHF

RATE = 44100
SOURCES = XL["sources"]
VARIANTS: dict[str, dict[str, Any]] = {"xl": XL, "xl-ihf": XL_IHF}
SIDES = ("pymss", "dsu", "htdemucs")


def bench_config(variant: str, num_overlap: int) -> dict[str, Any]:
    """The MSST config both SCNet sides run."""
    return {
        "audio": {"chunk_size": 485100, "num_channels": 2, "sample_rate": RATE},
        "model": dict(VARIANTS[variant]),
        "training": {"instruments": SOURCES, "target_instrument": None, "model_type": "scnet"},
        "inference": {"batch_size": 1, "num_overlap": num_overlap, "normalize": False},
    }


def reference_network(config: dict[str, Any]) -> Any:
    """pymss-core's SCNet for ``config``, random weights (seeded)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pymss_core.modules.scnet import SCNet

    torch.manual_seed(0)
    return SCNet(**config["model"]).eval()


def prepare(work: Path, variant: str, num_overlap: int) -> None:
    """The SCNet pair (``.ckpt`` + ``.yaml``) and a models dir with the HTDemucs."""
    import torch
    import yaml
    from demucs.htdemucs import HTDemucs

    config = bench_config(variant, num_overlap)
    scnet = work / "scnet"
    scnet.mkdir(parents=True)
    torch.save(reference_network(config).state_dict(), scnet / "bench-scnet.ckpt")
    (scnet / "bench-scnet.yaml").write_text(yaml.dump(config, Dumper=yaml.Dumper))

    torch.manual_seed(0)
    net = HTDemucs(SOURCES, segment=7.8)
    args, kwargs = net._init_args_kwargs
    weights = work / "htdemucs" / "weights" / "bench0000-00000000.th"
    weights.parent.mkdir(parents=True)
    state = {"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": net.state_dict()}
    torch.save(state, weights)
    manifest = {
        "version": 1,
        "models": {"bench-htdemucs": {"arch": "demucs", "weights": [f"weights/{weights.name}"]}},
    }
    (work / "htdemucs" / "models.json").write_text(json.dumps(manifest))


def run_one(work: Path, variant: str, num_overlap: int, side: str) -> dict[str, Any]:
    """One timed separation in this process; saves the stems to ``work/<side>.npy``."""
    import torch

    mix = np.load(work / "mix.npy")
    if side == "pymss":
        from ml_collections import ConfigDict
        from msst.utils.model_utils import demix

        config = bench_config(variant, num_overlap)
        net = reference_network(config)
        net.load_state_dict(torch.load(work / "scnet" / "bench-scnet.ckpt", weights_only=True))
        started = time.perf_counter()
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = demix(
                ConfigDict(config), net, torch.from_numpy(mix), torch.device("cpu"), "scnet"
            )
        out = np.stack([np.asarray(result[s]) for s in SOURCES])
    else:
        from dsu import Separator

        name, folder = ("bench-scnet", "scnet") if side == "dsu" else ("bench-htdemucs", "htdemucs")
        separator = Separator(name, models_dir=work / folder, device="cpu", batch_size=1)
        separator.load()
        started = time.perf_counter()
        result = separator.separate(mix, RATE)
        out = np.stack([result.stems[s] for s in SOURCES])
    elapsed = time.perf_counter() - started
    np.save(work / f"{side}.npy", out.astype(np.float32))
    return {"seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="xl-ihf")
    parser.add_argument(
        "--num-overlap", type=int, default=4, help="MSST's inference.num_overlap (published: 4)"
    )
    parser.add_argument("--only", default=",".join(SIDES), help="comma-separated sides to run")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(run_one(opts.work, opts.variant, opts.num_overlap, opts.child)))
        return 0

    sides = [s for s in opts.only.split(",") if s]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        parser.error(f"unknown side(s) {', '.join(unknown)}; choose from {', '.join(SIDES)}")
    times: dict[str, list[float]] = {side: [] for side in sides}
    rss = dict.fromkeys(sides, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        frames = int(opts.seconds * RATE)
        np.save(work / "mix.npy", (0.2 * rng.standard_normal((2, frames))).astype(np.float32))
        prepare(work, opts.variant, opts.num_overlap)
        args = [
            "--work",
            str(work),
            "--variant",
            opts.variant,
            "--num-overlap",
            str(opts.num_overlap),
        ]
        for _ in range(opts.rounds):
            for side in sides:
                report = run_child(__file__, ["--child", side, *args])
                times[side].append(report["seconds"])
                rss[side] = max(rss[side], report["peak_rss_mb"])
        parity = None
        if {"pymss", "dsu"} <= set(sides):
            parity = sdr(np.load(work / "pymss.npy"), np.load(work / "dsu.npy"))
    result = summarise(opts, times, rss, parity)
    print_result(result)
    print(f"saved {write_result('scnet', result)}")
    return 0


def summarise(
    opts: argparse.Namespace,
    times: dict[str, list[float]],
    rss: dict[str, float],
    parity: float | None,
) -> dict[str, Any]:
    runs = {
        side: {
            "seconds": min(all_seconds),
            "all_seconds": all_seconds,
            "rtf": min(all_seconds) / opts.seconds,
            "peak_rss_mb": rss[side],
        }
        for side, all_seconds in times.items()
    }
    ratios: dict[str, float] = {}
    if "pymss" in runs and "dsu" in runs:
        ratios["pymss_over_dsu_time"] = runs["pymss"]["seconds"] / runs["dsu"]["seconds"]
        ratios["pymss_over_dsu_rss"] = runs["pymss"]["peak_rss_mb"] / runs["dsu"]["peak_rss_mb"]
    if "htdemucs" in runs and "dsu" in runs:
        ratios["htdemucs_over_scnet_time"] = runs["htdemucs"]["seconds"] / runs["dsu"]["seconds"]
    return {
        "machine": machine(),
        "seconds": opts.seconds,
        "rounds": opts.rounds,
        "variant": opts.variant,
        "num_overlap": opts.num_overlap,
        "model": VARIANTS[opts.variant],
        "runs": runs,
        "parity_db_dsu_vs_pymss": parity,
        "ratios": ratios,
    }


def print_result(result: dict[str, Any]) -> None:
    print(
        f"SCNet {result['variant']} vs HTDemucs, {result['seconds']:g} s stereo, "
        f"num_overlap {result['num_overlap']}, CPU "
        f"({result['machine']['cores']} threads), best of {result['rounds']}"
    )
    for side, run in result["runs"].items():
        print(
            f"  {side:<9}: {run['seconds']:8.2f} s  RTF {run['rtf']:6.2f}  "
            f"peak RSS {run['peak_rss_mb']:6.0f} MB"
        )
    if result["parity_db_dsu_vs_pymss"] is not None:
        print(f"  parity   : DSU vs pymss-core + demix {result['parity_db_dsu_vs_pymss']:.1f} dB")
    for name, value in result["ratios"].items():
        print(f"  {name:<25}: {value:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
