"""``dsu restore INPUT... -m MODEL -o OUTDIR``: one restored file per input, ``OUTDIR/NAME.EXT``.

For restoration models (Apollo), whose one output is the input made better rather than a
stem of it. The model loads once; every option is checked after it loads and before any
input is read, so a usage error exits 2 and touches nothing. Each input is then restored
in turn, streamed (memory does not grow with its length) at the model's rate and written
back at the input's rate and channel count; one that fails is reported and the others go
on (exit 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from dsu.audio.formats import DEFAULT_MP3_BITRATE, OUTPUT_FORMATS
from dsu.cli.engine_args import add_engine_arguments, check_engine_args, separator_from_args
from dsu.cli.separate import output_names
from dsu.errors import BadRequest, DSUError

if TYPE_CHECKING:
    from dsu.api import Separator
    from dsu.cli.progress import ProgressBar

DEFAULT_OUT = Path("restored")

NAMING = (
    "Each input is written to OUT/NAME.EXT, NAME being its file name without the "
    "extension; inputs with the same NAME get NAME_2, NAME_3, ... in the order given. A "
    "file from an earlier run with the same name is replaced; an input is never "
    "overwritten (choose another -o)."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore audio files with a restoration model (Apollo)",
        description="Restore audio files (e.g. undo lossy compression) with a one-output "
        "restoration model; the model loads once for all inputs.",
        epilog=NAMING,
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio files")
    p.add_argument("-m", "--model", required=True, help="restoration model name or alias")
    p.add_argument(
        "-o", "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (./{DEFAULT_OUT})"
    )
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="wav", help="output format")
    p.add_argument(
        "--bit-depth", type=int, help="wav: 16, 24 or 32 (float); flac: 16 or 24 (default 16)"
    )
    p.add_argument(
        "--bitrate", type=int, help=f"mp3 bitrate in kbps (default {DEFAULT_MP3_BITRATE})"
    )
    add_engine_arguments(p)
    p.add_argument("--downmix", action="store_true", help="mix >2-channel input down to stereo")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def targets(inputs: list[Path], out: Path, format: str) -> list[tuple[Path, Path]]:
    """``(input, output file)`` pairs, each input once, as :data:`NAMING` describes.

    Raises:
        BadRequest: an output file would be one of the inputs.
    """
    from dsu.audio.formats import extension_for

    unique = list({os.path.normcase(os.path.abspath(p)): p for p in inputs}.values())
    ext = extension_for(format)
    pairs = [(s, out / f"{n}.{ext}") for s, n in zip(unique, output_names(unique), strict=True)]
    sources = {os.path.normcase(os.path.realpath(s)) for s in unique}
    for source, target in pairs:
        if os.path.normcase(os.path.realpath(target)) in sources:
            raise BadRequest(
                f"restoring {source} would overwrite the input {target}; choose another "
                "output directory with -o"
            )
    return pairs


def check_request(args: argparse.Namespace, separator: Separator) -> str:
    """The checks that need no input: the model's one output and the encoding.

    Returns:
        The name of the model's output.

    Raises:
        BadRequest: the model has more than one output, or the encoding is invalid.
    """
    from dsu.audio.formats import check_output, ignored_settings

    if len(separator.stems) != 1:
        raise BadRequest(
            f"model {separator.name!r} separates {', '.join(separator.stems)}: `dsu restore` "
            "needs a one-output restoration model such as Apollo; use `dsu separate` for it"
        )
    check_output(args.format, args.bit_depth, args.bitrate)
    for name in ignored_settings(args.format, args.bit_depth, args.bitrate):
        flag = "--" + name.replace("_", "-")
        print(f"warning: --format {args.format} has no {flag}; ignored", file=sys.stderr)
    return separator.stems[0]


def restore_one(
    args: argparse.Namespace,
    separator: Separator,
    stem: str,
    source: Path,
    target: Path,
    progress: ProgressBar | None,
) -> Path:
    """Restore ``source`` into ``target``, atomically (nothing is left on failure)."""
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=target.parent))
    try:
        result = separator.separate(
            source,
            output_dir=staging,
            format=args.format,
            bit_depth=args.bit_depth,
            bitrate=args.bitrate,
            progress=progress,
        )
        assert result.files is not None
        for count in result.clipped.values():
            print(
                f"warning: {target}: {count} samples beyond full scale were clipped; "
                "--bit-depth 32 writes float WAV, which keeps them",
                file=sys.stderr,
            )
        os.replace(result.files[stem], target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def run(args: argparse.Namespace) -> int:
    from dsu.audio.encode import make_dirs, remove_empty_dirs, remove_stale_partials
    from dsu.cli.progress import ProgressBar

    separator = separator_from_args(args, args.model, downmix=args.downmix)
    check_engine_args(separator)
    stem = check_request(args, separator)
    pairs = targets(args.inputs, args.out, args.format)
    print(f"model {separator.name} on {separator.device}", file=sys.stderr)
    created = make_dirs(args.out)
    remove_stale_partials(args.out)
    failures = written = 0
    for source, target in pairs:
        bar = None if args.quiet else ProgressBar(target.stem)
        try:
            path = restore_one(args, separator, stem, source, target, bar)
        except BaseException as exc:
            # Frames of the failed call may hold an open writer; clearing them closes it.
            traceback.clear_frames(exc.__traceback__)
            if not isinstance(exc, DSUError):
                if not written:
                    remove_empty_dirs(created)
                raise
            failures += 1
            print(f"error: {exc.message}", file=sys.stderr)
            continue
        finally:
            if bar:
                bar.close()
        written += 1
        print(path)
    if not written:
        remove_empty_dirs(created)
    return 1 if failures else 0
