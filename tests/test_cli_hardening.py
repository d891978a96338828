"""``dsu separate`` under misuse and accidents, as a user meets them: the real ``dsu``
executable in a subprocess, real signals, a real full disk (a 1 MiB tmpfs).

- inputs that share a name each get their own output directory;
- SIGTERM, SIGHUP and SIGINT end a run with 128 + N and leave no temp file and no
  directory the run made; temp files of a killed run are removed by the next one, but
  never a user's file nor one another process is still writing;
- a full disk is reported as such, with the same cleanup;
- usage errors exit 2 once, before any input is read and before any directory exists;
- a missing optional package names the extra to install.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dsu import audio
from dsu.cli.separate import output_names
from helpers import write_noise

BIN = Path(sys.executable).parent
DSU = [str(BIN / "dsu")] if (BIN / "dsu").exists() else [sys.executable, "-m", "dsu"]
PARTIAL = re.compile(r"\..+\.partial-[0-9a-f]{12}")


def dsu(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*DSU, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def partials(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if PARTIAL.fullmatch(p.name))


def _default_signals() -> None:
    # A test run in the background inherits SIGINT ignored; the child must see it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start_long_run(source: Path, out: Path, others: tuple[Path, ...] = ()) -> subprocess.Popen:
    """A separation that runs for many seconds (20 shifts), once its temp files exist
    (temp files in ``others`` are not its own)."""
    process = subprocess.Popen(
        [*DSU, "separate", str(source), "-m", "center", "-o", str(out), "-q", "--shifts", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_signals,
    )
    deadline = time.monotonic() + 60
    while not (out.exists() and set(partials(out)) - set(others)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no temp file appeared: {process.communicate()}")
        time.sleep(0.05)
    return process


def test_inputs_with_one_name_get_one_directory_each(tmp_path: Path):
    inputs = [
        write_noise(tmp_path / "a" / "song.wav", 0.5, seed=1),
        write_noise(tmp_path / "b" / "song.wav", 0.6, seed=2),
        write_noise(tmp_path / "a" / "song.flac", 0.7, seed=3),
    ]
    out = tmp_path / "out"
    run = dsu("separate", *inputs, inputs[0], "-m", "center", "-o", out, "-q")
    assert run.returncode == 0, run.stderr
    for name, source in zip(("song", "song_2", "song_3"), inputs, strict=True):
        mixture, _ = audio.read(source)
        vocals, _ = audio.read(out / name / "vocals.wav")
        instrumental, _ = audio.read(out / name / "instrumental.wav")
        # Each directory holds the stems of its own input: they add up to it.
        assert vocals.shape == mixture.shape
        np.testing.assert_allclose(vocals + instrumental, mixture, atol=2e-4)
        assert f"{source} -> {out / name}" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["song", "song_2", "song_3"]
    assert "given more than once" in run.stderr
    assert len(run.stdout.splitlines()) == 6


def test_output_names_are_distinct_and_stable():
    paths = [Path(p) for p in ("x/song.wav", "y/Song.mp3", "song_2.wav", "z/song.ogg", "t.wav")]
    assert output_names(paths) == ["song", "Song_3", "song_2", "song_4", "t"]
    assert output_names([Path("a/Mix.stem.mp4"), Path("b/Mix.wav")]) == ["Mix", "Mix_2"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_ends_the_run_cleanly(tmp_path: Path, sig: signal.Signals):
    source = write_noise(tmp_path / "in.wav", 10.0)
    existing = tmp_path / "existing"
    existing.mkdir()
    out = existing / "made" / "out"
    process = start_long_run(source, out)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    assert partials(tmp_path) == []
    # What the run made goes; what was there before stays.
    assert not (existing / "made").exists(), sorted(map(str, existing.rglob("*")))
    assert existing.is_dir()


def test_a_killed_runs_temp_files_are_removed_by_the_next(tmp_path: Path):
    source = write_noise(tmp_path / "in.wav", 10.0)
    out = tmp_path / "out"
    track = out / "in"
    # A user's files, one even named like a DSU temp file (but not of an audio format).
    track.mkdir(parents=True)
    look_alike = track / ".notes.txt.partial-0123456789ab"
    mine = [look_alike, track / ".vocals.wav.partial-x", track / "a"]
    for path in mine:
        path.write_text("a user's file")
    # Another process writing into the same directory all along: its temp file stays.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from dsu.audio import AudioWriter; "
            f"w = AudioWriter({str(track / 'other.wav')!r}, 44100, 2); "
            "print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        live = partials(track)[1:]  # after the look-alike, which sorts first
        assert [p.name[:11] for p in live] == [".other.wav."]
        process = start_long_run(source, out, (look_alike, *live))
        process.kill()  # SIGKILL: no cleanup can run
        process.communicate(timeout=60)
        stale = [p for p in partials(track) if p not in [*live, look_alike]]
        assert stale, "SIGKILL should have left temp files to clean"
        run = dsu("separate", source, "-m", "center", "-o", out, "-q")
        assert run.returncode == 0, run.stderr
        assert f"removed {len(stale)} unfinished file(s)" in run.stderr
        assert partials(track) == [look_alike, *live]
        assert all(path.read_text() == "a user's file" for path in mine)
        assert audio.probe(track / "vocals.wav").frames == 441000
    finally:
        writer.communicate(timeout=30)  # stdin closes: the writer exits and drops its file
    assert partials(track) == [look_alike]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, too small for the stems of ten seconds of audio."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_named_and_leaves_nothing(tmp_path: Path, full_disk: Path):
    first = write_noise(tmp_path / "one.wav", 10.0)
    second = write_noise(tmp_path / "two.wav", 10.0, seed=1)
    for out in (full_disk / "new", full_disk):
        run = dsu("separate", first, second, "-m", "center", "-o", out, "-q")
        assert run.returncode == 1, run.stderr
        assert "Traceback" not in run.stderr
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 2
        for error, name in zip(errors, ("one", "two"), strict=True):
            assert "no space left on device" in error and str(out / name) in error
        assert list(full_disk.iterdir()) == []  # no temp file, no empty directory
    assert full_disk.is_dir()


USAGE_ERRORS = {
    "unknown stem": (["--stems", "vocals,drums"], "no stem 'drums'"),
    "unknown two-stems": (["--two-stems", "bass"], "no stem 'bass'"),
    "no stem at all": (["--stems", ","], "--stems needs"),
    "fp16 on the cpu": (["--device", "cpu", "--precision", "fp16"], "fp16"),
    "flac float": (["--format", "flac", "--bit-depth", "32"], "bit depths 16, 24"),
    "wav 8-bit": (["--bit-depth", "8"], "bit depths 16, 24, 32"),
    "stem file, two stems": (["--format", "stem.mp4"], "four-stem model"),
    "bitrate": (["--format", "mp3", "--bitrate", "321"], "no 321 kbps"),
    "zero bitrate": (["--format", "mp3", "--bitrate", "0"], "no 0 kbps"),
    "infinite segment": (["--segment", "inf"], "segment"),
    "nan segment": (["--segment", "nan"], "segment"),
    "tiny segment": (["--segment", "0.00001"], "segment"),
    "negative segment": (["--segment", "-3"], "segment"),
    "huge shifts": (["--shifts", "100000000"], "shifts"),
}


@pytest.mark.parametrize("flags, message", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_exit_2_once_before_any_work(tmp_path: Path, flags: list, message: str):
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"\x00" * 1000)
    good = write_noise(tmp_path / "good.wav", 0.5)
    out = tmp_path / "out"
    missing = tmp_path / "other.wav"
    run = dsu("separate", broken, good, missing, "-m", "center", "-o", out, "-q", *flags)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], run.stderr
    # No input was read (the broken one would be reported) and nothing was made.
    assert "broken" not in run.stderr and "other.wav" not in run.stderr
    assert run.stdout == "" and not out.exists()


def _without(packages: set[str], root: Path) -> Path:
    """A copy of this environment's site-packages (as symlinks) lacking ``packages``."""
    site = Path(np.__file__).resolve().parents[1]
    farm = root / "site-packages"
    farm.mkdir()
    for entry in site.iterdir():
        name = re.split(r"[-.]", entry.name, maxsplit=1)[0].lower()
        if name not in packages:
            (farm / entry.name).symlink_to(entry)
    return farm


def test_a_missing_extra_is_named_with_the_install_command(tmp_path: Path):
    farm = _without({"fastapi", "uvicorn"}, tmp_path)
    # -S leaves out this environment's site-packages; the farm stands in for it.
    code = (
        "import site, sys; site.addsitedir(sys.argv[1]); "
        "from dsu.cli.main import main; sys.exit(main(sys.argv[2:]))"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", code, str(farm), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "pip install 'dsu[service]'" in run.stderr
