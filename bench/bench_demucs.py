"""Demucs: DSU against Demucs' own separation, side by side, same weights and input.

Case 1 runs a full-size HTDemucs (random weights: speed does not depend on them) on the
same 60 s input through ``demucs.apply.apply_model`` with ``demucs.api``'s normalisation
and through DSU (``Separator.separate`` on the array): its default (fp32, ``auto``:
torch), fp32 on OpenVINO, and bf16 with ``auto`` (OpenVINO when the ``openvino`` extra is
installed), alternately, each run in a fresh process so peak RSS is its own. The
compiled-graph cache is the run's own, so OpenVINO's first round pays for the export (the
"all runs" line shows it) and later rounds read the saved graph. It prints wall time,
peak RSS, parity (SDR of each DSU side's stems against Demucs'), the time ratio
DSU / Demucs, the network's GFLOP per chunk and per second of audio, and each side's
fraction of the machine's peak fp32 matmul rate.

Case 2 separates a 60-minute file to four stem files with a tiny random Demucs network
and prints DSU's peak RSS: the memory is the engine's streaming, whatever the network.

Usage: ``python bench/bench_demucs.py [--seconds 60] [--rounds 2] [--hour-minutes 60]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
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

SOURCES = ["drums", "bass", "other", "vocals"]
DSU_SIDES = {
    "dsu": ("auto", "fp32"),
    "dsu-openvino": ("openvino", "fp32"),
    "dsu-bf16": ("auto", "bf16"),
}
"""DSU's sides and the backend and precision each asks for."""


def make_network(work: Path) -> Path:
    """A full-size HTDemucs (the released ``htdemucs`` configuration), random weights."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    net = HTDemucs(SOURCES, segment=7.8)
    args, kwargs = net._init_args_kwargs
    path = work / "weights" / "bench0000-00000000.th"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": net.state_dict()}, path)
    manifest = {
        "version": 1,
        "models": {
            "bench-htdemucs": {
                "arch": "demucs",
                "weights": [f"weights/{path.name}"],
                "stems": SOURCES,
            }
        },
    }
    (work / "models.json").write_text(json.dumps(manifest))
    return path


def demucs_separate(net: Any, wav: Any) -> Any:
    """``apply_model`` with ``demucs.api``'s normalisation: ``[C, T]`` -> ``[S, C, T]``,
    on ``wav``'s device."""
    import torch
    from demucs.apply import apply_model

    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    with torch.no_grad():
        est = apply_model(net, ((wav - mean) / std)[None], shifts=0, overlap=0.25)[0]
    return est * std + mean


def network_cost(work: Path, frames: int) -> dict:
    """GFLOP of one chunk (matmuls, convolutions and attention, counted on torch's path),
    the chunks DSU's grid runs over ``frames`` samples (the same grid as
    ``apply_model``'s), and this machine's peak fp32 matmul rate."""
    import torch

    from dsu import Separator
    from dsu.engine import EngineOptions
    from dsu.engine.framing import plan

    model = Separator("bench-htdemucs", models_dir=work, device="cpu", backend="torch").model
    gflop = count_gflop(lambda: model(torch.zeros(1, 2, model.segment)))
    chunks = len(plan(model, frames, 0, EngineOptions()))
    return {"gflop_per_chunk": gflop, "chunks": chunks, "peak_gflops": peak_matmul_gflops()}


def run_one(which: str, work: Path, batch_size: int) -> dict:
    """One timed separation in this process; writes the stems to ``work/<which>.npy``."""
    import torch

    mix = np.load(work / "mix.npy")
    backend = None
    if which in DSU_SIDES:
        from dsu import Separator
        from dsu.engine.backends import resolve_backend

        asked, precision = DSU_SIDES[which]
        separator = Separator(
            "bench-htdemucs",
            models_dir=work,
            device="cpu",
            batch_size=batch_size,
            backend=asked,
            precision=precision,
        )
        separator.load()
        backend = resolve_backend(asked, separator.model.backends, "cpu", precision)
        started = time.perf_counter()
        result = separator.separate(mix, 44100)
        elapsed = time.perf_counter() - started
        out = np.stack([result.stems[s] for s in SOURCES])
    else:
        from demucs.states import load_model

        net = load_model(next((work / "weights").glob("*.th"))).eval()
        started = time.perf_counter()
        out = demucs_separate(net, torch.from_numpy(mix)).numpy()
        elapsed = time.perf_counter() - started
    np.save(work / f"{which}.npy", out)
    return {"which": which, "seconds": elapsed, "peak_rss_mb": peak_rss_mb(), "backend": backend}


def run_hour(work: Path, minutes: float) -> dict:
    """Separate a long file to four stem files with a tiny network, in this process."""
    import soundfile as sf
    import torch
    from demucs.demucs import Demucs

    from dsu import Separator

    torch.manual_seed(0)
    net = Demucs(SOURCES, channels=8, depth=3, segment=10, lstm_layers=1)
    args, kwargs = net._init_args_kwargs
    weights = work / "hour" / "weights" / "tiny0000-00000000.th"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"klass": Demucs, "args": args, "kwargs": kwargs, "state": net.state_dict()}, weights
    )
    manifest = {
        "version": 1,
        "models": {"tiny": {"arch": "demucs", "weights": [f"weights/{weights.name}"]}},
    }
    (work / "hour" / "models.json").write_text(json.dumps(manifest))
    source = work / "hour" / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(source, "w", 44100, 2, subtype="PCM_16") as f:
        for _ in range(int(minutes * 6)):
            f.write((0.1 * rng.standard_normal((441000, 2))).astype(np.float32))
    baseline = peak_rss_mb()
    separator = Separator("tiny", models_dir=work / "hour", device="cpu")
    started = time.perf_counter()
    result = separator.separate(source, output_dir=work / "hour" / "out")
    elapsed = time.perf_counter() - started
    sizes = {stem: path.stat().st_size for stem, path in result.files.items()}
    return {
        "minutes": minutes,
        "seconds": elapsed,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": baseline,
        "stem_bytes": sizes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--hour-minutes", type=float, default=60.0)
    parser.add_argument("--skip-hour", action="store_true")
    parser.add_argument("--child", choices=("demucs", *DSU_SIDES, "hour"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child == "hour":
        print(json.dumps(run_hour(opts.work, opts.hour_minutes)))
        return 0
    if opts.child:
        print(json.dumps(run_one(opts.child, opts.work, opts.batch_size)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["DSU_CACHE_DIR"] = str(work / "cache")  # the children's, cold at first
        make_network(work)
        rng = np.random.default_rng(0)
        np.save(
            work / "mix.npy",
            (0.2 * rng.standard_normal((2, int(opts.seconds * 44100)))).astype(np.float32),
        )
        sides = ("demucs", *DSU_SIDES)
        times: dict[str, list[float]] = {who: [] for who in sides}
        rss = dict.fromkeys(sides, 0.0)
        backends: dict[str, str | None] = {}
        common = ["--work", str(work), "--batch-size", str(opts.batch_size)]
        for _ in range(opts.rounds):
            for which in sides:
                report = run_child(__file__, ["--child", which, *common])
                times[which].append(report["seconds"])
                rss[which] = max(rss[which], report["peak_rss_mb"])
                backends[which] = report["backend"]
        theirs = np.load(work / "demucs.npy")
        best = {k: min(v) for k, v in times.items()}
        print(
            f"HTDemucs full size, {opts.seconds:.0f} s stereo input, CPU, "
            f"{opts.rounds} rounds (best)"
        )
        cost = network_cost(work, int(opts.seconds * 44100))
        gflop = cost["chunks"] * cost["gflop_per_chunk"]
        print(
            f"  network            : {cost['gflop_per_chunk']:.0f} GFLOP per chunk, "
            f"{cost['chunks']} chunks, {gflop / opts.seconds:.1f} GFLOP per second of audio; "
            f"peak fp32 matmul {cost['peak_gflops']:.0f} GFLOP/s"
        )
        runs = {
            who: {
                "seconds": best[who],
                "all_seconds": times[who],
                "rtf": best[who] / opts.seconds,
                "peak_rss_mb": rss[who],
                "chunks": cost["chunks"],
                "gflop_per_audio_second": gflop / opts.seconds,
                # bf16 runs the same work on the AMX units: over the fp32 peak it can pass 1.
                "peak_fraction": gflop / best[who] / cost["peak_gflops"],
            }
            for who in sides
        }
        print(
            f"  demucs apply_model : {best['demucs']:8.2f} s   peak RSS {rss['demucs']:7.0f} MB   "
            f"{runs['demucs']['peak_fraction']:5.1%} of peak"
        )
        for who in DSU_SIDES:
            parity = sdr(theirs, np.load(work / f"{who}.npy"))
            label = f"DSU ({who[4:] or 'default'}: {backends[who]})"
            print(
                f"  {label:19s}: {best[who]:8.2f} s   peak RSS {rss[who]:7.0f} MB   "
                f"{runs[who]['peak_fraction']:5.1%} of peak"
            )
            print(
                f"    parity {parity:.1f} dB SDR, ratio DSU/demucs {best[who] / best['demucs']:.3f}"
            )
            runs[who] |= {
                "backend": backends[who],
                "parity_db": parity,
                "parity_against": "demucs",
                "speedup": best["demucs"] / best[who],
            }
        print("  all runs (s)       : " + "  ".join(f"{w} {times[w]}" for w in sides))
        result = {
            "machine": machine(),
            "seconds": opts.seconds,
            "peak_gflops": cost["peak_gflops"],
            "configs": {"htdemucs": {"network": "HTDemucs (full size)", "runs": runs}},
        }
        if not opts.skip_hour:
            hour = run_child(
                __file__,
                ["--child", "hour", "--work", str(work), "--hour-minutes", str(opts.hour_minutes)],
            )
            print(f"{hour['minutes']:.0f}-minute file -> 4 stem files, tiny Demucs network, CPU")
            print(f"  DSU time           : {hour['seconds']:8.1f} s")
            print(
                f"  DSU peak RSS       : {hour['peak_rss_mb']:8.0f} MB "
                f"(after imports: {hour['rss_before_mb']:.0f} MB)"
            )
        print(f"saved {write_result('demucs', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
