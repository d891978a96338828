"""``dsu eval``: separation quality on stems you have, as a table and as JSON.

Two modes:

- ``dsu eval --model M [--model M2 ...] --dataset DIR``: separate every track of DIR
  with each model and score the stems against the true ones;
- ``dsu eval --estimates DIR --references DIR``: score stems already separated
  (``<estimates>/<track>/<stem>.<ext>``, the layout ``--save-estimates`` writes).

A table goes to stderr as tracks finish; ``--json OUT`` writes every score (per track,
per stem, medians and means over tracks). Exit status 1 when a track failed (its error
is in the table and the JSON), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from dsu import __version__
from dsu.cli.engine_args import add_engine_arguments, check_engine_args, separator_from_args
from dsu.errors import BadRequest


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="measure separation quality (SDR, museval) against true stems",
        description=(
            "Separate every track of a dataset with one or more models and score the "
            "stems against the true ones, or score estimates already on disk. A track is "
            "a folder with mixture.<ext> and one file per stem (MUSDB18-HQ), or a "
            ".stem.mp4 (MUSDB18); a dataset is a folder of tracks, searched recursively."
        ),
    )
    p.add_argument(
        "-m",
        "--model",
        action="append",
        dest="models",
        metavar="MODEL",
        help="model name or alias; repeat to compare models",
    )
    p.add_argument(
        "--dataset", type=Path, metavar="DIR", help="dataset folder, track folder or .stem.mp4"
    )
    p.add_argument(
        "--estimates", type=Path, metavar="DIR", help="folder of estimates to score (no model)"
    )
    p.add_argument("--references", type=Path, metavar="DIR", help="the true stems for --estimates")
    p.add_argument("--subset", metavar="DIR", help="only tracks under this folder (e.g. test)")
    p.add_argument("--stems", help="comma-separated stems to score (default all)")
    p.add_argument(
        "--metric",
        choices=("sdr", "museval", "all"),
        default="sdr",
        help="sdr: plain SDR and SI-SDR; museval: BSSEval v4 medians; all: both",
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="write all scores to this file")
    p.add_argument(
        "--save-estimates",
        type=Path,
        metavar="DIR",
        help="also write each model's stems to DIR/<model>/<track>/<stem>.wav",
    )
    add_engine_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="only the final table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsu.datasets import find_tracks

    stems = [s.strip() for s in args.stems.split(",") if s.strip()] if args.stems else None
    if args.estimates is not None:
        if args.models or args.dataset is not None:
            raise BadRequest("give either --estimates/--references or --model/--dataset")
        if args.references is None:
            raise BadRequest("--estimates needs --references DIR (the true stems)")
        root = args.references
    else:
        if args.dataset is None:
            raise BadRequest("give --dataset DIR (or --estimates DIR --references DIR)")
        if args.references is not None:
            raise BadRequest("--references goes with --estimates; use --dataset with --model")
        root = args.dataset
    tracks = find_tracks(root, args.subset)
    # after the checks above: this pulls in torch
    from dsu.eval import (
        ModelReport,
        TrackResult,
        evaluate_estimates,
        evaluate_models,
        format_table,
    )

    def on_track(phase: str, report: ModelReport, result: TrackResult, i: int, n: int) -> None:
        if phase != "done" or args.quiet:
            return
        print(f"[{i + 1}/{n}] {report.name}  {result.key}: {_summary(result)}", file=sys.stderr)

    if args.estimates is not None:
        reports = [
            evaluate_estimates(
                args.estimates, tracks, metric=args.metric, stems=stems, on_track=on_track
            )
        ]
    else:
        reports = evaluate_models(
            _separators(args),
            tracks,
            metric=args.metric,
            stems=stems,
            save_estimates=args.save_estimates,
            on_track=on_track,
        )

    print("\n" + format_table(reports, args.metric), file=sys.stderr)
    for report in reports:
        if report.skipped_stems:
            print(
                f"{report.name}: no reference for {', '.join(report.skipped_stems)} (not scored)",
                file=sys.stderr,
            )
    if args.json is not None:
        document = {
            "dsu_version": __version__,
            "metric": args.metric,
            "dataset": str(Path(root).resolve()),
            "estimates": str(args.estimates.resolve()) if args.estimates else None,
            "models": {report.name: report.to_json() for report in reports},
        }
        _write_json(args.json, document)
    failed = [t for r in reports for t in r.tracks if t.error]
    return 1 if failed else 0


def _separators(args: argparse.Namespace) -> list[Any]:
    separators = []
    for name in dict.fromkeys(args.models or [None]):
        separator = separator_from_args(args, name)
        check_engine_args(separator)
        separators.append(separator)
    return separators


def _summary(result: Any) -> str:
    if result.error:
        return f"error: {result.error}"
    parts = []
    for stem, scores in result.scores.items():
        value = scores.get("sdr")
        if value is None:
            value = (scores.get("museval") or {}).get("SDR")
        parts.append(f"{stem} {'-' if value is None else f'{value:.2f}'}")
    timing = f" ({result.separation_s:.1f} s)" if result.separation_s is not None else ""
    return ("  ".join(parts) or "nothing scored") + " dB" * bool(parts) + timing


def _write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically: a temp file beside ``path``, renamed when complete; a directory
    made for it is removed again when the write fails."""
    from dsu.audio.encode import make_dirs, partial_file, remove_empty_dirs, write_error

    created = make_dirs(path.parent)
    try:
        with partial_file(path) as temp:
            temp.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
            os.replace(temp, path)
    except OSError as e:
        raise write_error(path, e) from e
    finally:
        if not path.exists():
            remove_empty_dirs(created)
