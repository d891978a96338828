"""Precision budget: DSU's reduced-precision paths on the real model against the real stems.

Separates every real track under ``../shared/audio`` with the real trained
``tdc-vocals`` model (``../shared/models``) at each precision the device runs (the CPU:
fp32 and bf16 autocast; a GPU: fp32, fp16 and bf16) and prints, per track and as the
median over tracks: the vocals SDR against the true stem, its change from fp32 (the
budget: at most 0.1 dB lost), the parity of the vocals against fp32's (the budget:
at least 40 dB) and the separation time.

Usage: ``python bench/bench_precision.py [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import sdr, write_result

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODEL, STEM = "tdc-vocals", "vocals"
PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}


def main() -> int:
    from dsu import Separator
    from dsu.datasets import find_tracks
    from dsu.eval import score_track

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=sorted(PRECISIONS), default="cpu")
    opts = parser.parse_args()
    models = SHARED / "models" / "tdc-vocals-ismir2020"
    if not models.is_dir():
        # Skipped, not failed: make bench runs on machines without ../shared too.
        print(f"skipped: no real model at {models} (needs ../shared beside the checkout)")
        return 0
    precisions = PRECISIONS[opts.device]
    separators = {
        p: Separator(MODEL, models_dir=models, device=opts.device, precision=p) for p in precisions
    }
    rows: dict[str, dict[str, Any]] = {}
    for track in find_tracks(SHARED / "audio"):
        audio = track.load()
        if STEM not in audio.stems:
            continue
        fp32: np.ndarray | None = None
        for precision, separator in separators.items():
            started = time.perf_counter()
            vocals = separator.separate(audio.mixture, audio.samplerate).stems[STEM]
            seconds = time.perf_counter() - started
            scores, _ = score_track({STEM: vocals}, audio.stems, audio.samplerate)
            row = {"sdr": scores[STEM]["sdr"], "seconds": seconds}
            if fp32 is None:
                fp32 = vocals
            else:
                row["parity_db"] = sdr(fp32, vocals)
            rows.setdefault(track.key, {})[precision] = row
            parity = f", parity {row['parity_db']:.1f} dB" if "parity_db" in row else ""
            print(f"  {track.key} {precision}: SDR {row['sdr']:6.2f} dB{parity}", flush=True)
    result: dict[str, Any] = {"model": MODEL, "device": opts.device, "tracks": rows}
    print(f"{MODEL} on {opts.device}, vocals SDR against the true stems ({len(rows)} tracks)")
    for precision in precisions:
        per_track = [rows[key][precision] for key in rows]
        loss = [rows[key]["fp32"]["sdr"] - rows[key][precision]["sdr"] for key in rows]
        summary = {
            "sdr_median": float(np.median([r["sdr"] for r in per_track])),
            "sdr_loss_max": float(max(loss)),
            "seconds": float(sum(r["seconds"] for r in per_track)),
        }
        line = (
            f"  {precision}: median SDR {summary['sdr_median']:6.2f} dB, largest loss "
            f"against fp32 {summary['sdr_loss_max']:+.3f} dB, {summary['seconds']:.2f} s"
        )
        if precision != "fp32":
            summary["parity_db_min"] = float(min(r["parity_db"] for r in per_track))
            line += f", parity against fp32 >= {summary['parity_db_min']:.1f} dB"
        result[precision] = summary
        print(line)
    print(f"saved {write_result('precision', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
