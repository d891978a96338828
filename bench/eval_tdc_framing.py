"""TDC U-Net vocals: the original framing next to the engine's overlap-add, on real stems.

For every real track with true stems in ``../shared`` (the Mu excerpt's WAVs and the two
``audio/stems/*.stem.mp4``), separates with ``framing="original"`` (trimmed 64-frame
segments, hard-concatenated, as published) and ``framing="overlap_add"`` (the same
segments cross-faded by the engine's triangle window), and prints plain SDR of vocals
and accompaniment and museval's median vocals SDR.

    .venv/bin/python bench/eval_tdc_framing.py [--shared ../shared] [--overlap 0.5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch

from dsu.archs import tdc_unet
from dsu.engine.options import EngineOptions
from dsu.engine.overlap_add import separate_array
from dsu.metrics import museval_scores, sdr
from dsu.registry.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
STEM_STREAMS = ("mixture", "drums", "bass", "other", "vocals")


def read_stem_mp4(path: Path) -> dict[str, np.ndarray]:
    """The five streams of a Native Instruments stem file, each ``[C, T]`` float32."""
    streams = {}
    for index, name in enumerate(STEM_STREAMS):
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray() for frame in container.decode(audio=index)]
        streams[name] = np.concatenate(frames, axis=-1).astype(np.float32)
    length = min(s.shape[-1] for s in streams.values())
    return {name: s[:, :length] for name, s in streams.items()}


def read_wav_track(folder: Path) -> dict[str, np.ndarray]:
    return {
        name: np.ascontiguousarray(sf.read(folder / f"{name}.wav", dtype="float32")[0].T)
        for name in STEM_STREAMS
    }


def tracks(shared: Path) -> dict[str, dict[str, np.ndarray]]:
    found = {"Mu - Too Bright (wav)": read_wav_track(shared / "audio" / "musdb18-mu-too-bright")}
    for path in sorted((shared / "audio" / "stems").glob("*.stem.mp4")):
        found[path.name.removesuffix(".stem.mp4")] = read_stem_mp4(path)
    return found


def score(model: tdc_unet.TDCVocals, track: dict[str, np.ndarray]) -> dict[str, float]:
    start = time.perf_counter()
    out = separate_array(
        model, torch.from_numpy(track["mixture"]), options=EngineOptions(batch_size=4)
    )
    elapsed = time.perf_counter() - start
    vocals, accompaniment = out.numpy()
    true_accompaniment = track["drums"] + track["bass"] + track["other"]
    return {
        "vocals": sdr(track["vocals"], vocals),
        "accompaniment": sdr(true_accompaniment, accompaniment),
        "museval": museval_scores(track["vocals"][None], vocals[None], model.samplerate)["SDR"][0],
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--overlap", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    entry = read_manifest(args.shared / "models" / "tdc-vocals-ismir2020").entries["tdc-vocals"]
    models = {
        "original": tdc_unet.load(entry, framing="original"),
        f"overlap_add {args.overlap:g}": tdc_unet.load(
            entry, framing="overlap_add", overlap=args.overlap
        ),
    }
    header = (
        f"{'track':<32} {'framing':<16} {'vocals SDR':>10} {'acc SDR':>9} "
        f"{'museval voc':>11} {'time s':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, track in tracks(args.shared).items():
        for framing, model in models.items():
            s = score(model, track)
            print(
                f"{name:<32} {framing:<16} {s['vocals']:>10.3f} {s['accompaniment']:>9.3f} "
                f"{s['museval']:>11.3f} {s['seconds']:>7.1f}"
            )


if __name__ == "__main__":
    main()
