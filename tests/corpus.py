"""The standing bad-input corpus: hostile or odd inputs, made at test time.

Each :class:`Case` is one input file (or path) and what DSU must do with it: separate it
to full length (``frames`` at ``samplerate``) or refuse it with a typed error. Holds no
tests itself; ``test_corpus.py`` runs every case through the CLI, the worker and the
service.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from helpers import VOICED, noise

SR = 44100


@dataclass(frozen=True)
class Case:
    """One corpus input.

    Attributes:
        name: a short id (also the test id).
        path: the input path (may not exist, or not be a file).
        frames: the true length in frames when DSU must separate it; None when it must
            refuse it with a typed error.
        samplerate: the true rate of a good input.
        mixture: the true samples ``[C, T]`` when known exactly (lossless inputs), to
            check that the stems add up to the mixture.
    """

    name: str
    path: Path
    frames: int | None
    samplerate: int = SR
    mixture: np.ndarray | None = None

    @property
    def good(self) -> bool:
        return self.frames is not None


def _tone(seconds: float, sr: int = SR, channels: int = 2, seed: int = 0) -> np.ndarray:
    """``[T, C]`` float32, soundfile's layout: a centred 220 Hz tone over quiet noise
    (:data:`helpers.VOICED`), so both stems are non-trivial."""
    return np.ascontiguousarray(noise(seconds, sr, channels, seed, tone_hz=220, **VOICED).T)


def _write(path: Path, data: np.ndarray, sr: int = SR, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, **kwargs)
    return path


def _mp3(path: Path, data: np.ndarray, sr: int = SR) -> Path:
    """An MP3 as libsndfile/LAME writes it (CBR, with a Xing/Info frame)."""
    return _write(path, data, sr, format="MP3", subtype="MPEG_LAYER_III")


def _zero_info_frame(path: Path) -> Path:
    """Zero the Xing/Info tag and its fields: the file's length header says nothing true."""
    raw = bytearray(path.read_bytes())
    for tag in (b"Info", b"Xing"):
        at = raw.find(tag, 0, 4096)
        if at >= 0:
            raw[at : at + 120] = bytes(120)
    path.write_bytes(bytes(raw))
    return path


def _lossless(name: str, path: Path, data: np.ndarray, sr: int = SR, **kwargs: object) -> Case:
    _write(path, data, sr, **kwargs)
    stored, _ = sf.read(path, dtype="float32", always_2d=True)
    return Case(name, path, data.shape[0], sr, stored.T)


def build(root: Path) -> list[Case]:
    """Write every corpus input under ``root`` and return the cases."""
    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def good(name: str, path: Path, data: np.ndarray, sr: int = SR, **kw: object) -> None:
        cases.append(_lossless(name, path, data, sr, **kw))

    def bad(name: str, path: Path) -> None:
        cases.append(Case(name, path, None))

    def lossy(name: str, path: Path, frames: int, sr: int = SR) -> None:
        cases.append(Case(name, path, frames, sr))

    # Odd but valid audio: separated to full length.
    good("silence", root / "silence.wav", np.zeros((SR, 2), np.float32))
    good("one-sample", root / "one-sample.wav", _tone(1 / SR))
    good("ten-samples", root / "ten-samples.wav", _tone(10 / SR))
    good("mono", root / "mono.wav", _tone(1.0, channels=1))
    good("8k-mono", root / "8k-mono.wav", _tone(1.0, 8000, 1), 8000)
    good("8k-stereo", root / "8k-stereo.wav", _tone(1.0, 8000), 8000)
    good("11025", root / "11025.wav", _tone(0.7, 11025), 11025)
    good("22050", root / "22050.flac", _tone(0.7, 22050), 22050)
    good("48k", root / "48k.wav", _tone(0.7, 48000), 48000)
    good("96k", root / "96k.wav", _tone(0.5, 96000), 96000)
    good("192k", root / "192k.wav", _tone(0.5, 192000), 192000)
    good("pcm8", root / "pcm8.wav", _tone(0.5), subtype="PCM_U8")
    good("pcm24", root / "pcm24.wav", _tone(0.5), subtype="PCM_24")
    good("pcm32", root / "pcm32.wav", _tone(0.5), subtype="PCM_32")
    good("float32", root / "float32.wav", _tone(0.5), subtype="FLOAT")
    good("float64", root / "float64.wav", _tone(0.5), subtype="DOUBLE")
    good("over-full-scale", root / "loud.wav", 4 * _tone(0.5), subtype="FLOAT")
    good("full-scale-square", root / "square.wav", np.sign(_tone(0.5)) * 0.999)
    good("dc-offset", root / "dc.wav", _tone(0.5) * 0.1 + 0.8)
    good("one-channel-silent", root / "half.wav", _tone(0.5) * np.array([1.0, 0.0], np.float32))
    good("opposed-channels", root / "opposed.wav", _tone(0.5) * np.array([1.0, -1.0], np.float32))
    good("denormals", root / "denormal.wav", np.full((4410, 2), 1e-40, np.float32), subtype="FLOAT")
    good("flac", root / "song.flac", _tone(0.6))
    good("flac24", root / "song24.flac", _tone(0.6), subtype="PCM_24")
    good("aiff", root / "song.aiff", _tone(0.6))
    good("multi-chunk", root / "long.flac", _tone(25.0))
    good("unicode-name", root / "chanson é 歌 🎵.wav", _tone(0.4))
    good("spaces-name", root / "my song (live) [2024].wav", _tone(0.4))
    good("dash-name", root / "-rf --help.wav", _tone(0.4))
    good("newline-name", root / "line\nbreak.wav", _tone(0.4))
    good("quote-name", root / 'it\'s "quoted".wav', _tone(0.4))
    good("dots-name", root / "a.b.c..wav", _tone(0.4))
    good("no-extension", root / "noext", _tone(0.4), format="WAV")
    good("wrong-extension", root / "really-a-wav.flac", _tone(0.4), format="WAV")
    good("uppercase-ext", root / "LOUD.WAV", _tone(0.4))
    good("deep-dir", root / "a" / "b" / "c" / "d" / "deep.wav", _tone(0.4))
    link = root / "link.wav"
    _write(root / "target.wav", _tone(0.4))
    if not link.exists():
        link.symlink_to(root / "target.wav")
    cases.append(Case("symlink", link, int(0.4 * SR), SR, sf.read(link, always_2d=True)[0].T))

    ogg = _write(root / "song.ogg", _tone(0.8), format="OGG", subtype="VORBIS")
    lossy("ogg", ogg, int(0.8 * SR))
    lossy("mp3", _mp3(root / "song.mp3", _tone(2.0)), 2 * SR)
    lossy("mp3-mono-22k", _mp3(root / "mono22.mp3", _tone(1.0, 22050, 1), 22050), 22050, 22050)
    lossy("mp3-8k", _mp3(root / "low.mp3", _tone(1.0, 8000, 1), 8000), 8000, 8000)
    first = _mp3(root / "part1.mp3", _tone(3.0, seed=1))
    second = _mp3(root / "part2.mp3", _tone(3.0, seed=2))
    joined = root / "cat-joined.mp3"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    lossy("mp3-cat-joined", joined, 6 * SR)
    lossy("mp3-zeroed-info", _zero_info_frame(_mp3(root / "no-info.mp3", _tone(8.0))), 8 * SR)

    # Refused with a typed error.
    bad("eight-channels", _write(root / "eight.wav", _tone(0.3, channels=8)))
    nan = _tone(0.3)
    nan[100, 0] = np.nan
    bad("nan-sample", _write(root / "nan.wav", nan, subtype="FLOAT"))
    inf = _tone(0.3)
    inf[5, 1] = np.inf
    bad("inf-sample", _write(root / "inf.wav", inf, subtype="FLOAT"))
    bad(
        "all-nan",
        _write(root / "allnan.wav", np.full((1000, 2), np.nan, np.float32), subtype="FLOAT"),
    )
    empty = root / "empty.wav"
    empty.write_bytes(b"")
    bad("empty-file", empty)
    rng = np.random.default_rng(7)
    for ext in ("wav", "mp3", "flac", "ogg", "m4a", "aiff", "webm"):
        path = root / f"garbage.{ext}"
        path.write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
        bad(f"garbage-{ext}", path)
    text = root / "notes.wav"
    text.write_text("this is not audio\n" * 100)
    bad("text-as-wav", text)
    riff_only = root / "riff-only.wav"
    riff_only.write_bytes(b"RIFF\x24\x00\x00\x00WAVE")
    bad("riff-header-only", riff_only)
    no_data = _write(root / "no-data.wav", np.zeros((0, 2), np.float32))
    bad("zero-frames", no_data)
    full = _write(root / "full.wav", _tone(2.0)).read_bytes()
    (root / "truncated.wav").write_bytes(full[: len(full) // 2])
    bad("truncated-wav", root / "truncated.wav")
    lying = bytearray(full)
    data_at = lying.find(b"data")
    lying[data_at + 4 : data_at + 8] = (len(full) * 4).to_bytes(4, "little")
    (root / "header-claims-more.wav").write_bytes(bytes(lying))
    bad("wav-header-claims-more", root / "header-claims-more.wav")
    flac = _write(root / "full.flac", _tone(2.0)).read_bytes()
    (root / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    bad("truncated-flac", root / "truncated.flac")
    mp3 = _mp3(root / "full.mp3", _tone(4.0)).read_bytes()
    (root / "truncated.mp3").write_bytes(mp3[: len(mp3) // 2])
    bad("truncated-mp3", root / "truncated.mp3")
    (root / "header-only.mp3").write_bytes(mp3[:400])
    bad("mp3-header-only", root / "header-only.mp3")
    directory = root / "folder.wav"
    directory.mkdir(exist_ok=True)
    bad("directory", directory)
    bad("missing", root / "does-not-exist.wav")
    fifo = root / "fifo.wav"
    if hasattr(os, "mkfifo") and not fifo.exists():
        os.mkfifo(fifo)
    if fifo.exists():
        bad("fifo", fifo)
    dangling = root / "dangling.wav"
    if not dangling.is_symlink():
        dangling.symlink_to(root / "nowhere.wav")
    bad("dangling-symlink", dangling)
    return cases


def stems_sum_db(stems: list[np.ndarray], mixture: np.ndarray) -> float:
    """SNR in dB of the sum of ``stems`` against ``mixture`` (both ``[C, T]``)."""
    total = np.sum(stems, axis=0)
    error = float(np.sum((total - mixture) ** 2))
    power = float(np.sum(mixture**2))
    if power == 0.0:
        return math.inf if error < 1e-12 else -math.inf
    return 10 * math.log10(power / max(error, 1e-30))


def run_cli(args: list[str], timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess:
    """``python -m dsu ARGS`` as a real subprocess, text output captured."""
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run
    return run(
        [sys.executable, "-m", "dsu", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def separate_cli(
    song: Path, models: Path, model: str, out: Path, *options: str, **kwargs: object
) -> dict[str, np.ndarray]:
    """``dsu separate`` of ``song`` with ``model`` from the folder ``models`` into ``out``,
    as 32-bit float stems; it must succeed. Returns the stems by name, ``[C, T]``."""
    done = run_cli(
        [
            "separate",
            str(song),
            "--models-dir",
            str(models),
            "-m",
            model,
            *options,
            "-o",
            str(out),
            "--bit-depth",
            "32",
        ],
        **kwargs,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        p.stem: sf.read(p, dtype="float32", always_2d=True)[0].T
        for p in (out / song.stem).iterdir()
    }
