"""Render ``bench/results.md`` and ``bench/results.png`` from the benches' JSON.

Every bench saves ``bench/out/<name>.json`` (``common.write_result``). A side-by-side
bench (``roformer``, ``demucs``) has ``configs`` -> ``runs``, each run with its time,
real-time factor, peak RSS, parity, GFLOP per second of audio and fraction of this
machine's peak fp32 matmul rate; those become one table per family and the chart. Any
other JSON there (``long``, and the other benches' ``scnet``, ``pipeline``,
``scaleout``) is listed as its flattened fields.

Usage: ``python bench/report.py [--out bench/out]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COLUMNS = (
    ("run", "{}"),
    ("time s", "{:.1f}"),
    ("RTF", "{:.2f}"),
    ("chunks", "{}"),
    ("peak RSS MB", "{:.0f}"),
    ("parity dB", "{:.1f}"),
    ("vs", "{}"),
    ("speed-up", "{:.2f}x"),
    ("GFLOP / s audio", "{:.0f}"),
    ("of peak", "{:.1%}"),
)
FIELDS = (
    None,
    "seconds",
    "rtf",
    "chunks",
    "peak_rss_mb",
    "parity_db",
    "parity_against",
    "speedup",
    "gflop_per_audio_second",
    "peak_fraction",
)


def cell(template: str, value: Any) -> str:
    return "" if value is None else template.format(value)


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, scalar)`` pairs of a JSON value."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in flatten(v, f"{prefix}{k}.")]
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return [pair for i, v in enumerate(value) for pair in flatten(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), value)]


def side_by_side(name: str, result: dict[str, Any]) -> list[str]:
    lines = [f"## {name}", ""]
    machine = result.get("machine", {})
    if machine:
        lines += [
            f"{result.get('seconds', '?')} s input; {machine.get('cpu')} ({machine.get('cores')} "
            f"threads, {' '.join(machine.get('isa', []))}), Python {machine.get('python')}, "
            f"torch {machine.get('torch')}; peak fp32 matmul "
            f"{result.get('peak_gflops', 0):.0f} GFLOP/s (`torch.mm` 4096²).",
            "",
        ]
    for config, data in result["configs"].items():
        lines += [f"### {data.get('network', config)}", ""]
        lines.append("| " + " | ".join(title for title, _ in COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        for who, run in data["runs"].items():
            cells = [who] + [
                cell(template, run.get(field))
                for (_, template), field in zip(COLUMNS[1:], FIELDS[1:], strict=True)
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def other(name: str, result: Any) -> list[str]:
    lines = [f"## {name}", "", "| field | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in flatten(result)]
    return [*lines, ""]


def chart(results: dict[str, Any], path: Path) -> None:
    """Real-time factor (lower is faster) and fraction of peak of every side-by-side run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, rtf, peak = [], [], []
    for name, result in results.items():
        for config, data in result.get("configs", {}).items():
            for who, run in data["runs"].items():
                labels.append(f"{name}/{config}\n{who}")
                rtf.append(run["rtf"])
                peak.append(100 * run.get("peak_fraction", 0.0))
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(labels) + 1.5))
    colours = ["tab:orange" if "dsu" in label else "tab:grey" for label in labels]
    left.barh(labels, rtf, color=colours)
    left.set_xlabel("real-time factor (s of compute per s of audio; lower is faster)")
    left.invert_yaxis()
    right.barh(labels, peak, color=colours)
    right.set_xlabel("% of measured peak fp32 matmul rate")
    right.invert_yaxis()
    right.set_yticks([])
    figure.suptitle("DSU (orange) against the references (grey), CPU")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--md", type=Path, default=HERE / "results.md")
    parser.add_argument("--png", type=Path, default=HERE / "results.png")
    opts = parser.parse_args()
    results = {p.stem: json.loads(p.read_text()) for p in sorted(opts.out.glob("*.json"))}
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/report.py` from `bench/out/*.json`). RTF: seconds of "
        "separation per second of audio. Parity: SDR of DSU's output against the reference "
        "named (`vs`); speed-up: that reference's time over DSU's. GFLOP per second of audio: "
        "the network's matmuls and convolutions (`torch.utils.flop_counter`) over the chunks "
        "each side runs; of peak: that rate over the machine's measured fp32 `torch.mm` rate.",
        "",
        f"![chart]({opts.png.name})",
        "",
    ]
    for name, result in results.items():
        lines += side_by_side(name, result) if "configs" in result else other(name, result)
    opts.md.write_text("\n".join(lines))
    if any("configs" in r for r in results.values()):
        chart(results, opts.png)
    print(f"wrote {opts.md}" + (f" and {opts.png}" if opts.png.exists() else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
