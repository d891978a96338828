"""``dsu separate INPUT... -m MODEL -o OUTDIR``: stems to ``OUTDIR/<track>/<stem>.<ext>``.

Everything a user can get wrong in the options (format, bit depth, bitrate, stems, engine
numbers, precision) is checked once, after the model loads and before any input is read,
so a usage error exits 2 with one message and touches nothing. Then each input is
separated in turn; one that fails is reported and the others go on (exit 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsu.audio.formats import DEFAULT_MP3_BITRATE, OUTPUT_FORMATS
from dsu.cli.engine_args import add_engine_arguments, check_engine_args, separator_from_args
from dsu.errors import BadRequest, DSUError
from dsu.pipeline.ensemble import ALGORITHMS, DEFAULT_ALGORITHM

if TYPE_CHECKING:
    from dsu.api import Separator
    from dsu.cli.progress import ProgressBar

STEM_FILE = "stem.mp4"
FORMATS = (*OUTPUT_FORMATS, STEM_FILE)

NAMING = (
    "Each input's stems go to OUT/NAME/STEM.EXT (with --format stem.mp4, one file "
    "OUT/NAME.stem.mp4), NAME being the input's file name without its extension. When "
    "several inputs have the same NAME (a/song.wav b/song.wav a/song.mp3), the first keeps "
    "it and the next ones, in the order given, get NAME_2, NAME_3, ... (skipping names "
    "another input has); the choice is printed. A file from an earlier run with the same "
    "name is replaced."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "separate",
        help="separate audio files into stems",
        description="Separate audio files into stems; the model loads once for all inputs.",
        epilog=NAMING,
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio files")
    p.add_argument(
        "-m",
        "--model",
        action="append",
        help="model name or alias (default: the registry's default); several -m make an ensemble",
    )
    pipelines = p.add_argument_group("ensembles and chains")
    pipelines.add_argument(
        "--pipeline",
        metavar="SPEC|PRESET",
        help="run a pipeline: a .yaml/.json spec file or a preset (`dsu presets` lists them)",
    )
    pipelines.add_argument(
        "--ensemble",
        choices=ALGORITHMS,
        help=f"how the -m models are combined per stem (default {DEFAULT_ALGORITHM})",
    )
    pipelines.add_argument(
        "--weights", help="comma-separated weight per -m model, e.g. 2,1 (avg_wave, avg_fft)"
    )
    pipelines.add_argument(
        "--then",
        action="append",
        metavar="MODEL[:STEM]",
        help="then run MODEL on the previous step's STEM (default its first); repeatable; "
        "the last step's stems are written",
    )
    p.add_argument(
        "-o", "--out", type=Path, default=Path("separated"), help="output directory (./separated)"
    )
    stems = p.add_mutually_exclusive_group()
    stems.add_argument("--stems", help="comma-separated stems to write, e.g. vocals,drums")
    stems.add_argument(
        "--two-stems", metavar="STEM", help="write STEM and no_STEM (the mixture minus STEM)"
    )
    p.add_argument("--format", choices=FORMATS, default="wav", help="output format")
    p.add_argument(
        "--bit-depth", type=int, help="wav: 16, 24 or 32 (float); flac: 16 or 24 (default 16)"
    )
    p.add_argument(
        "--bitrate",
        type=int,
        help=f"mp3 bitrate in kbps (default {DEFAULT_MP3_BITRATE}, or the highest the "
        "sample rate allows below 32 kHz)",
    )
    add_engine_arguments(p)
    p.add_argument("--downmix", action="store_true", help="mix >2-channel input down to stereo")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def track_name(path: Path) -> str:
    """``song.wav`` -> ``song``; ``Artist - Title.stem.mp4`` -> ``Artist - Title``."""
    name = path.name
    return name[: -len(".stem.mp4")] if name.lower().endswith(".stem.mp4") else path.stem


def output_names(inputs: list[Path]) -> list[str]:
    """A distinct output name per input, as :data:`NAMING` describes.

    Names are compared case-insensitively, since ``Song`` and ``song`` are one folder on
    macOS and Windows disks. The result depends only on ``inputs``, so a rerun writes
    each input where the previous run did.
    """
    natural = [track_name(path) for path in inputs]
    reserved = {name.casefold() for name in natural}
    used: set[str] = set()
    names = []
    for name in natural:
        chosen, number = name, 1
        # A numbered name must not be one that another input has as its own.
        while chosen.casefold() in used or (number > 1 and chosen.casefold() in reserved):
            number += 1
            chosen = f"{name}_{number}"
        used.add(chosen.casefold())
        names.append(chosen)
    return names


@dataclass(frozen=True)
class _Job:
    """One input and where its outputs go."""

    source: Path
    name: str
    target: Path  # the track directory, or the stem file


def _plan(inputs: list[Path], out: Path, format: str) -> list[_Job]:
    """The jobs for ``inputs``, each input once; says on stderr what was merged or renamed."""
    unique: dict[str, Path] = {}
    for path in inputs:
        key = os.path.normcase(os.path.abspath(path))
        if key in unique:
            print(f"note: {path} is given more than once; separating it once", file=sys.stderr)
        else:
            unique[key] = path
    sources = list(unique.values())
    names = output_names(sources)
    jobs = [
        _Job(s, n, out / f"{n}.{STEM_FILE}" if format == STEM_FILE else out / n)
        for s, n in zip(sources, names, strict=True)
    ]
    shared: dict[str, list[_Job]] = {}
    for job in jobs:
        shared.setdefault(track_name(job.source).casefold(), []).append(job)
    for group in shared.values():
        if len(group) > 1:
            print(
                f"note: {len(group)} inputs are named {track_name(group[0].source)!r}; "
                "each gets its own output:",
                file=sys.stderr,
            )
            for job in group:
                print(f"  {job.source} -> {job.target}", file=sys.stderr)
    return jobs


def _stem_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    stems = [s.strip() for s in text.split(",") if s.strip()]
    if not stems:
        raise BadRequest("--stems needs at least one stem name, e.g. --stems vocals,drums")
    return stems


def check_request(args: argparse.Namespace, separator: Separator) -> list[str] | None:
    """Every check of the options that needs no input: one usage error before any work.

    Returns:
        The stems asked for with ``--stems`` (None: all).

    Raises:
        BadRequest: the first problem found.
    """
    from dsu.audio.formats import check_output, ignored_settings
    from dsu.audio.stems_mp4 import NI_STEMS

    stems = _stem_list(args.stems)
    if args.format == STEM_FILE:
        if stems is not None or args.two_stems is not None:
            raise BadRequest(
                "--format stem.mp4 always holds all four stems; drop --stems/--two-stems"
            )
        if sorted(separator.stems) != sorted(NI_STEMS):
            raise BadRequest(
                f"--format stem.mp4 needs a four-stem model ({', '.join(NI_STEMS)}); "
                f"{separator.name!r} has {', '.join(separator.stems)}: choose another "
                "format or model"
            )
        given = (("bit_depth", args.bit_depth), ("bitrate", args.bitrate))
        ignored = [name for name, value in given if value is not None]
    else:
        check_output(args.format, args.bit_depth, args.bitrate)
        separator.check_stems(stems, args.two_stems)  # the API's own check, once up front
        ignored = ignored_settings(args.format, args.bit_depth, args.bitrate)
    for name in ignored:
        flag = "--" + name.replace("_", "-")
        print(f"warning: --format {args.format} has no {flag}; ignored", file=sys.stderr)
    return stems


def _separate_stem_mp4(
    separator: Separator, source: Path, target: Path, progress: ProgressBar | None
) -> Path:
    """NI stem file: the mixture and four stems in one MP4 (four-stem models only)."""
    from dsu import audio
    from dsu.audio.stems_mp4 import write_stem_mp4

    result = separator.separate(source, progress=progress)
    mixture, rate = audio.read(source)
    mixture = audio.conform_channels(mixture, 2, downmix=separator.downmix, path=source)
    return write_stem_mp4(target, mixture, result.stems, rate)


def _separate_one(
    args: argparse.Namespace,
    separator: Separator,
    job: _Job,
    stems: list[str] | None,
    progress: ProgressBar | None,
) -> list[Path]:
    if args.format == STEM_FILE:
        return [_separate_stem_mp4(separator, job.source, job.target, progress)]
    result = separator.separate(
        job.source,
        stems=stems,
        two_stems=args.two_stems,
        output_dir=job.target,
        format=args.format,
        bit_depth=args.bit_depth,
        bitrate=args.bitrate,
        progress=progress,
    )
    for stem, count in result.clipped.items():
        print(
            f"warning: {result.files[stem]}: {count} samples beyond full scale were "
            "clipped; --bit-depth 32 writes float WAV, which keeps them",
            file=sys.stderr,
        )
    return list(result.files.values())


def _prepare_directory(directory: Path) -> list[Path]:
    """Create ``directory`` as needed and clear what an earlier, killed run left there."""
    from dsu.audio.encode import make_dirs, remove_stale_partials

    created = make_dirs(directory)
    removed = remove_stale_partials(directory)
    if removed:
        print(
            f"note: removed {len(removed)} unfinished file(s) an earlier run left in {directory}",
            file=sys.stderr,
        )
    return created


def pipeline_args(args: argparse.Namespace) -> tuple[str | None, dict[str, Any] | None]:
    """The model, or the Separator's pipeline keywords, that the flags ask for.

    Raises:
        BadRequest: flags that do not go together, or bad weights.
    """
    from dsu.pipeline.preset import pipeline_from
    from dsu.pipeline.spec import short_spec

    models = args.model or []
    if args.pipeline is not None:
        if models or args.ensemble or args.weights or args.then:
            raise BadRequest("--pipeline names its own models; drop -m/--ensemble/--weights/--then")
        return None, {"pipeline": pipeline_from(args.pipeline, files=True)}
    if len(models) < 2 and not args.then:
        if args.ensemble or args.weights:
            raise BadRequest("--ensemble and --weights combine several models: give two -m or more")
        return (models[0] if models else None), None
    if not models:
        raise BadRequest("--then needs a first model: give -m MODEL")
    weights = None
    if args.weights is not None:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise BadRequest(
                f"--weights must be numbers separated by commas, got {args.weights!r}"
            ) from None
    then = [
        (model, stem or None)
        for model, _, stem in (item.partition(":") for item in args.then or [])
    ]
    spec = short_spec(models, args.ensemble or DEFAULT_ALGORITHM, weights, then)
    return None, {"pipeline": spec}


def run(args: argparse.Namespace) -> int:
    from dsu.audio.encode import remove_empty_dirs
    from dsu.cli.progress import ProgressBar

    model, pipeline = pipeline_args(args)
    separator = separator_from_args(args, model, downmix=args.downmix, pipeline=pipeline)
    check_engine_args(separator)
    stems = check_request(args, separator)
    print(f"model {separator.name} on {separator.device}", file=sys.stderr)
    failures = 0
    for job in _plan(args.inputs, args.out, args.format):
        bar = None if args.quiet else ProgressBar(job.name)
        directory = job.target.parent if args.format == STEM_FILE else job.target
        created: list[Path] = []
        written: list[Path] | None = None
        try:
            created = _prepare_directory(directory)
            written = _separate_one(args, separator, job, stems, bar)
        except BaseException as exc:
            # A writer that the failed call left open (one interrupted while being set up)
            # lives on in the traceback's frames; clearing them finalizes it now, so its
            # temp file is gone before the directories are removed below.
            traceback.clear_frames(exc.__traceback__)
            if not isinstance(exc, DSUError):
                raise
            error = exc.message
        finally:
            if bar:
                bar.close()
            # Only directories this run made, and only when nothing was written there.
            remove_empty_dirs(created)
        if written is None:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        for path in written:
            print(path)
    return 1 if failures else 0
