"""The engine's memory does not grow with the track: ``dsu separate`` of 20 s and of
300 s to stem files, each in its own process, peak RSS from ``wait4``.

The 280 s more are 94 MB of stereo float32 (the stems twice that); streaming holds a few
chunks whatever the length, so the longer run may cost at most three quarters of one
copy of that more (allocator noise between runs is about 20 MB). The built-in ``center``
(no weights) keeps the network's share at zero.

The children run on one glibc heap (``MALLOC_ARENA_MAX=1``): the decoding and encoding
threads' own heaps otherwise fill up to a fixed size over the first minutes of audio
(about 60 MB, the same at 6 and at 15 minutes), a warm-up that would read as growth.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100
SHORT, LONG = 20, 300
EXTRA_MB = (LONG - SHORT) * RATE * 2 * 4 / 2**20


def _write(path: Path, seconds: int) -> Path:
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as f:
        for _ in range(0, seconds, 20):
            f.write((0.1 * rng.standard_normal((20 * RATE, 2))).astype(np.float32))
    return path


def _peak_rss_mb(song: Path, out: Path) -> float:
    command = [sys.executable, "-m", "dsu", "separate", str(song), "-m", "center"]
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    child = subprocess.Popen([*command, "-o", str(out)], stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    assert status == 0, child.stderr.read().decode()[-2000:]
    assert len([p for p in out.rglob("*") if p.is_file()]) == 2
    return usage.ru_maxrss / 1024


def test_peak_rss_does_not_grow_with_track_length(tmp_path):
    short = _peak_rss_mb(_write(tmp_path / "short.wav", SHORT), tmp_path / "out-short")
    long = _peak_rss_mb(_write(tmp_path / "long.wav", LONG), tmp_path / "out-long")
    assert long - short < 0.75 * EXTRA_MB, (short, long)
