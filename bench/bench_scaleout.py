"""Scale-out: throughput of one vs two Celery workers, and the queue's cost per job.

A real ``redis-server``, ``dsu serve --queue celery`` and ``dsu celery-worker`` processes
(one torch thread each: ``OMP_NUM_THREADS=1``) on 127.0.0.1. The same batch of async
jobs (an ``audio_url`` on a local HTTP server, a webhook back) runs

- on one worker, then on two: jobs per minute from the first submission to the last
  webhook, and the ratio (two workers on a 2-core machine: at most 2x);
- one job at a time, on the local backend (``dsu serve``, SQLite, in-process worker) and
  on the Celery backend with one worker: the median submit-to-webhook time of each; the
  difference is what the broker, the Redis store and the extra process cost per job.

Usage: ``python bench/bench_scaleout.py [--jobs 12] [--seconds 20] [--model center]``;
writes ``bench/out/scaleout.json``.
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import shutil
import signal
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav_bytes(seconds: float) -> bytes:
    import soundfile as sf

    rng = np.random.default_rng(0)
    n = int(seconds * 44100)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / 44100)
    x = 0.1 * rng.standard_normal((n, 2)) + tone[:, None]
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), 44100, subtype="PCM_16", format="WAV")
    return buf.getvalue()


class Web:
    """Serves the input and records webhook arrival times, by job id."""

    def __init__(self, audio: bytes) -> None:
        self.arrived: dict[str, float] = {}
        self.cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(audio)))
                self.end_headers()
                self.wfile.write(audio)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.cond:
                    outer.arrived.setdefault(json.loads(body)["job_id"], time.monotonic())
                    outer.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, ids: list[str], timeout: float = 1800) -> float:
        """Until every id's webhook arrived; returns the last arrival time."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(i in self.arrived for i in ids):
                if not self.cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"webhooks missing: {set(ids) - set(self.arrived)}")
            return max(self.arrived[i] for i in ids)


class Processes:
    """The child processes of one run, stopped together."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = {**os.environ, **env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, argv: list[str]) -> None:
        with open(self.work / f"{name}.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def serve(procs: Processes, port: int, workers: int) -> str:
    """The API on ``port`` and ``workers`` ready workers (0: whatever backend env says)."""
    dsu = [sys.executable, "-m", "dsu"]
    for i in range(workers):
        procs.spawn(f"worker{i}", [*dsu, "celery-worker", "--name", f"bench{i}"])
    procs.spawn("api", [*dsu, "serve", "--host", "127.0.0.1", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{url}/health", timeout=2).json()
            ready = [w for w in body.get("workers", []) if w["state"] == "ready"]
            if body["status"] == "healthy" and len(ready) >= workers:
                return url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service did not start; logs in {procs.work}")


def submit(url: str, web: Web, job_id: str, model: str) -> None:
    r = httpx.post(
        f"{url}/separate-async",
        data={
            "job_id": job_id,
            "audio_url": f"{web.url}/in.wav",
            "webhook_url": f"{web.url}/hook",
            "model": model,
            "output_format": "wav",
        },
        timeout=30,
    )
    r.raise_for_status()


def batch(url: str, web: Web, tag: str, jobs: int, model: str) -> float:
    """Jobs per minute for ``jobs`` submitted at once."""
    submit(url, web, f"{tag}-warm", model)  # every worker's model and caches warm
    web.wait([f"{tag}-warm"])
    ids = [f"{tag}-{i}" for i in range(jobs)]
    started = time.monotonic()
    for job_id in ids:
        submit(url, web, job_id, model)
    return jobs / ((web.wait(ids) - started) / 60)


def latency(url: str, web: Web, tag: str, rounds: int, model: str) -> float:
    """Median submit-to-webhook seconds, one job at a time."""
    times = []
    for i in range(rounds + 1):
        job_id = f"{tag}-{i}"
        started = time.monotonic()
        submit(url, web, job_id, model)
        arrived = web.wait([job_id])
        if i:  # the first one warms up
            times.append(arrived - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each input")
    parser.add_argument("--rounds", type=int, default=5, help="jobs timed one at a time")
    parser.add_argument("--model", default="center")
    args = parser.parse_args()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        sys.exit("error: redis-server is not installed (make install-test installs it)")

    web = Web(wav_bytes(args.seconds))
    work = Path(tempfile.mkdtemp(prefix="dsu-scaleout-"))
    common = {
        "DSU_ALLOW_PRIVATE_URLS": "1",
        "DSU_MAX_QUEUE": str(args.jobs + 4),
        "DSU_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "DSU_RETENTION_HOURS": "1",
    }
    redis_port = free_port()
    redis = subprocess.Popen(
        [redis_server, "--bind", "127.0.0.1", "--port", str(redis_port), "--dir", str(work),
         "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    celery = {
        **common,
        "DSU_QUEUE": "celery",
        "DSU_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DSU_DATA_DIR": str(work / "celery"),
    }
    result: dict[str, object] = {"jobs": args.jobs, "seconds": args.seconds, "model": args.model}
    try:
        for workers in (1, 2):
            procs = Processes(work, celery)
            try:
                url = serve(procs, free_port(), workers)
                rate = batch(url, web, f"batch{workers}", args.jobs, args.model)
                result[f"jobs_per_min_{workers}_worker"] = round(rate, 2)
                print(f"{workers} worker(s): {rate:.1f} jobs/min", flush=True)
                if workers == 1:
                    result["celery_latency_s"] = round(
                        latency(url, web, "lat-celery", args.rounds, args.model), 3
                    )
            finally:
                procs.stop()
        procs = Processes(work, {**common, "DSU_QUEUE": "local", "DSU_DATA_DIR": str(work / "l")})
        try:
            url = serve(procs, free_port(), 0)
            result["local_latency_s"] = round(
                latency(url, web, "lat-local", args.rounds, args.model), 3
            )
        finally:
            procs.stop()
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait(10)
        web.httpd.shutdown()
    result["ratio"] = round(
        float(result["jobs_per_min_2_worker"]) / float(result["jobs_per_min_1_worker"]), 3
    )
    result["overhead_per_job_s"] = round(
        float(result["celery_latency_s"]) - float(result["local_latency_s"]), 3
    )
    result["machine"] = machine()
    print(
        f"ratio {result['ratio']}x (two workers over one); per job, one at a time: "
        f"celery {result['celery_latency_s']} s, local {result['local_latency_s']} s, "
        f"overhead {result['overhead_per_job_s']} s"
    )
    print(f"wrote {write_result('scaleout', result)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
