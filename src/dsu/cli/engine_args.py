"""The model and engine flags that ``dsu separate`` and ``dsu eval`` share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsu.api import Separator


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--models-dir``, ``--device``, ``--precision``, ``--overlap``, ``--shifts``,
    ``--batch-size`` and ``--segment``."""
    parser.add_argument(
        "--models-dir", type=Path, help="models directory (default: DSU_MODELS_DIR)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument(
        "--overlap", type=float, help="chunk overlap in [0, 1) (default: the model's)"
    )
    parser.add_argument(
        "--shifts", type=int, default=0, help="random shifts averaged (Demucs' trick)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="chunks per forward pass")
    parser.add_argument(
        "--segment", type=float, help="chunk length in seconds (default: the model's)"
    )


def separator_from_args(
    args: argparse.Namespace, model: str | None, *, downmix: bool = False
) -> Separator:
    """A :class:`dsu.Separator` for ``model`` with the flags of :func:`add_engine_arguments`,
    loaded."""
    from dsu.api import Separator

    separator = Separator(
        model,
        models_dir=args.models_dir,
        device=args.device,
        precision=args.precision,
        overlap=args.overlap,
        shifts=args.shifts,
        batch_size=args.batch_size,
        segment=args.segment,
        downmix=downmix,
    )
    separator.load()
    return separator
