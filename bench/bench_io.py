"""Decode and encode against compute: a 4-minute MP3 to four MP3 stems.

The whole run (``Separator.separate`` from the MP3 file to MP3 stem files) is timed
against the model's own time: the same separation of the already decoded mixture into
arrays (:func:`dsu.engine.separate_array`). Their ratio is what decoding, resampling and
encoding add; with decoding read ahead and encoding behind on their own threads it tends
to 1 on a machine with a core to spare. The network is a tiny HTDemucs (or the built-in
``hpss``), so the I/O share is visible. ``--src`` runs another checkout's ``src`` (e.g. a
copy from before a change) in alternation with this one, so ratios hold on a busy machine.

Usage: ``python bench/bench_io.py [--seconds 240] [--rounds 2] [--model tiny-demucs|hpss]
[--src /path/to/other/src]``; saved to ``bench/out/io.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from common import machine, write_result

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
MIXTURE = ROOT.parent / "shared" / "audio" / "la-vie-en-rose-mixture.wav"

_CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
from dsu import Separator, audio
from dsu.engine import separate_array

song, models, out, model = sys.argv[1:5]
separator = Separator(model, models_dir=models, device="cpu")
mix, rate = audio.read(song)
started = time.perf_counter()
separate_array(separator.model, torch.from_numpy(mix))
model_s = time.perf_counter() - started
started = time.perf_counter()
separator.separate(song, output_dir=out, format="mp3")
whole_s = time.perf_counter() - started
print(json.dumps({"model_s": model_s, "whole_s": whole_s}))
"""


def write_song(path: Path, seconds: float) -> None:
    """An MP3 of the shared mixture looped to ``seconds`` (noise without ``../shared``)."""
    from dsu import audio

    if MIXTURE.exists():
        mix, rate = audio.read(MIXTURE)
        assert rate == RATE, rate
    else:
        mix = 0.1 * np.random.default_rng(0).standard_normal((2, 30 * RATE)).astype(np.float32)
    frames = int(seconds * RATE)
    audio.write(path, np.resize(mix, (mix.shape[0], frames)), RATE, format="mp3")


def write_models(work: Path) -> Path:
    """A models folder with a tiny HTDemucs package (``tiny-demucs``)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_demucs import tiny_net, write_package

    models = work / "models"
    models.mkdir()
    weights = write_package(tiny_net("htdemucs"), models / "weights", "tiny0000")
    entry = {
        "arch": "demucs",
        "weights": [str(weights.relative_to(models))],
        "stems": ["drums", "bass", "other", "vocals"],
    }
    (models / "models.json").write_text(
        json.dumps({"version": 1, "models": {"tiny-demucs": entry}})
    )
    return models


def run(src: Path, song: Path, models: Path, out: Path, model: str) -> dict[str, float]:
    """One child process on ``src``: the model's own time and the whole run's."""
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(song), str(models), str(out), model],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="tiny-demucs")
    parser.add_argument("--src", type=Path, help="another checkout's src, run alternately")
    opts = parser.parse_args()
    sources = {"this": ROOT / "src"} | ({"other": opts.src} if opts.src else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        song = work / "song.mp3"
        write_song(song, opts.seconds)
        models = write_models(work)
        for round_ in range(opts.rounds):
            for name, src in sources.items():
                result = run(src, song, models, work / f"out-{name}-{round_}", opts.model)
                result["ratio"] = result["whole_s"] / result["model_s"]
                runs[name].append(result)
                print(
                    f"{name:<5} round {round_}: model {result['model_s']:6.1f} s, "
                    f"whole {result['whole_s']:6.1f} s, whole/model {result['ratio']:.2f}"
                )
    summary: dict[str, Any] = {"machine": machine(), "seconds": opts.seconds, "model": opts.model}
    for name, results in runs.items():
        summary[name] = {
            "runs": results,
            "best_ratio": min(r["ratio"] for r in results),
            "best_whole_s": min(r["whole_s"] for r in results),
        }
    if "other" in runs:
        summary["whole_speedup"] = (
            summary["other"]["best_whole_s"] / summary["this"]["best_whole_s"]
        )
        print(f"whole run, other/this: {summary['whole_speedup']:.2f}x")
    print(f"saved {write_result('io', summary)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
