"""BS-RoFormer forward: DSU's network against audio-separator's, same weights and input.

Builds the full-size viperx ``ep_317`` BS-RoFormer (dim 512, depth 12, 62 bands,
n_fft 2048, hop 441; random weights: speed does not depend on them) as
``audio_separator.separator.uvr_lib_v5.roformer.bs_roformer.BSRoformer``, loads its
state dict strictly into DSU's ``BSRoformer``, and times one forward pass of a stereo
44.1 kHz chunk (8 s by default, batch 1) through each, alternately, after a short
warm-up. Prints each wall time (and the process CPU time, steadier on a shared machine),
the best of each, the ratio audio-separator / DSU and the parity (SDR of DSU's output
against the reference's).

Usage: ``python bench/roformer_forward.py [--seconds 8] [--runs 2] [--threads N]``
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="chunk length")
    parser.add_argument("--runs", type=int, default=2, help="timed runs of each")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from roformer_configs import VIPERX_EP317, ours_like

    torch.manual_seed(0)
    reference, ours = ours_like("audio-separator", "bs_roformer", VIPERX_EP317 | {"zero_dc": False})
    mix = 0.3 * torch.randn(1, 2, int(args.seconds * 44_100) // 441 * 441)
    nets = {"audio-separator": reference, "dsu": ours}
    times: dict[str, list[float]] = {name: [] for name in nets}
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for net in nets.values():
            net(mix[..., : 441 * 20])
        for run in range(args.runs):
            for name, net in nets.items():
                start, cpu = time.perf_counter(), time.process_time()
                outputs[name] = net(mix)
                times[name].append(time.perf_counter() - start)
                cpu = time.process_time() - cpu
                print(f"run {run + 1} {name:16s} {times[name][-1]:8.2f} s (CPU {cpu:.2f} s)")
    expected, got = outputs["audio-separator"].double(), outputs["dsu"].double()
    parity = 10 * torch.log10(expected.square().sum() / (expected - got).square().sum())
    best = {name: min(values) for name, values in times.items()}
    print(
        f"{args.seconds:g} s stereo chunk, {torch.get_num_threads()} threads: "
        f"audio-separator {best['audio-separator']:.2f} s, DSU {best['dsu']:.2f} s, "
        f"ratio {best['audio-separator'] / best['dsu']:.2f}x, parity {float(parity):.1f} dB"
    )


if __name__ == "__main__":
    main()
