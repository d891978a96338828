"""``dsu separate`` as a user runs it: a real subprocess, files in, stem files out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dsu import audio
from helpers import write_noise
from tiny_demucs import write_models_dir


def dsu(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dsu", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def test_several_inputs_one_model_bad_one_reported(tmp_path: Path):
    models = write_models_dir(tmp_path / "models", {"tiny": {"nets": [("hdemucs", 0)]}})
    good = write_noise(tmp_path / "a song.wav", 1.5)
    other = write_noise(tmp_path / "b.flac", 1.5)
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"\x00" * 1000)
    out = tmp_path / "out"
    done = dsu("separate", good, bad, other, "-m", "tiny", "--models-dir", models, "-o", out, "-q")
    assert done.returncode == 1, done.stderr
    assert "broken.mp3" in done.stderr and "Traceback" not in done.stderr
    printed = done.stdout.split()
    for track in ("a song", "b"):
        for stem in ("drums", "bass", "other", "vocals"):
            path = out / track / f"{stem}.wav"
            assert audio.probe(path).frames == 66150
            assert str(path).split()[-1] in printed
    assert not (out / "broken").exists()


def test_two_stems_flac_and_mp3(mu_dir: Path, tmp_path: Path):
    source = mu_dir / "mixture.wav"
    for fmt in ("flac", "mp3"):
        done = dsu(
            "separate",
            source,
            "-m",
            "center",
            "--two-stems",
            "vocals",
            "--format",
            fmt,
            "-o",
            tmp_path,
            "-q",
        )
        assert done.returncode == 0, done.stderr
        files = sorted(p.name for p in (tmp_path / "mixture").glob(f"*.{fmt}"))
        assert files == [f"no_vocals.{fmt}", f"vocals.{fmt}"]
        info = audio.probe(tmp_path / "mixture" / f"vocals.{fmt}")
        assert info.samplerate == 44100 and abs(info.frames - 308700) <= (
            1152 if fmt == "mp3" else 0
        )


def test_unknown_model_and_bad_option_are_clean_errors(tmp_path: Path):
    source = write_noise(tmp_path / "x.wav", 1.5)
    done = dsu("separate", source, "-m", "htdemucz", "--models-dir", tmp_path)
    assert done.returncode == 2 and "unknown model 'htdemucz'" in done.stderr
    assert "Traceback" not in done.stderr
    done = dsu("separate", source, "-m", "center", "--overlap", "1.5")
    assert done.returncode == 2 and "overlap" in done.stderr


def test_clipped_stems_are_reported_with_the_remedy(tmp_path: Path):
    source = write_noise(tmp_path / "hot.wav", 0.5, subtype="FLOAT", amplitude=4.0)
    run = dsu("separate", source, "-m", "center", "-o", tmp_path / "out", "-q")
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert warnings and all("clipped" in w and "--bit-depth 32" in w for w in warnings)
    run = dsu("separate", source, "-m", "center", "-o", tmp_path / "f", "-q", "--bit-depth", "32")
    assert run.returncode == 0 and "warning:" not in run.stderr
