"""A chain of small models over a long input: wall time and peak RSS (must stay <= 1.5 GB).

The chain is weight-free, so it runs offline: ``center`` splits vocals from the
instrumental, then ``hpss`` splits the vocals into harmonic and percussive; the
instrumental, harmonic and percussive stems are written as 16-bit WAV. The input is
generated as a file (60 minutes by default). Each side runs in its own process.

audio-separator's ensemble (its ``Separator(ensemble_algorithm=...)``) needs model files
that it downloads on first use; with no network it cannot run here, and the result says
so rather than guessing a number.

    python bench/bench_pipeline.py [--minutes 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb, run_child, write_result

RATE = 44100
LIMIT_MB = 1536
CHAIN = {
    "name": "bench-chain",
    "steps": [
        {"name": "split", "model": "center"},
        {"name": "voice", "model": "hpss", "input": "split.vocals"},
    ],
    "outputs": ["split.instrumental", "voice.harmonic", "voice.percussive"],
}


def write_input(path: Path, minutes: float) -> Path:
    """A stereo 16-bit WAV of ``minutes`` of centred noise and a tone, written in blocks."""
    import soundfile as sf

    frames = int(minutes * 60 * RATE)
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", RATE, 2, "PCM_16") as out:
        for start in range(0, frames, RATE * 10):
            n = min(RATE * 10, frames - start)
            t = (start + np.arange(n)) / RATE
            shared = 0.1 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 440 * t)
            out.write(shared[:, None] + 0.05 * rng.standard_normal((n, 2)))
    return path


def child_dsu(source: str, out: str) -> None:
    from dsu.api import Separator

    started = time.perf_counter()
    separator = Separator(pipeline=CHAIN, device="cpu")
    result = separator.separate(source, output_dir=out, format="wav")
    seconds = time.perf_counter() - started
    files = {stem: str(path) for stem, path in (result.files or {}).items()}
    print(
        json.dumps(
            {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb()), "files": files}
        )
    )


def child_audio_separator(source: str, out: str) -> None:
    try:
        from audio_separator.separator import Separator as Reference

        reference = Reference(output_dir=out, ensemble_algorithm="avg_wave")
        started = time.perf_counter()
        reference.load_model(["UVR-MDX-NET-Inst_HQ_3.onnx", "UVR_MDXNET_KARA_2.onnx"])
        reference.separate(source)
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb())}))
    except Exception as exc:  # any failure is the finding: why it cannot run here
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        print(json.dumps({"skipped": f"cannot run offline here ({reason})"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--child", choices=["dsu", "audio-separator"])
    parser.add_argument("--input")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child == "dsu":
        child_dsu(args.input, args.out)
        return
    if args.child == "audio-separator":
        child_audio_separator(args.input, args.out)
        return
    with tempfile.TemporaryDirectory() as work:
        source = write_input(Path(work) / "long.wav", args.minutes)
        ours = run_child(
            __file__, ["--child", "dsu", "--input", str(source), "--out", f"{work}/dsu"]
        )
        ours.pop("files")
        theirs = run_child(
            __file__, ["--child", "audio-separator", "--input", str(source), "--out", f"{work}/ref"]
        )
    result = {
        "minutes": args.minutes,
        "chain": CHAIN,
        "dsu": ours,
        "audio_separator": theirs,
        "within_limit": ours["peak_rss_mb"] <= LIMIT_MB,
    }
    path = write_result("pipeline", result)
    print(json.dumps(result, indent=2))
    print(
        f"DSU chain over {args.minutes:g} min: {ours['seconds']} s, "
        f"peak RSS {ours['peak_rss_mb']} MB (limit {LIMIT_MB}); written to {path}"
    )


if __name__ == "__main__":
    main()
