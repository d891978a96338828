"""Engine settings: one typed place for how a separation is run."""

from __future__ import annotations

from dataclasses import dataclass

from dsu.errors import BadRequest

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class EngineOptions:
    """How the engine cuts, batches and averages.

    Attributes:
        overlap: fraction of each chunk shared with the next; None uses the model's.
        shifts: number of randomly time-shifted passes averaged (Demucs' shift trick);
            0 runs one unshifted pass.
        max_shift: largest shift in seconds.
        batch_size: chunks per forward pass.
        segment: chunk length in seconds; None uses the model's.
        precision: ``fp32``, or ``fp16``/``bf16`` autocast (GPU).
        seed: seeds the shifts, so a run is repeatable.
    """

    overlap: float | None = None
    shifts: int = 0
    max_shift: float = 0.5
    batch_size: int = 1
    segment: float | None = None
    precision: str = "fp32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise BadRequest(f"overlap must be in [0, 1), got {self.overlap}")
        if self.shifts < 0:
            raise BadRequest(f"shifts must be >= 0, got {self.shifts}")
        if self.batch_size < 1:
            raise BadRequest(f"batch size must be >= 1, got {self.batch_size}")
        if self.segment is not None and self.segment <= 0:
            raise BadRequest(f"segment must be positive seconds, got {self.segment}")
        if self.precision not in PRECISIONS:
            raise BadRequest(f"precision must be one of {', '.join(PRECISIONS)}")
