"""Decoding ahead and encoding behind on their own threads: same blocks and bytes, the
same typed errors, nothing left running or on disk, and the compute-thread setting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import soundfile as sf

from dsu import audio
from dsu.engine import device
from dsu.errors import AudioIOError, BadAudio, BadRequest

SR = 44100


def _threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def _noise(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal((2, int(seconds * SR)))).astype(np.float32)


def test_read_ahead_yields_the_readers_blocks(tmp_path):
    path = audio.write(tmp_path / "x.flac", _noise(3.0), SR)
    with audio.AudioReader(path, 10000) as reader:
        expected = list(reader)
    got = list(audio.read_ahead(path, 10000, depth=2))
    assert len(got) == len(expected) > 10
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not _threads("dsu-decode")


def test_read_ahead_raises_the_decoders_error_where_its_block_comes(tmp_path):
    x = _noise(1.0)
    x[1, 30000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x.T, SR, subtype="FLOAT")
    blocks = audio.read_ahead(path, 10000)
    assert next(blocks).shape == (2, 10000)
    with pytest.raises(BadAudio, match="NaN or infinite samples \\(first at frame 30000\\)"):
        list(blocks)
    assert not _threads("dsu-decode")


def test_closing_read_ahead_early_stops_its_thread(tmp_path):
    path = audio.write(tmp_path / "x.wav", _noise(5.0), SR)
    blocks = audio.read_ahead(path, 4096, depth=2)
    next(blocks)
    assert _threads("dsu-decode")  # blocked on the full queue, not finished
    blocks.close()
    assert not _threads("dsu-decode")


def test_background_encoding_writes_what_a_whole_write_does(tmp_path):
    x = _noise(4.0)
    with audio.AudioWriter(tmp_path / "blocks.flac", SR, 2) as writer:
        for start in range(0, x.shape[1], 7000):
            block = x[:, start : start + 7000].copy()
            writer.write(block)
            block[:] = 1.0  # the writer copied it: reusing the buffer changes nothing
    assert writer.frames_written == x.shape[1]
    y, _ = audio.read(writer.path)
    z, _ = audio.read(audio.write(tmp_path / "whole.flac", x, SR))
    np.testing.assert_array_equal(y, z)
    assert not _threads("dsu-encode")


def test_abort_stops_the_encoder_and_leaves_nothing(tmp_path):
    writer = audio.AudioWriter(tmp_path / "x.mp3", SR, 2)
    for _ in range(10):
        writer.write(_noise(2.0))
    writer.abort()
    assert not _threads("dsu-encode")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_encode_raises_audio_io_error_and_leaves_nothing(tmp_path):
    """A real write failure (the file size limit) inside the encoder thread surfaces to
    the caller as AudioIOError, by write or commit, and the temp file is gone."""
    script = textwrap.dedent(
        """
        import resource, signal, sys
        import numpy as np
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        from dsu import audio
        from dsu.errors import AudioIOError
        try:
            with audio.AudioWriter(sys.argv[1], 44100, 2) as writer:
                for _ in range(20):
                    writer.write(np.zeros((2, 44100), np.float32))
        except AudioIOError as e:
            print("AudioIOError:", e)
        """
    )
    target = tmp_path / "out" / "x.wav"
    done = subprocess.run(
        [sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"AudioIOError: {target}: cannot write" in done.stdout
    assert list(target.parent.iterdir()) == []


def test_compute_threads_default_to_physical_cores_and_the_setting_overrides(monkeypatch):
    monkeypatch.delenv(device.THREADS_ENV, raising=False)
    cores = device.physical_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert device.compute_threads() == cores
    monkeypatch.setenv(device.THREADS_ENV, "3")
    assert device.compute_threads() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(device.THREADS_ENV, bad)
        with pytest.raises(BadRequest, match="DSU_THREADS must be an integer >= 1"):
            device.compute_threads()


def test_engine_applies_the_thread_setting_in_a_fresh_process():
    script = (
        "import numpy, torch; from dsu import Separator; "
        "Separator('center', device='cpu').separate(numpy.zeros((2, 44100)), 44100); "
        "print(torch.get_num_threads())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, device.THREADS_ENV: "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1"


def test_write_failure_type_is_unchanged_for_a_bad_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(AudioIOError, match="cannot create directory"):
        audio.AudioWriter(blocker / "x.wav", SR, 2)
