"""Engine settings: one typed place for how a separation is run, and its limits.

Every front end (the CLI, the worker, the service, the Python API) builds an
:class:`EngineOptions`, so its checks are the only validation of the numbers a user
gives. Each number is finite and bounded: a bound is where more costs far more time or
memory without a better separation, and it keeps every request small enough to finish or
be cancelled (the engine checks ``cancel`` between forward passes, so one pass must stay
short).

- ``shifts``: an integer in ``[0, MAX_SHIFTS]``; each shift is one more full pass.
- ``max_shift``: seconds in ``[0, MAX_SHIFT_SECONDS]``.
- ``batch_size``: an integer in ``[1, MAX_BATCH_SIZE]``.
- ``segment``: seconds in ``(0, MAX_SEGMENT_SECONDS]``; with a model, at least
  ``MIN_SEGMENT_SAMPLES`` at its rate and at most its ``max_segment`` (HTDemucs cannot
  take a chunk longer than it was trained on).
- ``overlap``: a fraction in ``[0, MAX_OVERLAP]``; with a model, each chunk must still
  advance at least ``MIN_STEP_SAMPLES``.
- ``framing``: one of :data:`FRAMINGS`; with a model, one of the framings it can run
  (``SeparationModel.framings``).
- ``backend``: one of :data:`BACKENDS` (a model that does not offer it runs on torch).

The model-dependent rules need the loaded model: :func:`check_against`, which
:meth:`dsu.api.Separator.separate` runs first.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from dsu.errors import BadRequest

PRECISIONS = ("fp32", "fp16", "bf16")
FRAMINGS = ("demucs", "msst", "mdx", "uvr", "msst_demucs")
"""How the engine cuts a track into chunks and stitches them (:mod:`dsu.engine.framing`
describes each; ``SeparationModel.framing`` is a model's own)."""
DEFAULT_PRECISION = "fp32"
BACKENDS = ("auto", "torch", "openvino")
"""Which runtime runs the forward pass (:mod:`dsu.engine.backends` describes each)."""
DEFAULT_BACKEND = "auto"

MAX_SHIFTS = 20
MAX_SHIFT_SECONDS = 10.0
MAX_BATCH_SIZE = 64
MAX_SEGMENT_SECONDS = 600.0
MAX_OVERLAP = 0.99
MIN_SEGMENT_SAMPLES = 1024
MIN_STEP_SAMPLES = 256


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BadRequest(f"{name} must be an integer from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {value}")
    return int(value)


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadRequest(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise BadRequest(f"{name} must be a finite number, got {value}")
    return number


@dataclass(frozen=True)
class EngineOptions:
    """How the engine cuts, batches and averages (limits: see the module docstring).

    Attributes:
        overlap: fraction of each chunk shared with the next; None uses the model's.
        shifts: number of randomly time-shifted passes averaged (Demucs' shift trick);
            0 runs one unshifted pass.
        max_shift: largest shift in seconds.
        batch_size: chunks per forward pass; None uses the model's on a GPU (an MSST
            config's ``inference.batch_size``), else 1.
        segment: chunk length in seconds; None uses the model's.
        precision: ``fp32``, or ``fp16``/``bf16`` autocast (GPU).
        seed: seeds the shifts, so a run is repeatable.
        framing: one of :data:`FRAMINGS` the model can run, e.g. ``uvr`` to cut an MSST
            checkpoint's track as audio-separator does; None uses the model's own.
        backend: one of :data:`BACKENDS`: ``auto`` runs the fastest one the model, the
            device and the installed packages allow.

    Raises:
        BadRequest: a value of the wrong type, not finite, or out of its range.
    """

    overlap: float | None = None
    shifts: int = 0
    max_shift: float = 0.5
    batch_size: int | None = None
    segment: float | None = None
    precision: str = DEFAULT_PRECISION
    seed: int = 0
    framing: str | None = None
    backend: str = DEFAULT_BACKEND

    def __post_init__(self) -> None:
        # Normalised to plain int/float so that numpy scalars behave like Python numbers.
        values: dict[str, Any] = {
            "shifts": _integer("shifts", self.shifts, 0, MAX_SHIFTS),
            "max_shift": _real("max shift", self.max_shift),
        }
        if not 0.0 <= values["max_shift"] <= MAX_SHIFT_SECONDS:
            raise BadRequest(
                f"max shift must be from 0 to {MAX_SHIFT_SECONDS:g} seconds, got {self.max_shift}"
            )
        if self.batch_size is not None:
            values["batch_size"] = _integer("batch size", self.batch_size, 1, MAX_BATCH_SIZE)
        if self.overlap is not None:
            values["overlap"] = _real("overlap", self.overlap)
            if not 0.0 <= values["overlap"] <= MAX_OVERLAP:
                raise BadRequest(f"overlap must be from 0 to {MAX_OVERLAP}, got {self.overlap}")
        if self.segment is not None:
            values["segment"] = _real("segment", self.segment)
            if not 0.0 < values["segment"] <= MAX_SEGMENT_SECONDS:
                raise BadRequest(
                    f"segment must be more than 0 and at most {MAX_SEGMENT_SECONDS:g} seconds, "
                    f"got {self.segment}"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise BadRequest(f"seed must be an integer, got {self.seed!r}")
        values["seed"] = int(self.seed)
        if self.precision not in PRECISIONS:
            raise BadRequest(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.framing is not None and self.framing not in FRAMINGS:
            raise BadRequest(f"framing must be one of {', '.join(FRAMINGS)}, got {self.framing!r}")
        if self.backend not in BACKENDS:
            raise BadRequest(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name, value in values.items():
            object.__setattr__(self, name, value)


def check_against(options: EngineOptions, model: Any) -> None:
    """Check the options that depend on the model: the segment, and overlap with it.

    Args:
        options: validated engine options.
        model: a loaded :class:`dsu.archs.base.SeparationModel` or ``Bag`` (every member
            is checked); a member may set ``max_segment``, the longest chunk in samples it
            can take (None: no limit).

    Raises:
        BadRequest: the segment is too short or too long for the model, the overlap
            leaves chunks that hardly advance, or the model cannot run the framing.
    """
    for member in getattr(model, "members", None) or [model]:
        if options.framing is not None and options.framing not in member.framings:
            raise BadRequest(
                f"framing {options.framing!r} is not one this model runs; use "
                f"{' or '.join(member.framings)}, or leave it out"
            )
    if options.segment is None and options.overlap is None:
        return  # the model's own framing
    for member in getattr(model, "members", None) or [model]:
        rate = int(member.samplerate)
        segment = member.segment if options.segment is None else int(options.segment * rate)
        overlap = member.overlap if options.overlap is None else options.overlap
        if options.segment is not None and segment < MIN_SEGMENT_SAMPLES:
            raise BadRequest(
                f"segment {options.segment:g} s is {segment} samples at {rate} Hz; use at "
                f"least {MIN_SEGMENT_SAMPLES / rate:.3f} s ({MIN_SEGMENT_SAMPLES} samples)"
            )
        longest = member.max_segment
        if options.segment is not None and longest is not None and segment > longest:
            raise BadRequest(
                f"segment {options.segment:g} s is longer than this model takes: at most "
                f"{longest / rate:.2f} s (the length it was trained on); use a shorter segment "
                "or leave it out"
            )
        step = int((1.0 - overlap) * segment)
        if step < MIN_STEP_SAMPLES:
            raise BadRequest(
                f"overlap {overlap:g} with a segment of {segment / rate:.3f} s advances only "
                f"{step} samples per chunk (at least {MIN_STEP_SAMPLES}); use a smaller "
                "overlap or a longer segment"
            )
