"""The persistent worker against a fresh process per file (what the seed's workers replace).

Measures, on this machine:

1. spawn -> ``ready`` for ``python -m dsu worker`` and the ``dsu-demucs`` launcher;
2. ``load_model`` -> ``model_loaded``: the first load in a fresh worker (it waits for the
   torch import begun after ``ready``), then loads in a warm process (built-in ``center``,
   and two tiny random-weight Demucs checkpoints in the real ``.th`` format);
3. switching between two loaded models (worker-side time and client round trip);
4. a warm ``separate`` of a 10 s clip through the worker: the client's round trip minus
   the separation's own time (the API's, which the reply reports as ``elapsed``) is the
   worker's overhead (JSON, queue, thread hand-offs, validation, progress events); the
   same ``Separator.separate`` call in this process is shown beside it;
5. ``dsu separate`` as a new process per file: interpreter, imports, model load, compute.

Runs alternate between the worker and the in-process call so that machine load drifts
affect both. Prints medians and ratios, and checks the issue's targets: ready <= 1.5 s,
switch <= 10 ms, warm overhead <= 50 ms.

Usage: ``python bench/bench_worker.py [--rounds 5] [--models center,tiny-a]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from dsu.client import WorkerClient, WorkerProcess, worker_command

ROOT = Path(__file__).resolve().parents[1]
SHARED_CLIP = ROOT.parent / "shared" / "audio" / "la-vie-en-rose-mixture.wav"
SOURCES = ["drums", "bass", "other", "vocals"]


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def make_models(root: Path) -> Path:
    """Two tiny random Demucs checkpoints (``tiny-a``, ``tiny-b``) in a models dir.

    Demucs v2 networks: small enough that the compute does not drown the overheads measured.
    """
    import torch
    from demucs.demucs import Demucs

    models = {}
    for seed, name in enumerate(("tiny-a", "tiny-b")):
        torch.manual_seed(seed)
        net = Demucs(SOURCES, channels=8, depth=3, segment=1, lstm_layers=1)
        args, kwargs = net._init_args_kwargs
        path = root / "weights" / f"{name}.th"
        path.parent.mkdir(parents=True, exist_ok=True)
        package = {"klass": Demucs, "args": args, "kwargs": kwargs, "state": net.state_dict()}
        torch.save(package, path)
        models[name] = {"arch": "demucs", "weights": f"weights/{path.name}", "stems": SOURCES}
    (root / "models.json").write_text(json.dumps({"version": 1, "models": models}))
    return root


def make_clip(work: Path) -> Path:
    if SHARED_CLIP.is_file():
        return SHARED_CLIP
    rng = np.random.default_rng(0)
    data = (0.1 * rng.standard_normal((10 * 44100, 2))).astype(np.float32)
    path = work / "clip.wav"
    sf.write(path, data, 44100, subtype="PCM_16")
    return path


def time_ready(command: list[str], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        process = WorkerProcess(command)
        ready = process.read(timeout=60)
        times.append(time.perf_counter() - started)
        assert ready["status"] == "ready", ready
        process.send({"cmd": "exit"})
        process.wait(30)
    return times


def round_trip(client: WorkerClient, cmd: str, **fields: object) -> tuple[float, dict]:
    started = time.perf_counter()
    reply = client.request(cmd, **fields)
    return time.perf_counter() - started, reply


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="center,tiny-a", help="models for the warm runs")
    opts = parser.parse_args()
    rounds = opts.rounds

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models_dir = make_models(work / "models")
        clip = make_clip(work)
        seconds = sf.info(str(clip)).duration
        print(f"clip: {clip.name} ({seconds:.1f} s); {rounds} rounds; medians")

        # 1. spawn -> ready
        ready_worker = time_ready(worker_command(["--models-dir", str(models_dir)]), rounds)
        launcher = [str(Path(sys.executable).with_name("dsu-demucs")), "--worker"]
        ready_launcher = time_ready([*launcher, "--models-dir", str(models_dir)], rounds)
        print(f"\nspawn -> ready      dsu worker {median_ms(ready_worker):7.0f} ms")
        print(f"                    dsu-demucs {median_ms(ready_launcher):7.0f} ms")

        # 2.-4. one worker
        with WorkerClient(
            ["--max-loaded-models", "4"], models_dir=models_dir, device="cpu"
        ) as client:
            first, reply = round_trip(client, "load_model", model="center")
            print(
                f"\nload_model -> model_loaded (first, waits for torch): {1000 * first:.0f} ms "
                f"(worker: {1000 * reply['elapsed']:.0f} ms)"
            )
            for name in ("tiny-a", "tiny-b", "hpss"):
                took, reply = round_trip(client, "load_model", model=name)
                print(f"load_model {name:7s} in a warm process: {1000 * took:7.1f} ms")

            switch_worker, switch_trip = [], []
            for _ in range(rounds):
                for name in ("tiny-a", "tiny-b"):
                    took, reply = round_trip(client, "load_model", model=name)
                    assert reply["cached"] is True
                    switch_trip.append(took)
                    switch_worker.append(reply["elapsed"])
            print(
                f"switch between 2 loaded models: worker {median_ms(switch_worker):.3f} ms, "
                f"round trip {median_ms(switch_trip):.2f} ms"
            )

            from dsu import Separator

            warm_results = {}
            for name in opts.models.split(","):
                separator = Separator(name, models_dir=models_dir, device="cpu")
                separator.load()
                out_worker, out_local = work / f"w-{name}", work / f"l-{name}"
                fields = {"input": str(clip), "output": str(out_worker), "model": name}
                round_trip(client, "separate", **fields)  # warm-up
                separator.separate(clip, output_dir=out_local)
                via_worker, in_process, per_request = [], [], []
                for _ in range(rounds):
                    took, reply = round_trip(client, "separate", **fields)
                    assert reply["status"] == "done", reply
                    via_worker.append(took)
                    per_request.append(took - reply["elapsed"])
                    started = time.perf_counter()
                    separator.separate(clip, output_dir=out_local)
                    in_process.append(time.perf_counter() - started)
                separator.unload()
                warm_results[name] = (
                    median_ms(via_worker),
                    median_ms(in_process),
                    median_ms(per_request),
                )

        # 5. a fresh `dsu separate` process per file
        fresh = {}
        for name in warm_results:
            times = []
            for i in range(max(2, rounds // 2)):
                command = [
                    sys.executable,
                    "-m",
                    "dsu",
                    "separate",
                    str(clip),
                    "-m",
                    name,
                    "-o",
                    str(work / f"fresh-{name}-{i}"),
                    "--models-dir",
                    str(models_dir),
                    "--device",
                    "cpu",
                    "-q",
                ]
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times.append(time.perf_counter() - started)
            fresh[name] = median_ms(times)

    print(f"\nwarm separate of the {seconds:.0f} s clip (ms):")
    print("  worker: client round trip; overhead: round trip minus the separation's own time")
    print("  (the API's, reported in the reply); in-proc: Separator.separate in this process")
    print(f"{'model':8s} {'worker':>8s} {'overhead':>9s} {'in-proc':>8s} {'fresh proc':>11s} ratio")
    for name, (worker_ms, local_ms, overhead) in warm_results.items():
        ratio = fresh[name] / worker_ms
        print(
            f"{name:8s} {worker_ms:8.0f} {overhead:9.1f} {local_ms:8.0f} {fresh[name]:11.0f} "
            f"{ratio:5.2f}x"
        )
        print(
            f"{'':8s} a fresh process pays {fresh[name] - local_ms:.0f} ms of start-up "
            f"(interpreter, imports, model load) on top of the compute"
        )

    checks = {
        "ready <= 1.5 s": max(statistics.median(ready_worker), statistics.median(ready_launcher))
        <= 1.5,
        "switch <= 10 ms": median_ms(switch_trip) <= 10,
        "warm overhead <= 50 ms": all(o <= 50 for _, _, o in warm_results.values()),
    }
    print("\ntargets: " + ", ".join(f"{k}: {'ok' if v else 'MISSED'}" for k, v in checks.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
