"""The seed's protocol examples, sent verbatim, get the seed's replies.

The seed is the ``doctor-sample-unit`` project's ``dsu-demucs`` worker; its
``docs/WORKER_SYSTEM.md`` documents these request lines and replies. Only the example
paths are replaced by real ones, and the seed's model names (``htdemucs_ft``) name tiny
random-weight Demucs checkpoints in the real ``.th`` format here. A seed client sends no
ids, waits for one of the terminal statuses below, and reads ``files`` relative to
``output_dir``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from helpers import CENTRED, write_noise
from test_worker_support import read_reply, spawn
from tiny_demucs import SOURCES, write_models_dir

# What the seed's Node client (tests/test_all_workers_node.js) treats as a final reply.
SEED_TERMINAL = {"done", "error", "model_loaded", "models", "pong", "exiting"}


@pytest.fixture(scope="module")
def seed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seed")
    write_models_dir(
        root / "models",
        {"htdemucs_ft": {"nets": [("demucs", 0)]}, "htdemucs": {"nets": [("demucs", 1)]}},
    )
    write_noise(root / "audio.wav", 1.5, **CENTRED)
    return root


@pytest.fixture
def seed_worker(seed_root: Path):
    process, ready = spawn(["--models-dir", str(seed_root / "models")])
    yield process, ready, seed_root
    process.kill()


def _send_verbatim(process, line: str) -> dict:
    process.send_line(line)
    reply, _ = read_reply(process)
    return reply


def test_seed_examples_verbatim(seed_worker) -> None:
    process, ready, root = seed_worker
    assert ready["status"] == "ready" and "device" in ready

    pong = _send_verbatim(process, '{"cmd": "ping"}')
    assert pong == {"status": "pong", "model_loaded": None}

    status = _send_verbatim(process, '{"cmd": "get_status"}')
    assert status["status"] == "status"
    assert status["ready"] is True
    assert status["device"] == "cpu"
    assert status["model_loaded"] is None

    models = _send_verbatim(process, '{"cmd": "list_models"}')
    assert models["status"] == "models"
    assert {"htdemucs", "htdemucs_ft"} <= set(models["models"])

    loaded = _send_verbatim(process, '{"cmd": "load_model", "model": "htdemucs_ft"}')
    assert loaded["status"] == "model_loaded"
    assert loaded["model"] == "htdemucs_ft"
    assert loaded["stems"] == SOURCES
    assert _send_verbatim(process, '{"cmd": "ping"}')["model_loaded"] == "htdemucs_ft"

    line = (
        '{"cmd": "separate", "input": "/path/to/audio.wav", "output": "/output/dir", '
        '"model": "htdemucs_ft", "two_stems": "vocals", "shifts": 1, "overlap": 0.25}'
    )
    line = line.replace("/path/to/audio.wav", str(root / "audio.wav"))
    line = line.replace("/output/dir", str(root / "out"))
    done = _send_verbatim(process, line)
    assert done["status"] == "done", done
    assert isinstance(done["elapsed"], float)
    assert sorted(done["files"]) == ["no_vocals.wav", "vocals.wav"]
    for name in done["files"]:
        assert sf.info(str(Path(done["output_dir"]) / name)).frames == int(1.5 * 44100)

    # The bsroformer worker's spelling: output_dir, no optional fields.
    line = (
        '{"cmd": "separate", "input": "/path/to/audio.wav", "output_dir": "/output/dir", '
        '"model": "htdemucs"}'
    )
    line = line.replace("/path/to/audio.wav", str(root / "audio.wav"))
    line = line.replace("/output/dir", str(root / "out2"))
    done = _send_verbatim(process, line)
    assert done["status"] == "done", done
    assert sorted(done["files"]) == sorted(f"{s}.wav" for s in SOURCES)

    failed = _send_verbatim(process, '{"cmd": "load_model", "model": "bsroformer_4stem"}')
    assert failed["status"] == "error" and failed["message"]

    assert _send_verbatim(process, '{"cmd": "exit"}') == {"status": "exiting"}
    assert process.wait(30) == 0


def test_seed_client_sees_a_terminal_status_for_every_command(seed_worker) -> None:
    """Replay a seed client's loop: each reply it waits for is one it recognises."""
    process, _, _ = seed_worker
    commands = [
        '{"cmd": "ping"}',
        '{"cmd": "list_models"}',
        '{"cmd": "load_model", "model": "htdemucs"}',
        '{"cmd": "load_model", "model": "nope"}',
        '{"cmd": "separate", "input": "/missing.wav", "output": "/tmp"}',
        '{"cmd": "exit"}',
    ]
    for line in commands:
        assert _send_verbatim(process, line)["status"] in SEED_TERMINAL
    assert process.wait(30) == 0
