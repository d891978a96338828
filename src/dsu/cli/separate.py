"""``dsu separate INPUT... -m MODEL -o OUTDIR``: stems to ``OUTDIR/<track>/<stem>.<ext>``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dsu.cli.engine_args import add_engine_arguments, separator_from_args
from dsu.errors import DSUError

if TYPE_CHECKING:
    from dsu.api import Separator
    from dsu.cli.progress import ProgressBar

FORMATS = ("wav", "flac", "mp3", "ogg", "stem.mp4")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "separate",
        help="separate audio files into stems",
        description="Separate audio files into stems; the model loads once for all inputs.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio files")
    p.add_argument("-m", "--model", help="model name or alias (default: the registry's default)")
    p.add_argument("-o", "--out", type=Path, default=Path("separated"), help="output directory")
    stems = p.add_mutually_exclusive_group()
    stems.add_argument("--stems", help="comma-separated stems to write, e.g. vocals,drums")
    stems.add_argument(
        "--two-stems", metavar="STEM", help="write STEM and no_STEM (the mixture minus STEM)"
    )
    p.add_argument("--format", choices=FORMATS, default="wav", help="output format")
    p.add_argument("--bit-depth", type=int, choices=(16, 24, 32), help="wav/flac bit depth")
    p.add_argument("--bitrate", type=int, help="mp3 bitrate in kbps (default 320)")
    add_engine_arguments(p)
    p.add_argument("--downmix", action="store_true", help="mix >2-channel input down to stereo")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def track_name(path: Path) -> str:
    """``song.wav`` -> ``song``; ``Artist - Title.stem.mp4`` -> ``Artist - Title``."""
    name = path.name
    return name[: -len(".stem.mp4")] if name.lower().endswith(".stem.mp4") else path.stem


def _separate_stem_mp4(
    separator: Separator, source: Path, target: Path, progress: ProgressBar | None
) -> Path:
    """NI stem file: the mixture and four stems in one MP4 (four-stem models only)."""
    from dsu import audio
    from dsu.audio.stems_mp4 import NI_STEMS, write_stem_mp4

    if sorted(separator.stems) != sorted(NI_STEMS):
        raise DSUError(
            f"--format stem.mp4 needs a four-stem model ({', '.join(NI_STEMS)}); "
            f"{separator.name!r} has {', '.join(separator.stems)}"
        )
    result = separator.separate(source, progress=progress)
    mixture, rate = audio.read(source)
    mixture = audio.conform_channels(mixture, 2, downmix=separator.downmix, path=source)
    return write_stem_mp4(target.with_suffix(".stem.mp4"), mixture, result.stems, rate)


def run(args: argparse.Namespace) -> int:
    from dsu.cli.progress import ProgressBar

    separator = separator_from_args(args, args.model, downmix=args.downmix)
    print(f"model {separator.name} on {separator.device}", file=sys.stderr)
    stems = [s.strip() for s in args.stems.split(",") if s.strip()] if args.stems else None
    failures = 0
    for source in args.inputs:
        track = track_name(source)
        bar = None if args.quiet else ProgressBar(track)
        try:
            if args.format == "stem.mp4":
                written = [_separate_stem_mp4(separator, source, args.out / track, bar)]
            else:
                result = separator.separate(
                    source,
                    stems=stems,
                    two_stems=args.two_stems,
                    output_dir=args.out / track,
                    format=args.format,
                    bit_depth=args.bit_depth,
                    bitrate=args.bitrate,
                    progress=bar,
                )
                written = list(result.files.values())
                for stem, count in result.clipped.items():
                    print(
                        f"warning: {result.files[stem]}: {count} samples beyond full scale were "
                        "clipped; --bit-depth 32 writes float WAV, which keeps them",
                        file=sys.stderr,
                    )
        except DSUError as exc:
            failures += 1
            if bar:
                bar.close()
            print(f"error: {exc.message}", file=sys.stderr)
            continue
        if bar:
            bar.close()
        for path in written:
            print(path)
    return 1 if failures else 0
