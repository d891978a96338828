"""``make demo``: separate an example with the best model available, and say so.

The best model is ``htdemucs`` when it is installed or can be pulled, otherwise the
weight-free ``center``. The example is the real clip in ``../shared`` when the checkout
has it beside it, otherwise a synthetic stereo mix (a centred "voice" over panned chords
and drums) generated here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dsu import audio
from dsu.errors import DSUError

ROOT = Path(__file__).resolve().parents[2]
SHARED_CLIP = ROOT.parent / "shared" / "audio" / "la-vie-en-rose-mixture.wav"
OUT = ROOT / "demo-out"


def synthetic_mix(seconds: float = 8.0, rate: int = 44100) -> np.ndarray:
    """``[2, T]``: a vibrato tone in the centre, chords panned left, clicks panned right."""
    t = np.arange(int(seconds * rate)) / rate
    voice = 0.3 * np.sin(2 * np.pi * 330 * t + 3 * np.sin(2 * np.pi * 5 * t))
    chords = 0.15 * sum(np.sin(2 * np.pi * f * t) for f in (196.0, 247.0, 294.0))
    clicks = 0.4 * np.exp(-((t % 0.5) * 60)) * np.random.default_rng(0).standard_normal(t.size)
    left = voice + 0.9 * chords + 0.2 * clicks
    right = voice + 0.2 * chords + 0.9 * clicks
    return np.stack([left, right]).astype(np.float32)


def pick_model() -> str:
    """``htdemucs`` if installed or pullable (a short try), else ``center``."""
    from dsu.registry import Registry, pull
    from dsu.registry.registry import FALLBACK_MODEL

    registry = Registry.open(None)
    try:
        registry.resolve("htdemucs")
        return "htdemucs"
    except DSUError:
        pass
    try:
        pull("htdemucs", registry.root)
        return "htdemucs"
    except (DSUError, OSError) as exc:
        print(
            f"htdemucs is not available ({exc}); using the built-in {FALLBACK_MODEL!r}",
            file=sys.stderr,
        )
        return FALLBACK_MODEL


def main() -> int:
    from dsu.api import Separator

    if SHARED_CLIP.is_file():
        source = SHARED_CLIP
    else:
        source = OUT / "example-mix.wav"
        audio.write(source, synthetic_mix(), 44100)
    model = pick_model()
    separator = Separator(model)
    result = separator.separate(source, output_dir=OUT / source.stem)
    print(f"model: {separator.name} ({separator.entry.description or separator.entry.arch})")
    print(f"input: {source}")
    for stem, path in result.files.items():
        print(f"  {stem:>14}: {path}")
    print(f"took {result.elapsed:.1f} s on {separator.device}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
