"""RoFormers: DSU against audio-separator's and MSST's own separation, side by side.

Two full-size configs, random weights (speed does not depend on them): viperx's
BS-RoFormer ep_317 (dim 512, depth 12, 62 bands) and KimberleyJensen's Mel-Band RoFormer
(dim 384, depth 6, 60 bands), as DSU's catalog ships them. The same input (``--seconds``
of stereo noise), the same chunk (8 s: ``audio.chunk_size`` 352800 = hop 441 x
(``dim_t`` 801 - 1)) and the same overlap (``num_overlap`` 2) for everyone:

- ``audio-separator``: ``MDXCSeparator.demix`` of audio-separator 0.47.1 (its RoFormer
  path: one chunk per forward, a Hamming window), on its own bundled network;
- ``msst``: ``msst.utils.model_utils.demix`` (MSST's framing, ``inference.batch_size``
  chunks per forward), on MSST's network;
- ``dsu``: ``Separator.separate`` on the array, the checkpoint loaded from a folder of
  ``.ckpt`` + ``.yaml`` as a user has it.

Each run is a fresh process, so its peak RSS is its own; runs alternate. Printed: wall
time (best of ``--rounds``), peak RSS, parity (SDR of DSU's target stem against each
reference's) and the ratios. DSU's parity against MSST is exact framing; against
audio-separator it differs by its window and its tail chunk, as the two tools differ.

Usage: ``python bench/bench_roformer.py [--seconds 30] [--rounds 2] [--only bs|mel]
[--dsu-precisions fp32,bf16]`` (bf16 runs autocast on the CPU's AMX/AVX-512 bf16 units).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from common import peak_rss_mb, run_child, sdr

CONFIGS = {
    "bs": ("bs_roformer", "model_bs_roformer_ep_317_sdr_12.9755.yaml"),
    "mel": ("mel_band_roformer", "config_vocals_mel_band_roformer_kj.yaml"),
}
CHUNK, DIM_T, NUM_OVERLAP = 352800, 801, 2


def bench_config(which: str) -> dict[str, Any]:
    """The catalog's config with the chunk and overlap everyone runs."""
    from importlib.resources import files

    from dsu.archs.msst_config import read_config

    config = read_config(files("dsu.registry") / "catalog" / "configs" / CONFIGS[which][1])
    config["audio"]["chunk_size"] = CHUNK
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


def run_one(work: Path, which: str, who: str, precision: str) -> dict[str, Any]:
    """One timed separation in this process; saves the target stem to ``work``."""
    import torch
    from ml_collections import ConfigDict

    mix = np.load(work / "mix.npy")
    config = bench_config(which)
    target = config["training"]["target_instrument"]
    state = torch.load(work / which / f"bench-{which}.ckpt", weights_only=True)
    if who == "dsu":
        from dsu import Separator

        separator = Separator(
            f"bench-{which}", models_dir=work / which, device="cpu", precision=precision
        )
        separator.load()
        started = time.perf_counter()
        out = separator.separate(mix, 44100, stems=[target]).stems[target]
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from audio_separator.separator.architectures.mdxc_separator import MDXCSeparator

        net = reference_network(which, config, "audio-separator")
        net.load_state_dict(state)
        separator = object.__new__(MDXCSeparator)  # its demix, without its file I/O set-up
        separator.logger = logging.getLogger("audio-separator")
        separator.override_model_segment_size = False
        separator.pitch_shift = 0
        separator.is_roformer = True
        separator.model_data_cfgdict = ConfigDict(config)
        separator.overlap = NUM_OVERLAP
        separator.model_run = net
        separator.is_primary_stem_main_target = False
        started = time.perf_counter()
        out = np.asarray(separator.demix(mix))
    elapsed = time.perf_counter() - started
    np.save(work / f"{which}-{who}.npy", out.astype(np.float32))
    return {"seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def chunk_counts(frames: int) -> dict[str, int]:
    """Forward passes each framing makes over ``frames`` samples."""
    step = CHUNK // NUM_OVERLAP
    border = CHUNK - step
    padded = frames + 2 * border if frames > 2 * border else frames
    tail, starts = 0, []
    for offset in range(0, frames, step):  # audio-separator: the last chunk ends at the end
        if offset + CHUNK >= frames:
            tail = max(frames - CHUNK, 0)
            if not starts or starts[-1] != tail:
                starts.append(tail)
            break
        starts.append(offset)
    return {"audio-separator": len(starts), "msst": len(range(0, padded, step))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", choices=sorted(CONFIGS))
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument(
        "--references",
        default="audio-separator,msst",
        help="comma-separated references to run (audio-separator, msst)",
    )
    parser.add_argument(
        "--dsu-precisions",
        default="fp32",
        help="comma-separated precisions DSU runs in (e.g. fp32,bf16); the references run fp32",
    )
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "WHO"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(run_one(opts.work, *opts.child, opts.precision)))
        return 0

    dsu_runs = [f"dsu-{p}" for p in opts.dsu_precisions.split(",")]
    references = [r for r in opts.references.split(",") if r]
    who_all = (*references, *dsu_runs)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        frames = int(opts.seconds * 44100)
        np.save(work / "mix.npy", (0.2 * rng.standard_normal((2, frames))).astype(np.float32))
        for which in [opts.only] if opts.only else sorted(CONFIGS):
            prepare(work, which)
            times: dict[str, list[float]] = {who: [] for who in who_all}
            rss = dict.fromkeys(who_all, 0.0)
            for _ in range(opts.rounds):
                for who in who_all:
                    name, _, precision = (
                        who.partition("-") if who.startswith("dsu") else (who, "", "fp32")
                    )
                    report = run_child(
                        __file__,
                        ["--child", which, name, "--work", str(work), "--precision", precision],
                    )
                    if name == "dsu":
                        (work / f"{which}-dsu.npy").rename(work / f"{which}-{who}.npy")
                    times[who].append(report["seconds"])
                    rss[who] = max(rss[who], report["peak_rss_mb"])
            ours = np.load(work / f"{which}-{dsu_runs[0]}.npy")
            best = {who: min(t) for who, t in times.items()}
            chunks = chunk_counts(frames)
            print(
                f"{CONFIGS[which][1]} ({CONFIGS[which][0]}), {opts.seconds:.0f} s stereo, "
                f"chunk {CHUNK} num_overlap {NUM_OVERLAP}, CPU, best of {opts.rounds}; "
                f"chunks run: audio-separator {chunks['audio-separator']}, MSST and DSU "
                f"{chunks['msst']} (MSST's framing also covers the reflected borders)"
            )
            for who in who_all:
                count = chunks["audio-separator" if who == "audio-separator" else "msst"]
                line = (
                    f"  {who:<16}: {best[who]:8.2f} s  ({best[who] / count:6.2f} s a chunk)"
                    f"   peak RSS {rss[who]:7.0f} MB"
                )
                theirs = np.load(work / f"{which}-{who}.npy")
                if who != dsu_runs[0]:
                    line += f"   SDR vs {dsu_runs[0]} {sdr(theirs, ours):6.1f} dB"
                print(line)
            for dsu in dsu_runs:
                for ref in references:
                    per_chunk = (best[ref] / chunks[ref]) / (best[dsu] / chunks["msst"])
                    print(
                        f"  {ref}/{dsu}: {best[ref] / best[dsu]:5.2f}x wall, "
                        f"{per_chunk:5.2f}x per chunk"
                    )
            print(f"  all runs (s)    : {json.dumps(times)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
