"""UVR MDX-Net (.onnx): DSU against audio-separator's MDX path, same graph and input.

The graph has a full-size MDX-Net signature (``dim_f`` 3072, ``n_fft`` 7680, 256 frames:
UVR-MDX-NET Inst HQ 3's shape) with random weights; its body is a gated convolution
(tests/tiny_mdx.py), so the figures weigh the framing, STFT and ONNX Runtime calls around
the network more than the network itself. The same 30 s input goes through DSU
(``Separator.separate`` on the array) and through audio-separator 0.47.1's
``MDXSeparator.demix`` plus its secondary stem (``mix - primary * compensate``),
alternately, each run in a fresh process so peak RSS is its own. It prints wall time,
peak RSS, parity (SDR of DSU's stems against audio-separator's) and the ratio DSU / theirs.

Usage: ``python bench/bench_mdx.py [--seconds 30] [--rounds 2] [--hidden 32]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import peak_rss_mb, run_child

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

FULL_DATA = {
    "compensate": 1.022,
    "mdx_dim_f_set": 3072,
    "mdx_dim_t_set": 8,
    "mdx_n_fft_scale_set": 7680,
    "primary_stem": "Instrumental",
}
STEMS = ["instrumental", "vocals"]


def make_model(work: Path, hidden: int) -> Path:
    """The full-size graph and a models.json that gives its parameters."""
    from tiny_mdx import export

    path = export(work / "weights" / "bench.onnx", FULL_DATA, hidden=hidden)
    entry = {
        "arch": "mdx",
        "weights": "weights/bench.onnx",
        "stems": STEMS,
        "options": {"model_data": FULL_DATA},
    }
    (work / "models.json").write_text(json.dumps({"version": 1, "models": {"bench-mdx": entry}}))
    return path


def run_one(which: str, work: Path, batch_size: int) -> dict:
    """One timed separation in this process; writes the stems to ``work/<which>.npy``."""
    mix = np.load(work / "mix.npy")
    if which == "dsu":
        from dsu import Separator

        separator = Separator("bench-mdx", models_dir=work, device="cpu", batch_size=batch_size)
        separator.load()
        started = time.perf_counter()
        result = separator.separate(mix, 44100)
        elapsed = time.perf_counter() - started
        out = np.stack([result.stems[s] for s in STEMS])
    else:
        from tiny_mdx import reference_separator, reference_stems

        reference = reference_separator(work / "weights" / "bench.onnx", FULL_DATA)
        started = time.perf_counter()
        out = reference_stems(reference, mix)
        elapsed = time.perf_counter() - started
    np.save(work / f"{which}.npy", out)
    return {"which": which, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=32, help="channels of the graph's body")
    parser.add_argument("--child", choices=("dsu", "audio-separator"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(run_one(opts.child, opts.work, opts.batch_size)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_model(work, opts.hidden)
        rng = np.random.default_rng(0)
        np.save(
            work / "mix.npy",
            (0.2 * rng.standard_normal((2, int(opts.seconds * 44100)))).astype(np.float32),
        )
        names = ("audio-separator", "dsu")
        times: dict[str, list[float]] = {name: [] for name in names}
        rss = dict.fromkeys(names, 0.0)
        common = ["--work", str(work), "--batch-size", str(opts.batch_size)]
        for _ in range(opts.rounds):
            for which in names:
                report = run_child(__file__, ["--child", which, *common])
                times[which].append(report["seconds"])
                rss[which] = max(rss[which], report["peak_rss_mb"])
        ours, theirs = np.load(work / "dsu.npy"), np.load(work / "audio-separator.npy")
        error = np.square(theirs - ours).sum(axis=(1, 2))
        parity = 10 * np.log10(np.square(theirs).sum(axis=(1, 2)) / np.maximum(error, 1e-30))
        best = {k: min(v) for k, v in times.items()}
        print(
            f"MDX-Net graph dim_f 3072, n_fft 7680, 256 frames (body: {opts.hidden} channels), "
            f"{opts.seconds:.0f} s stereo input, CPU, {opts.rounds} rounds (best), "
            f"DSU batch size {opts.batch_size}"
        )
        print(
            f"  audio-separator demix : {best['audio-separator']:8.2f} s   "
            f"peak RSS {rss['audio-separator']:7.0f} MB"
        )
        print(f"  DSU Separator         : {best['dsu']:8.2f} s   peak RSS {rss['dsu']:7.0f} MB")
        print(f"  all runs (s)          : audio-separator {times['audio-separator']}")
        print(f"                          dsu {times['dsu']}")
        stems = ", ".join(STEMS)
        print(f"  parity                : {parity[0]:.1f} / {parity[1]:.1f} dB SDR ({stems})")
        print(f"  ratio DSU/theirs      : {best['dsu'] / best['audio-separator']:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
