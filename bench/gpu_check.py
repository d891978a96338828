"""Every GPU case in one prepared script, under 8 minutes on one device (not run in CI).

Run it on a machine with a CUDA GPU: ``python bench/gpu_check.py [--seconds 30]``. It
needs only DSU and torch (random weights, noise input), prints one line per case and
saves ``bench/out/gpu.json`` for ``bench/report.py``. Cases, each on the same input:

- full-size BS-RoFormer (viperx ep_317 config) through :class:`dsu.Separator` in the
  ``uvr`` and ``msst`` framings, fp32, fp16 and bf16 autocast (SDPA picks its flash or
  memory-efficient kernel under autocast), with the batch size chosen from free memory;
- the same network's forward on one chunk: eager against ``torch.compile`` (inductor)
  and against ``mode="reduce-overhead"`` (CUDA graphs for the fixed chunk shape);
- full-size HTDemucs (random weights) through DSU, fp32 and fp16;
- parity of every reduced-precision or compiled run against its fp32 eager run (the
  budget is 40 dB), and each run's peak GPU memory.

Each case is skipped once the elapsed time passes ``--budget`` seconds (default 450).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import sdr, write_result

sys.path.insert(0, str(Path(__file__).resolve().parent))

RATE = 44100


def free_memory_batch(per_chunk_bytes: int, reserve: float = 0.3) -> int:
    """Chunks per forward that fit in the free GPU memory, keeping ``reserve`` of it."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    return max(1, min(16, int(free * (1 - reserve) // per_chunk_bytes)))


def timed(run: Any) -> tuple[float, Any]:
    import torch

    torch.cuda.synchronize()
    started = time.perf_counter()
    out = run()
    torch.cuda.synchronize()
    return time.perf_counter() - started, out


def roformer_cases(work: Path, mix: np.ndarray, deadline: float) -> dict[str, Any]:
    import torch

    from bench_roformer import CHUNK, bench_config, prepare
    from dsu import Separator

    prepare(work, "bs")
    target = bench_config("bs")["training"]["target_instrument"]
    results: dict[str, Any] = {}
    reference: dict[str, np.ndarray] = {}
    for framing in ("uvr", "msst"):
        for precision in ("fp32", "fp16", "bf16"):
            if time.perf_counter() > deadline:
                return results
            torch.cuda.reset_peak_memory_stats()
            # ~6 GB of activations per fp32 8 s chunk; half that in fp16/bf16.
            per_chunk = (6 << 30) // (1 if precision == "fp32" else 2)
            batch = free_memory_batch(per_chunk)
            separator = Separator(
                "bench-bs",
                models_dir=work / "bs",
                device="cuda",
                framing=framing,
                precision=precision,
                batch_size=batch,
            )
            separator.load()
            separator.separate(mix[:, :CHUNK], RATE, stems=[target])  # warm-up
            seconds, result = timed(lambda s=separator: s.separate(mix, RATE, stems=[target]))
            out = result.stems[target]
            name = f"bs-{framing}-{precision}"
            results[name] = {
                "seconds": seconds,
                "rtf": seconds / (mix.shape[-1] / RATE),
                "batch": batch,
                "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
            }
            if precision == "fp32":
                reference[framing] = out
            else:
                results[name]["parity_db"] = sdr(reference[framing], out)
            print(name, results[name], flush=True)
            del separator
            torch.cuda.empty_cache()
    net = Separator("bench-bs", models_dir=work / "bs", device="cuda").model.net
    chunk = torch.from_numpy(mix[None, :, :CHUNK]).cuda()
    with torch.inference_mode():
        eager_s, eager = timed(lambda: net(chunk))
        for mode in ("default", "reduce-overhead"):
            if time.perf_counter() > deadline:
                break
            compiled = torch.compile(net, mode=mode)
            compiled(chunk)  # compiles (and captures the graph)
            seconds, out = timed(lambda c=compiled: c(chunk))
            results[f"bs-forward-compile-{mode}"] = {
                "seconds": seconds,
                "eager_seconds": eager_s,
                "parity_db": sdr(eager.float().cpu().numpy(), out.float().cpu().numpy()),
            }
            print(f"bs-forward-compile-{mode}", results[f"bs-forward-compile-{mode}"], flush=True)
    return results


def demucs_cases(work: Path, mix: np.ndarray, deadline: float) -> dict[str, Any]:
    import torch

    from bench_demucs import make_network
    from dsu import Separator

    make_network(work)
    results: dict[str, Any] = {}
    reference = None
    for precision in ("fp32", "fp16"):
        if time.perf_counter() > deadline:
            break
        torch.cuda.reset_peak_memory_stats()
        separator = Separator(
            "bench-htdemucs", models_dir=work, device="cuda", precision=precision, batch_size=8
        )
        separator.load()
        seconds, result = timed(lambda s=separator: s.separate(mix, RATE))
        out = np.stack(list(result.stems.values()))
        results[f"htdemucs-{precision}"] = {
            "seconds": seconds,
            "rtf": seconds / (mix.shape[-1] / RATE),
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
        }
        if reference is None:
            reference = out
        else:
            results[f"htdemucs-{precision}"]["parity_db"] = sdr(reference, out)
        print(f"htdemucs-{precision}", results[f"htdemucs-{precision}"], flush=True)
    return results


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--budget", type=float, default=450.0)
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check")
        return 1
    deadline = time.perf_counter() + opts.budget
    rng = np.random.default_rng(0)
    mix = (0.2 * rng.standard_normal((2, int(opts.seconds * RATE)))).astype(np.float32)
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(), "seconds": opts.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        results |= roformer_cases(Path(tmp), mix, deadline)
        results |= demucs_cases(Path(tmp), mix, deadline)
    print(f"saved {write_result('gpu', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
