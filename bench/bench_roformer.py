"""RoFormers: DSU against audio-separator's and MSST's own separation, side by side.

Two full-size configs, random weights (speed does not depend on them): viperx's
BS-RoFormer ep_317 (dim 512, depth 12, 62 bands) and KimberleyJensen's Mel-Band RoFormer
(dim 384, depth 6, 60 bands), as DSU's catalog ships them, with ``zero_dc`` off (the one
switch audio-separator's network lacks), so all three run the same network. The same
input (``--seconds`` of stereo noise), the same chunk (8 s: ``audio.chunk_size`` 352800 =
hop 441 x (``dim_t`` 801 - 1)) and the same overlap (``num_overlap`` 2) for everyone:

- ``audio-separator``: ``MDXCSeparator.demix`` of audio-separator 0.47.1 (its RoFormer
  path: one chunk per forward, the last one moved back to the track's end, a Hamming
  window), on its own bundled network;
- ``msst``: ``msst.utils.model_utils.demix`` (MSST's framing over the mirrored track,
  ``inference.batch_size`` chunks per forward), on MSST's network;
- ``dsu-<framing>-<precision>``: ``Separator.separate`` on the array, the checkpoint
  loaded from a folder of ``.ckpt`` + ``.yaml`` as a user has it, in the ``msst`` framing
  (the default) or the ``uvr`` one (audio-separator's, ``--framing uvr``).

Each run is a fresh process, so its peak RSS is its own; runs alternate. Printed, and
saved to ``bench/out/roformer.json``: wall time (best of ``--rounds``), real-time
factor, peak RSS, chunks run, parity (SDR against the reference of the same framing:
``uvr`` against audio-separator, ``msst`` against MSST; a bf16 run against fp32 of its
framing), the ratios, the network's GFLOP per second of audio (FlopCounterMode on one
chunk, times the chunks each framing runs) and the fraction of this machine's peak
fp32 matmul rate each run achieves.

Usage: ``python bench/bench_roformer.py [--seconds 30] [--rounds 2] [--only bs|mel]
[--dsu-runs msst-fp32,uvr-fp32,uvr-bf16] [--references audio-separator,msst]``
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

from common import (
    count_gflop,
    machine,
    peak_matmul_gflops,
    peak_rss_mb,
    run_child,
    sdr,
    write_result,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CONFIGS = {
    "bs": ("bs_roformer", "model_bs_roformer_ep_317_sdr_12.9755.yaml"),
    "mel": ("mel_band_roformer", "config_vocals_mel_band_roformer_kj.yaml"),
}
CHUNK, DIM_T, NUM_OVERLAP = 352800, 801, 2
RATE = 44100
REFERENCE_OF = {"uvr": "audio-separator", "msst": "msst"}
"""The reference each DSU framing reproduces."""


def bench_config(which: str) -> dict[str, Any]:
    """The catalog's config with the chunk and overlap everyone runs."""
    from importlib.resources import files

    from dsu.archs.msst_config import read_config

    config = read_config(files("dsu.registry") / "catalog" / "configs" / CONFIGS[which][1])
    config["audio"]["chunk_size"] = CHUNK
    config["model"]["zero_dc"] = False
    config.setdefault("inference", {}).update(dim_t=DIM_T, num_overlap=NUM_OVERLAP)
    config["training"]["target_instrument"] = config["training"]["instruments"][0]
    return config


def reference_network(which: str, config: dict[str, Any], package: str) -> Any:
    """audio-separator's or MSST's own network for ``config`` (random weights)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if package == "msst":
            from msst.models.bs_roformer import bs_roformer as bs
            from msst.models.bs_roformer import mel_band_roformer as mel
        else:
            from audio_separator.separator.uvr_lib_v5.roformer import bs_roformer as bs
            from audio_separator.separator.uvr_lib_v5.roformer import mel_band_roformer as mel
    torch.manual_seed(0)
    cls = bs.BSRoformer if which == "bs" else mel.MelBandRoformer
    return cls(**config["model"]).eval()


def prepare(work: Path, which: str) -> None:
    """Weights (shared by all three) and the DSU models folder (``.ckpt`` + ``.yaml``)."""
    import torch
    import yaml

    config = bench_config(which)
    net = reference_network(which, config, "msst")
    models = work / which
    models.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), models / f"bench-{which}.ckpt")
    (models / f"bench-{which}.yaml").write_text(yaml.dump(config, Dumper=yaml.Dumper))


def separator(work: Path, which: str, framing: str = "msst", precision: str = "fp32") -> Any:
    from dsu import Separator

    dsu = Separator(
        f"bench-{which}",
        models_dir=work / which,
        device="cpu",
        precision=precision,
        framing=framing,
    )
    dsu.load()
    return dsu


def run_one(work: Path, which: str, who: str) -> dict[str, Any]:
    """One timed separation in this process; saves the target stem to ``work``."""
    import torch
    from ml_collections import ConfigDict

    mix = np.load(work / "mix.npy")
    config = bench_config(which)
    target = config["training"]["target_instrument"]
    state = torch.load(work / which / f"bench-{which}.ckpt", weights_only=True)
    if who.startswith("dsu"):
        _, framing, precision = who.split("-")
        dsu = separator(work, which, framing, precision)
        started = time.perf_counter()
        out = dsu.separate(mix, RATE, stems=[target]).stems[target]
    elif who == "msst":
        from msst.utils.model_utils import demix

        net = reference_network(which, config, "msst")
        net.load_state_dict(state)
        started = time.perf_counter()
        with torch.inference_mode():
            result = demix(
                ConfigDict(config),
                net,
                torch.from_numpy(mix),
                torch.device("cpu"),
                CONFIGS[which][0],
            )
        out = np.asarray(result[target])
    else:
        from uvr_reference import uvr_demix

        net = reference_network(which, config, "audio-separator")
        net.load_state_dict(state)
        started = time.perf_counter()
        out = uvr_demix(config, net, mix, NUM_OVERLAP)
    elapsed = time.perf_counter() - started
    np.save(work / f"{which}-{who}.npy", out.astype(np.float32))
    return {"seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def measure_network(work: Path, which: str, frames: int) -> dict[str, Any]:
    """GFLOP of one chunk's forward, the chunks each side runs, and the peak matmul rate."""
    import torch

    from dsu.engine import EngineOptions
    from dsu.engine.framing import plan

    model = separator(work, which).model
    gflop = count_gflop(lambda: model(torch.zeros(1, 2, CHUNK)))
    step = CHUNK // NUM_OVERLAP
    border = CHUNK - step
    mirrored = frames + 2 * border if frames > 2 * border else frames
    chunks = {
        "msst": len(range(0, mirrored, step)),  # demix runs its whole grid
        "audio-separator": len(plan(model, frames, 0, EngineOptions(framing="uvr"))),
        "dsu-msst": len(plan(model, frames, 0, EngineOptions(framing="msst"))),
        "dsu-uvr": len(plan(model, frames, 0, EngineOptions(framing="uvr"))),
    }
    return {"gflop_per_chunk": gflop, "chunks": chunks, "peak_gflops": peak_matmul_gflops()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=sorted(CONFIGS))
    parser.add_argument(
        "--references",
        default="audio-separator,msst",
        help="comma-separated references to run (audio-separator, msst)",
    )
    parser.add_argument(
        "--dsu-runs",
        default="msst-fp32,uvr-fp32,uvr-bf16",
        help="comma-separated DSU runs, FRAMING-PRECISION (framing msst or uvr; bf16 runs "
        "autocast on the CPU's AVX-512 bf16 units)",
    )
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "WHO"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    frames = int(opts.seconds * RATE)
    if opts.child:
        print(json.dumps(run_one(opts.work, *opts.child)))
        return 0
    if opts.measure:
        print(json.dumps(measure_network(opts.work, opts.measure, frames)))
        return 0

    dsu_runs = [f"dsu-{r}" for r in opts.dsu_runs.split(",") if r]
    references = [r for r in opts.references.split(",") if r]
    who_all = (*references, *dsu_runs)
    results: dict[str, Any] = {"machine": machine(), "seconds": opts.seconds, "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        np.save(work / "mix.npy", (0.2 * rng.standard_normal((2, frames))).astype(np.float32))
        for which in [opts.only] if opts.only else sorted(CONFIGS):
            prepare(work, which)
            common = ["--work", str(work), "--seconds", str(opts.seconds)]
            network = run_child(__file__, ["--measure", which, *common])
            times: dict[str, list[float]] = {who: [] for who in who_all}
            rss = dict.fromkeys(who_all, 0.0)
            for _ in range(opts.rounds):
                for who in who_all:
                    report = run_child(__file__, ["--child", which, who, *common])
                    times[who].append(report["seconds"])
                    rss[who] = max(rss[who], report["peak_rss_mb"])
            results["configs"][which] = summarise(
                work, which, who_all, times, rss, network, opts.seconds
            )
            print_config(which, results["configs"][which], opts)
    results["peak_gflops"] = network["peak_gflops"]
    path = write_result("roformer", results)
    print(f"saved {path}")
    return 0


def summarise(
    work: Path,
    which: str,
    who_all: tuple[str, ...],
    times: dict[str, list[float]],
    rss: dict[str, float],
    network: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """Per run: best time, real-time factor, RSS, chunks, parity, GFLOP/s of audio, peak."""
    runs: dict[str, Any] = {}
    for who in who_all:
        framing = who.split("-")[1] if who.startswith("dsu") else None
        chunks = network["chunks"][f"dsu-{framing}" if framing else who]
        best = min(times[who])
        gflop = chunks * network["gflop_per_chunk"]
        run: dict[str, Any] = {
            "seconds": best,
            "all_seconds": times[who],
            "rtf": best / seconds,
            "peak_rss_mb": rss[who],
            "chunks": chunks,
            "gflop_per_audio_second": gflop / seconds,
            "peak_fraction": gflop / best / network["peak_gflops"],
        }
        if framing:
            ours = np.load(work / f"{which}-{who}.npy")
            reference = REFERENCE_OF[framing]
            against = reference if reference in who_all else None
            if who.endswith("bf16") and f"dsu-{framing}-fp32" in who_all:
                against = f"dsu-{framing}-fp32"
            if against:
                run["parity_against"] = against
                run["parity_db"] = sdr(np.load(work / f"{which}-{against}.npy"), ours)
                if against in REFERENCE_OF.values():
                    run["speedup"] = min(times[against]) / best
        runs[who] = run
    return {
        "network": CONFIGS[which][1],
        "gflop_per_chunk": network["gflop_per_chunk"],
        "runs": runs,
    }


def print_config(which: str, result: dict[str, Any], opts: argparse.Namespace) -> None:
    print(
        f"{result['network']} ({CONFIGS[which][0]}), {opts.seconds:g} s stereo, chunk {CHUNK} "
        f"num_overlap {NUM_OVERLAP}, CPU, best of {opts.rounds}; one chunk "
        f"{result['gflop_per_chunk']:.0f} GFLOP"
    )
    for who, run in result["runs"].items():
        line = (
            f"  {who:<16}: {run['seconds']:8.2f} s  RTF {run['rtf']:5.2f}  "
            f"{run['chunks']:2d} chunks "
            f"({run['seconds'] / run['chunks']:6.2f} s each)  peak RSS {run['peak_rss_mb']:6.0f} MB"
            f"  {run['peak_fraction']:5.1%} of peak"
        )
        if "parity_db" in run:
            line += f"  SDR vs {run['parity_against']} {run['parity_db']:6.1f} dB"
        if "speedup" in run:
            line += f"  {run['speedup']:4.2f}x faster"
        print(line)
    every = {who: run["all_seconds"] for who, run in result["runs"].items()}
    print(f"  all runs (s)    : {json.dumps(every)}")


if __name__ == "__main__":
    raise SystemExit(main())
