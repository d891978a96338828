"""Service overhead: an async job (submit -> signed webhook) against a direct call.

For each model, the same 30 s input file is separated to wav stems

- directly: ``Separator(model).separate(path, output_dir=...)`` in this process, the model
  loaded and warmed up first;
- through ``dsu serve`` (a real subprocess on 127.0.0.1, the model kept warm): POST
  ``/separate-async`` with an ``audio_url`` on a local HTTP server and wait for the
  webhook. That adds the HTTP round trips, the download, the probe, the SQLite queue, the
  result bookkeeping and the webhook delivery.

Models: ``center`` (weight-free, fast: the overhead shows at its largest) and a full-size
HTDemucs with random weights (the ``htdemucs`` configuration: speed does not depend on
the weights), the model a deployment runs. Direct and service runs alternate round by
round (never at the same time). Prints medians and the overhead two ways: against the
direct call (A), and against the service's own separation time for the same job (B),
which other load on the machine cannot skew.

Usage: ``python bench/bench_service.py [--seconds 30] [--rounds 5] [--models center,htdemucs]``
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

SOURCES = ["drums", "bass", "other", "vocals"]
HTDEMUCS = "bench-htdemucs"


def write_input(path: Path, seconds: float) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    n = int(seconds * 44100)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / 44100)
    x = 0.1 * rng.standard_normal((n, 2)) + tone[:, None]
    sf.write(path, x.astype(np.float32), 44100, subtype="PCM_16")


def write_htdemucs(models_dir: Path) -> None:
    """A full-size HTDemucs (the released configuration) with random weights."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    net = HTDemucs(SOURCES, segment=7.8)
    args, kwargs = net._init_args_kwargs
    weights = models_dir / "weights" / "bench0000-00000000.th"
    weights.parent.mkdir(parents=True, exist_ok=True)
    package = {"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": net.state_dict()}
    torch.save(package, weights)
    manifest = {
        "version": 1,
        "models": {
            HTDEMUCS: {"arch": "demucs", "weights": [f"weights/{weights.name}"], "stems": SOURCES}
        },
    }
    (models_dir / "models.json").write_text(json.dumps(manifest))


class Direct:
    """``Separator.separate`` from the input file to wav files, the model kept loaded."""

    def __init__(self, model: str, models_dir: Path, warm: Path) -> None:
        from dsu import Separator

        self.sep = Separator(model, models_dir=models_dir, device="cpu")
        self.sep.load()
        self.out = tempfile.TemporaryDirectory()
        self.sep.separate(warm, output_dir=self.out.name, format="wav")

    def run(self, source: Path) -> float:
        start = time.perf_counter()
        self.sep.separate(source, output_dir=self.out.name, format="wav")
        return time.perf_counter() - start

    def close(self) -> None:
        self.sep.unload()
        self.out.cleanup()


class Files(http.server.ThreadingHTTPServer):
    """Serves the input files and receives webhooks, on 127.0.0.1."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.events: dict[str, threading.Event] = {}
        self.arrived: dict[str, float] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = outer.files.get(self.path, b"")
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()
                outer.arrived[payload["job_id"]] = time.perf_counter()
                outer.events.setdefault(payload["job_id"], threading.Event()).set()

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A live ``dsu serve`` with ``model`` kept warm, fed from a local file server."""

    def __init__(self, model: str, models_dir: Path, source: Path, warm: Path, work: Path) -> None:
        self.model = model
        self.files = Files({"/input.wav": source.read_bytes(), "/warm.wav": warm.read_bytes()})
        port = free_port()
        env = {
            **os.environ,
            "DSU_MODELS_DIR": str(models_dir),
            "DSU_DATA_DIR": str(work / f"data-{model}"),
            "DSU_ALLOW_PRIVATE_URLS": "1",
            "DEMUCS_MODEL": model,
            "DSU_DEVICE": "cpu",
        }
        self.log = open(work / f"server-{model}.log", "wb")  # noqa: SIM115 - the child writes it
        self.server = subprocess.Popen(
            [sys.executable, "-m", "dsu", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{port}"
        self.count = 0
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.base}/health", timeout=2).json().get("model_loaded"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline or self.server.poll() is not None:
                self.close()
                raise SystemExit(f"server did not start; see {self.log.name}")
            time.sleep(0.2)
        self.job("/warm.wav")

    def job(self, path: str) -> tuple[float, float]:
        """Submit ``path`` as an async job: (submit -> webhook seconds, seconds the
        ``Separator.separate`` call inside the service took)."""
        self.count += 1
        job_id = f"{self.model}-{self.count}"
        event = self.files.events.setdefault(job_id, threading.Event())
        start = time.perf_counter()
        r = httpx.post(
            f"{self.base}/separate-async",
            data={
                "job_id": job_id,
                "audio_url": f"{self.files.url}{path}",
                "webhook_url": f"{self.files.url}/hook",
                "output_format": "wav",
            },
        )
        r.raise_for_status()
        if not event.wait(1800):
            raise SystemExit(f"no webhook for {job_id}")
        state = httpx.get(f"{self.base}/jobs/{job_id}").json()
        if state["status"] != "completed":
            raise SystemExit(f"job {job_id} failed: {state['error']}")
        return self.files.arrived[job_id] - start, state["result"]["separation_seconds"]

    def close(self) -> None:
        self.server.terminate()
        self.server.wait(30)
        self.log.close()
        self.files.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default=f"center,{HTDEMUCS}")
    args = parser.parse_args()
    models = [HTDEMUCS if m == "htdemucs" else m for m in args.models.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source, warm = work / "input.wav", work / "warm.wav"
        write_input(source, args.seconds)
        write_input(warm, 2.0)
        models_dir = work / "models"
        models_dir.mkdir()
        if HTDEMUCS in models:
            write_htdemucs(models_dir)
        print(f"input: {args.seconds:g} s stereo 44.1 kHz wav; {args.rounds} rounds; wav out")
        print(
            f"{'model':<16}{'direct s':>10}{'service s':>11}{'inside s':>10}"
            f"{'A: svc-direct':>15}{'B: svc-inside':>15}"
        )
        for model in models:
            direct = Direct(model, models_dir, warm)
            service = Service(model, models_dir, source, warm, work)
            runs = []
            for _ in range(args.rounds):
                d = direct.run(source)
                total, inside = service.job("/input.wav")
                runs.append((d, total, inside))
            direct.close()
            service.close()
            d = statistics.median(r[0] for r in runs)
            s = statistics.median(r[1] for r in runs)
            i = statistics.median(r[2] for r in runs)
            a = statistics.median(r[1] - r[0] for r in runs)
            b = statistics.median(r[1] - r[2] for r in runs)
            print(
                f"{model:<16}{d:>10.2f}{s:>11.2f}{i:>10.2f}"
                f"{f'{a:+.2f} s {100 * a / d:+.1f}%':>15}{f'{b:+.2f} s {100 * b / i:+.1f}%':>15}",
                flush=True,
            )
        print(
            "direct: Separator.separate(file -> wav files) in this process; service: submit -> "
            "webhook; inside: the service's own Separator.separate call for that job.\n"
            "A: median per-round service - direct (runs alternate; noisy when other work shares "
            "the CPU). B: median service - inside, the same job: everything the service adds "
            "(HTTP, queue, download, probe, bookkeeping, webhook), immune to load drift."
        )


if __name__ == "__main__":
    main()
