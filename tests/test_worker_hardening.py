"""Requests and signals that must not wedge a real worker: out-of-range engine options,
a ``device`` it does not run on, bad start-up flags, and every signal that ends it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsu.client import WorkerProcess, worker_command
from dsu.engine import EngineOptions
from helpers import CENTRED, write_noise
from test_worker_support import LONG_SECONDS, LONG_WORK, read_reply, request, spawn
from tiny_demucs import write_models_dir


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hardening")
    write_noise(root / "short.wav", 0.6, **CENTRED)
    write_noise(root / "long.wav", LONG_SECONDS, seed=1, **CENTRED)
    # Tiny networks with 1-second training segments: an HTDemucs cannot take a longer one.
    write_models_dir(
        root / "models", {"ht": {"nets": [("htdemucs", 0)]}, "hd": {"nets": [("hdemucs", 0)]}}
    )
    return root


@pytest.fixture(scope="module")
def worker(media: Path):
    process, _ = spawn(["--models-dir", str(media / "models"), "--device", "cpu"])
    yield process
    process.kill()


def _separate(media: Path, output: str, **fields) -> dict:
    return {
        "cmd": "separate",
        "input": str(media / "short.wav"),
        "output": str(media / output),
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"model": "center", "shifts": 1e9}, "shifts"),
        ({"model": "center", "batch_size": 1_000_000}, "batch size"),
        ({"model": "center", "segment": 1e6}, "segment"),
        ({"model": "center", "segment": 0.00001}, "segment"),
        ({"model": "center", "overlap": 1.0}, "overlap"),
        ({"model": "center", "overlap": 0.99, "segment": 0.05}, "overlap"),
        ({"model": "ht", "segment": 30}, "trained"),
    ],
)
def test_out_of_range_engine_option_is_refused_at_once(
    worker: WorkerProcess, media: Path, fields: dict, word: str
) -> None:
    started = time.monotonic()
    reply = request(worker, {**_separate(media, "refused"), "id": "x", **fields}, timeout=60)
    assert (reply["status"], reply["code"]) == ("error", "bad_request"), reply
    assert word in reply["message"]
    assert time.monotonic() - started < 30
    assert not (media / "refused").exists() or not list((media / "refused").iterdir())
    assert request(worker, {"cmd": "ping", "id": "alive"})["status"] == "pong"


def test_per_request_engine_options_do_not_stick(worker: WorkerProcess, media: Path) -> None:
    """A request's options apply to it alone, and match the Python API's per-call options."""
    from dsu.api import Separator

    short = request(worker, _separate(media, "seg", model="hd", segment=0.3))
    default = request(worker, _separate(media, "default", model="hd"))
    assert short["status"] == default["status"] == "done", (short, default)
    separator = Separator("hd", models_dir=media / "models", device="cpu")
    mix = sf.read(media / "short.wav", dtype="float32", always_2d=True)[0].T
    expected = {
        "seg": separator.separate(mix, 44100, options=EngineOptions(segment=0.3)),
        "default": separator.separate(mix, 44100),
    }
    for name, reply in (("seg", short), ("default", default)):
        got = sf.read(reply["stems"]["vocals"], dtype="float32", always_2d=True)[0].T
        assert np.abs(got - expected[name].stems["vocals"]).max() < 1e-3, name
    written = {
        name: sf.read(reply["stems"]["vocals"], dtype="float32")[0]
        for name, reply in (("seg", short), ("default", default))
    }
    assert np.abs(written["seg"] - written["default"]).max() > 1e-3, "segment had no effect"


def test_device_field_must_be_the_workers(worker: WorkerProcess, media: Path) -> None:
    refused = request(worker, _separate(media, "gpu", model="center", device="cuda:7"))
    assert (refused["status"], refused["code"]) == ("error", "bad_request"), refused
    assert "cuda:7" in refused["message"] and "cpu" in refused["message"]
    assert not (media / "gpu").exists()
    same = request(worker, _separate(media, "cpu", model="center", device="cpu"))
    assert same["status"] == "done", same


@pytest.mark.parametrize(
    ("flags", "word"),
    [(["--device", "tpu"], "--device tpu"), (["--arch", "demucs,nosuch"], "nosuch")],
)
def test_bad_start_up_flags_exit_2_before_ready(flags: list[str], word: str) -> None:
    done = subprocess.run(
        worker_command(flags),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert done.stdout == "", "no ready line"
    assert word in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT], ids=["SIGHUP", "SIGQUIT"])
def test_ending_signal_cancels_and_removes_partial_files(
    media: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    output = tmp_path / "out"
    process, _ = spawn(["--models-dir", str(media / "models")])
    try:
        process.send(
            {
                "cmd": "separate",
                "id": "s",
                "input": str(media / "long.wav"),
                "output": str(output),
                **LONG_WORK,
            }
        )
        event = process.read(timeout=60)
        while event.get("stage") != "separating":
            event = process.read(timeout=60)
        assert any(".partial-" in p.name for p in output.iterdir()), "outputs are being written"
        os.kill(process.pid, sig)
        reply, _ = read_reply(process, timeout=60)
        assert (reply["status"], reply["id"]) == ("cancelled", "s")
        assert process.read(timeout=30)["status"] == "shutdown"
        assert process.wait(30) == 0
        # No partial file is left behind, nor the directory the request created.
        assert not output.exists()
    finally:
        process.kill()
