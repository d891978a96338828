"""Apollo: DSU's chunked streaming restoration against one whole-file forward pass.

A default-size Apollo (feature_dim 256, 6 layers, random weights: speed does not depend on
them) restores the same stereo input through DSU (``Separator.separate`` on the array:
streaming, 5 s chunks with 0.56 s of exact context on each side) and through a plain
whole-file forward of the reference class (MSST's copy of look2hear's ``Apollo``, as the
official ``inference.py`` runs it by default), alternately, each run in a fresh process
so its peak RSS is its own. It prints wall time, peak RSS, parity (SDR of DSU's output
against the whole-file output) and the ratios DSU / whole file.

Usage: ``python bench/bench_apollo.py [--seconds 30] [--rounds 1] [--threads N]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import peak_rss_mb, sdr

RATE = 44_100


def make_checkpoint(work: Path, seconds: float) -> None:
    """A random default-size checkpoint in the official layout and a stereo input."""
    import torch
    from msst.models.look2hear.models.apollo import Apollo

    torch.manual_seed(0)
    net = Apollo(sr=RATE, win=20, feature_dim=256, layer=6)
    torch.save({"model_name": "Apollo", "state_dict": net.state_dict()}, work / "apollo.bin")
    rng = np.random.default_rng(0)
    np.save(work / "input.npy", (0.1 * rng.standard_normal((2, int(seconds * RATE)))).astype("f4"))


def run_one(which: str, work: Path, threads: int) -> dict:
    """Run one side in this process; returns its timing and where its output is."""
    import torch

    torch.set_num_threads(threads)
    mix = np.load(work / "input.npy")
    out_path = work / f"{which}.npy"
    if which == "dsu":
        from dsu.api import Separator
        from dsu.registry.entry import ModelEntry

        entry = ModelEntry(name="bench-apollo", arch="apollo", weights=(work / "apollo.bin",))
        separator = Separator(entry, models_dir=work, device="cpu")
        separator.load()
        started = time.perf_counter()
        out = separator.separate(mix, RATE).stems["restored"]
    else:
        import contextlib
        import io

        from msst.models.look2hear.models.apollo import Apollo

        with contextlib.redirect_stdout(io.StringIO()):  # it prints its band layout
            net = Apollo(sr=RATE, win=20, feature_dim=256, layer=6)
        state = torch.load(work / "apollo.bin", map_location="cpu")["state_dict"]
        net.load_state_dict(state)
        net.eval()
        started = time.perf_counter()
        with torch.inference_mode():
            out = net(torch.from_numpy(mix)[None])[0].numpy()
    elapsed = time.perf_counter() - started
    np.save(out_path, out)
    return {"which": which, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="input length")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the two sides")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per side")
    parser.add_argument("--child", nargs=2, metavar=("WHICH", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], Path(args.child[1]), args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_checkpoint(work, args.seconds)
        results: dict[str, list[dict]] = {"dsu": [], "whole": []}
        for _ in range(args.rounds):
            for which in ("dsu", "whole"):
                command = [sys.executable, __file__, "--threads", str(args.threads)]
                done = subprocess.run(
                    [*command, "--child", which, str(work)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[which].append(json.loads(done.stdout.strip().splitlines()[-1]))
        parity = sdr(np.load(work / "whole.npy"), np.load(work / "dsu.npy"))
    best = {k: min(r["seconds"] for r in v) for k, v in results.items()}
    rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in results.items()}
    print(f"Apollo 256/6, random weights, {args.seconds:g} s stereo, {args.threads} threads")
    for which, label in (("dsu", "DSU chunked streaming"), ("whole", "whole-file forward")):
        print(f"  {label:24s} {best[which]:8.1f} s   peak RSS {rss[which]:8.0f} MB")
    print(f"  parity (SDR of DSU vs whole file): {parity:.1f} dB")
    print(f"  time ratio DSU / whole: {best['dsu'] / best['whole']:.2f}")
    print(f"  peak RSS ratio DSU / whole: {rss['dsu'] / rss['whole']:.2f}")


if __name__ == "__main__":
    main()
