"""DSU vs audio-separator 0.47.1 on a full-size UVR VR model: time, peak RSS, parity.

A full-size v5.1 4-band net (``CascadedNet`` nout 32 / nout_lstm 128 on ``4band_v3``, the
width of UVR's v5.1 models) with random weights, a 30 s stereo input, default settings.
Each side runs in its own subprocess, alternately, ``--rounds`` times; parity is the SDR
of DSU's stems against the reference's. The reference's band recombination is pinned to
``polyphase`` (its Apple-silicon setting; DSU's only one); ``--linux-resampler`` measures
against its Linux default ``sinc_fastest`` instead (needs the ``samplerate`` package).

    python bench/bench_vr.py [--seconds 30] [--rounds 1] [--threads 2]
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

ROOT = Path(__file__).resolve().parents[1]
DATA = {"vr_model_param": "4band_v3", "primary_stem": "Vocals", "nout": 32, "nout_lstm": 128}


def prepare(work: Path, seconds: float) -> None:
    import soundfile as sf
    import torch

    from dsu.archs.vr.cascaded import CascadedNet
    from dsu.archs.vr.params import load_params

    torch.manual_seed(0)
    net = CascadedNet(load_params("4band_v3").bins, DATA["nout"], DATA["nout_lstm"])
    torch.save(net.state_dict(), work / "vr51.pth")
    rng = np.random.default_rng(0)
    n = int(seconds * 44_100)
    t = np.arange(n) / 44_100
    mix = 0.3 * np.sin(2 * np.pi * 220 * t) * np.array([[1.0], [0.7]]) + 0.05 * rng.standard_normal(
        (2, n)
    )
    sf.write(work / "mix.wav", mix.T.astype(np.float32), 44_100, subtype="FLOAT")


def run_dsu(work: Path) -> np.ndarray:
    import soundfile as sf
    import torch

    from dsu.archs.vr import load
    from dsu.engine.overlap_add import separate_array
    from dsu.registry.entry import ModelEntry

    mix, _ = sf.read(work / "mix.wav", dtype="float32")
    model = load(ModelEntry("bench", "vr", (work / "vr51.pth",), options=DATA))
    return separate_array(model, torch.from_numpy(mix.T.copy())).numpy()


def run_reference(work: Path, resampler: str) -> np.ndarray:
    import logging

    import torch
    from audio_separator.separator.architectures import vr_separator
    from audio_separator.separator.uvr_lib_v5 import spec_utils

    spec_utils.wav_resolution = resampler
    cpu = torch.device("cpu")
    config = {
        "logger": logging.getLogger("bench"),
        "log_level": logging.WARNING,
        "torch_device": cpu,
        "torch_device_cpu": cpu,
        "torch_device_mps": None,
        "model_name": "vr51",
        "model_path": str(work / "vr51.pth"),
        "model_data": DATA,
        "output_dir": str(work),
        "output_format": "wav",
        "normalization_threshold": 0.9,
        "sample_rate": 44_100,
    }
    sep = vr_separator.VRSeparator(config, {})
    sep.audio_file_path = str(work / "mix.wav")
    sep.wav_subtype = "FLOAT"
    sep._ensure_model_loaded(56817)  # a v5.1 id that keeps the model data's widths
    y, v = sep.inference_vr(sep.loading_mix(), cpu, sep.aggressiveness)
    y, v = (np.nan_to_num(s) for s in (y, v))
    return np.stack([sep.spec_to_wav(y), sep.spec_to_wav(v)]).astype(np.float32)


def child(side: str, work: Path, threads: int, resampler: str) -> None:
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    stems = run_dsu(work) if side == "dsu" else run_reference(work, resampler)
    elapsed = time.perf_counter() - started
    np.save(work / f"{side}.npy", stems)
    print(json.dumps({"side": side, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--linux-resampler", action="store_true")
    parser.add_argument("--child", choices=("dsu", "reference"))
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    resampler = "sinc_fastest" if args.linux_resampler else "polyphase"
    if args.child:
        child(args.child, args.work, args.threads, resampler)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, args.seconds)
        results: dict[str, list[dict[str, float]]] = {"dsu": [], "reference": []}
        for _ in range(args.rounds):
            for side in ("dsu", "reference"):
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    side,
                    "--work",
                    str(work),
                    "--threads",
                    str(args.threads),
                ]
                if args.linux_resampler:
                    command.append("--linux-resampler")
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                results[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
        ours, ref = np.load(work / "dsu.npy"), np.load(work / "reference.npy")
        n = ref.shape[-1]
        parity = min(sdr(ref[i], ours[i, :, :n]) for i in range(2))
    best = {side: min(r["seconds"] for r in rs) for side, rs in results.items()}
    rss = {side: max(r["peak_rss_mb"] for r in rs) for side, rs in results.items()}
    print(f"input {args.seconds:.0f} s, {args.threads} threads, reference resampler {resampler}")
    for side in ("dsu", "reference"):
        print(f"{side:>10}: {best[side]:7.1f} s  peak RSS {rss[side]:7.0f} MB")
    print(f"time ratio dsu/reference {best['dsu'] / best['reference']:.2f}; parity {parity:.1f} dB")


if __name__ == "__main__":
    main()
