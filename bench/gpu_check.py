"""Every GPU case in one prepared script, under 8 minutes on one device (not run in CI).

Run it on a machine with a CUDA GPU: ``python bench/gpu_check.py [--seconds 30]``. It
needs DSU, torch and the references of the test extra (random weights, noise input),
prints one line per case and a summary of the issue's GPU ratios, and saves
``bench/out/gpu.json`` for ``bench/report.py``. Cases, each on the same input and
weights, the ones the acceptance ratios need first:

- full-size BS-RoFormer (viperx ep_317 config) through :class:`dsu.Separator` in the
  ``uvr`` framing, fp32, fp16 and bf16 autocast (SDPA picks its flash or
  memory-efficient kernel under autocast), with the batch size chosen from free memory;
- audio-separator 0.47.1's fastest mode on the same network: native fp16 with fp32
  rotary angles and regional ``torch.compile`` of every transformer block, as its
  ``MDXCSeparator`` sets them up, run by its own ``demix`` (same chunk and overlap);
- full-size HTDemucs (random weights) through DSU, fp32 and fp16, and through
  ``demucs.apply.apply_model`` (fp32, its only mode) on the GPU;
- peak GPU memory of DSU's fp16 RoFormer run on the input and on the input four times
  over (it must not grow with length);
- then, time allowing: the ``msst`` framing, and the network's forward on one chunk
  eager against ``torch.compile`` (inductor) and ``mode="reduce-overhead"`` (CUDA
  graphs for the fixed chunk shape);
- parity of every reduced-precision or compiled run against its fp32 eager run (the
  budget is 40 dB), and each run's peak GPU memory.

Each case is skipped once the elapsed time passes ``--budget`` seconds (default 450).
The real-model side of the precision budget on the same GPU takes seconds more:
``python bench/bench_precision.py --device cuda``.
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


def dsu_roformer(
    work: Path, mix: np.ndarray, framing: str, precision: str, batch: int | None = None
) -> tuple[dict[str, Any], np.ndarray]:
    """One timed DSU separation of the bench BS-RoFormer's target stem, after a warm-up."""
    import torch

    from bench_roformer import CHUNK, bench_config
    from dsu import Separator

    target = bench_config("bs")["training"]["target_instrument"]
    torch.cuda.reset_peak_memory_stats()
    if batch is None:
        # ~6 GB of activations per fp32 8 s chunk; half that in fp16/bf16.
        batch = free_memory_batch((6 << 30) // (1 if precision == "fp32" else 2))
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
    run = {
        "seconds": seconds,
        "rtf": seconds / (mix.shape[-1] / RATE),
        "batch": batch,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
    }
    del separator
    torch.cuda.empty_cache()
    return run, result.stems[target]


def roformer_cases(
    work: Path, mix: np.ndarray, deadline: float, framings: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """DSU's BS-RoFormer in ``framings`` at every precision; also returns the fp32 stems."""
    results: dict[str, Any] = {}
    reference: dict[str, np.ndarray] = {}
    for framing in framings:
        for precision in ("fp32", "fp16", "bf16"):
            if time.perf_counter() > deadline:
                return results, reference
            name = f"bs-{framing}-{precision}"
            results[name], out = dsu_roformer(work, mix, framing, precision)
            if precision == "fp32":
                reference[framing] = out
            else:
                results[name]["parity_db"] = sdr(reference[framing], out)
            print(name, results[name], flush=True)
    return results, reference


def audio_separator_case(
    work: Path, mix: np.ndarray, deadline: float, fp32: np.ndarray | None
) -> dict[str, Any]:
    """audio-separator's fastest GPU mode (native fp16 + regional compile) on the same
    weights, chunk and overlap; parity against DSU's fp32 ``uvr`` stems."""
    import torch

    from bench_roformer import NUM_OVERLAP, bench_config, reference_network
    from uvr_reference import uvr_demix

    if time.perf_counter() > deadline:
        return {}
    config = bench_config("bs")
    net = reference_network("bs", config, "audio-separator")
    net.load_state_dict(torch.load(work / "bs" / "bench-bs.ckpt", weights_only=True))
    net = net.cuda()
    # As its _configure_model_precision: the rotary angles stay fp32 under .half().
    angles = [
        (module, module.freqs.detach().float().clone())
        for module in net.modules()
        if type(module).__name__ == "RotaryEmbedding"
    ]
    net.half()
    for module, freqs in angles:
        module.freqs.data = freqs.to(module.freqs.device)
        module.cached_freqs = None
    # As its _configure_model_compilation: each transformer block compiled on its own.
    for layer in net.layers:
        for block in layer:
            block.compile()
    torch.cuda.reset_peak_memory_stats()
    warmup_s, _ = timed(lambda n=net: uvr_demix(config, n, mix, NUM_OVERLAP))  # compiles
    seconds, out = timed(lambda n=net: uvr_demix(config, n, mix, NUM_OVERLAP))
    run = {
        "seconds": seconds,
        "first_run_seconds": warmup_s,
        "rtf": seconds / (mix.shape[-1] / RATE),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
    }
    if fp32 is not None:
        run["parity_db_vs_dsu_fp32"] = sdr(out, fp32)
    print("audio-separator-fp16-compile", run, flush=True)
    del net
    torch.cuda.empty_cache()
    return {"audio-separator-fp16-compile": run}


def memory_case(work: Path, mix: np.ndarray, deadline: float, batch: int) -> dict[str, Any]:
    """Peak GPU memory of DSU's fp16 ``uvr`` run on ``mix`` and on ``mix`` four times over."""
    if time.perf_counter() > deadline:
        return {}
    short, _ = dsu_roformer(work, mix, "uvr", "fp16", batch)
    long, _ = dsu_roformer(work, np.tile(mix, 4), "uvr", "fp16", batch)
    run = {
        "seconds": [short["seconds"], long["seconds"]],
        "peak_gpu_mb": [short["peak_gpu_mb"], long["peak_gpu_mb"]],
        "batch": batch,
    }
    print("bs-uvr-fp16-length-x1-x4", run, flush=True)
    return {"bs-uvr-fp16-length-x1-x4": run}


def compile_cases(work: Path, deadline: float, chunk: np.ndarray) -> dict[str, Any]:
    """DSU's BS-RoFormer forward on one chunk: eager against ``torch.compile``."""
    import torch

    from dsu import Separator

    results: dict[str, Any] = {}
    net = Separator("bench-bs", models_dir=work / "bs", device="cuda").model.net
    batch = torch.from_numpy(chunk[None]).cuda()
    with torch.inference_mode():
        eager_s, eager = timed(lambda: net(batch))
        for mode in ("default", "reduce-overhead"):
            if time.perf_counter() > deadline:
                break
            compiled = torch.compile(net, mode=mode)
            compiled(batch)  # compiles (and captures the graph)
            seconds, out = timed(lambda c=compiled: c(batch))
            results[f"bs-forward-compile-{mode}"] = {
                "seconds": seconds,
                "eager_seconds": eager_s,
                "parity_db": sdr(eager.float().cpu().numpy(), out.float().cpu().numpy()),
            }
            print(f"bs-forward-compile-{mode}", results[f"bs-forward-compile-{mode}"], flush=True)
    return results


def demucs_cases(work: Path, mix: np.ndarray, deadline: float) -> dict[str, Any]:
    """HTDemucs through DSU (fp32, fp16) and through ``apply_model`` on the GPU (fp32)."""
    import torch
    from demucs.states import load_model

    from bench_demucs import demucs_separate, make_network
    from dsu import Separator

    weights = make_network(work)
    results: dict[str, Any] = {}
    reference = None
    for precision in ("fp32", "fp16"):
        if time.perf_counter() > deadline:
            return results
        torch.cuda.reset_peak_memory_stats()
        separator = Separator(
            "bench-htdemucs", models_dir=work, device="cuda", precision=precision, batch_size=8
        )
        separator.load()
        separator.separate(mix[:, : 8 * RATE], RATE)  # warm-up
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
    if time.perf_counter() > deadline:
        return results
    net = load_model(weights).eval().cuda()
    wav = torch.from_numpy(mix).cuda()

    def demucs_run() -> np.ndarray:
        return demucs_separate(net, wav).cpu().numpy()

    torch.cuda.reset_peak_memory_stats()
    demucs_run()  # warm-up
    seconds, out = timed(demucs_run)
    run = {
        "seconds": seconds,
        "rtf": seconds / (mix.shape[-1] / RATE),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20,
        "parity_db_vs_dsu_fp32": sdr(out, reference),
    }
    print("htdemucs-apply_model", run, flush=True)
    results["htdemucs-apply_model"] = run
    return results


def summary(results: dict[str, Any]) -> dict[str, float]:
    """The issue's GPU ratios from this run: reference seconds over DSU's fastest run."""
    ratios: dict[str, float] = {}
    for family, reference, prefix in (
        ("bs_roformer", "audio-separator-fp16-compile", "bs-uvr-"),
        ("htdemucs", "htdemucs-apply_model", "htdemucs-"),
    ):
        names = [f"{prefix}{precision}" for precision in ("fp32", "fp16", "bf16")]
        ours = {name: results[name] for name in names if name in results}
        if reference in results and ours:
            fastest = min(ours, key=lambda k: ours[k]["seconds"])
            ratios[family] = results[reference]["seconds"] / ours[fastest]["seconds"]
            parity = ours[fastest].get("parity_db")
            quality = "fp32" if parity is None else f"{parity:.1f} dB against fp32"
            print(
                f"{family}: {reference} {results[reference]['seconds']:.2f} s, DSU {fastest} "
                f"{ours[fastest]['seconds']:.2f} s ({quality}): {ratios[family]:.2f}x"
            )
    return ratios


def main() -> int:
    import torch

    from bench_roformer import CHUNK, prepare

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
        work = Path(tmp)
        prepare(work, "bs")
        runs, fp32 = roformer_cases(work, mix, deadline, ("uvr",))
        results |= runs
        results |= audio_separator_case(work, mix, deadline, fp32.get("uvr"))
        results |= demucs_cases(work, mix, deadline)
        if "bs-uvr-fp16" in results:
            results |= memory_case(work, mix, deadline, results["bs-uvr-fp16"]["batch"])
        results |= roformer_cases(work, mix, deadline, ("msst",))[0]
        results |= compile_cases(work, deadline, mix[:, :CHUNK])
    results["ratios"] = summary(results)
    print(f"saved {write_result('gpu', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
