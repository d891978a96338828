"""The model and engine flags that ``dsu separate`` and ``dsu eval`` share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsu.engine.options import BACKENDS, DEFAULT_BACKEND, DEFAULT_PRECISION, FRAMINGS, PRECISIONS

if TYPE_CHECKING:
    from dsu.api import Separator


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--models-dir``, ``--device``, ``--precision``, ``--backend``, ``--overlap``,
    ``--shifts``, ``--batch-size``, ``--segment``, ``--framing`` and
    ``--allow-checksum-mismatch``."""
    parser.add_argument(
        "--models-dir", type=Path, help="models directory (default: DSU_MODELS_DIR)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS)
    parser.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        choices=BACKENDS,
        help="runtime of the forward pass: auto (the fastest installed one the model and "
        "device allow), torch, or openvino (HTDemucs on the CPU; the openvino extra)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        help="fraction of each chunk shared with the next (default: the model's)",
    )
    parser.add_argument(
        "--shifts", type=int, default=0, help="random shifts averaged (Demucs' trick)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="chunks per forward pass (default: the model's, e.g. an MSST config's, else 1)",
    )
    parser.add_argument(
        "--segment", type=float, help="chunk length in seconds (default: the model's)"
    )
    parser.add_argument(
        "--framing",
        choices=FRAMINGS,
        help="how the track is cut into chunks (default: the model's; 'uvr' cuts an MSST "
        "checkpoint's track as audio-separator does, with fewer chunks)",
    )
    parser.add_argument(
        "--allow-checksum-mismatch",
        action="store_true",
        help="load a model even when a file's sha256 differs from the registry's "
        "(a file changed on purpose)",
    )


def separator_from_args(
    args: argparse.Namespace,
    model: str | None,
    *,
    downmix: bool = False,
    pipeline: dict[str, Any] | None = None,
) -> Separator:
    """A :class:`dsu.Separator` for ``model`` with the flags of :func:`add_engine_arguments`,
    loaded; ``pipeline``: the ensemble or pipeline keywords of the Separator instead."""
    from dsu.api import Separator

    separator = Separator(
        model,
        **(pipeline or {}),
        models_dir=args.models_dir,
        device=args.device,
        precision=args.precision,
        overlap=args.overlap,
        shifts=args.shifts,
        batch_size=args.batch_size,
        segment=args.segment,
        framing=args.framing,
        backend=args.backend,
        downmix=downmix,
        allow_checksum_mismatch=args.allow_checksum_mismatch,
    )
    separator.load()
    return separator


def check_engine_args(separator: Separator) -> None:
    """The engine checks that need the loaded model and its device: the segment and
    overlap against the model (:func:`dsu.engine.options.check_against`), and the
    precision and the backend against the device, and ``--backend openvino`` against
    a single model that cannot use it. Raises BadRequest before any input is read."""
    from dsu.engine import check_precision
    from dsu.engine.backends import resolve_backend
    from dsu.errors import BadRequest

    separator.check_options(separator.options)
    check_precision(separator.device, separator.options.precision)
    if separator.pipeline is None:
        members = getattr(separator.model, "members", None) or [separator.model]
        if separator.options.backend == "openvino" and not any(
            "openvino" in member.backends for member in members
        ):
            raise BadRequest(
                "--backend openvino runs HTDemucs models only; this one runs on torch "
                "(--backend auto or torch)"
            )
        for member in members:
            resolve_backend(
                separator.options.backend,
                member.backends,
                separator.device.type,
                separator.options.precision,
            )
