"""Streaming chunked overlap-add: the one place audio is cut into chunks and stitched.

A track of ``T`` samples (at the model's rate) arrives as a stream of blocks. Every bag
member, and every random shift of it, is one *pass*: a grid of chunks over the track,
each chunk fed to the network with ``valid_length`` samples of context centred on it,
centre-trimmed, weighted by the chunk window and summed. Passes advance in step; as soon
as every pass has moved past a position, the stems before it are final and go to the
sink. Memory therefore holds a few chunks, never the track, whatever its length.

For Demucs models the arithmetic is that of ``demucs.apply.apply_model`` (same chunk
grid, context, window and normalisation), which the parity tests check.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from dsu.archs.base import Bag, SeparationModel
from dsu.engine.device import precision_context
from dsu.engine.options import EngineOptions
from dsu.engine.window import chunk_window
from dsu.errors import Cancelled, OutOfMemory

Sink = Callable[[torch.Tensor, torch.Tensor], None]
"""Receives each finished block: stems ``[S, C, n]`` and the mixture ``[C, n]``."""
Progress = Callable[[float], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class TrackStats:
    """Mean and standard deviation of a track's mono mix (Demucs' normalisation)."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def of(cls, mix: torch.Tensor) -> TrackStats:
        """Stats of a whole ``[C, T]`` mixture, as ``demucs.api`` computes them."""
        ref = mix.mean(0)
        return cls(float(ref.mean()), float(ref.std()) + 1e-8)


class StatsAccumulator:
    """Computes :class:`TrackStats` over a stream of ``[C, n]`` blocks."""

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0.0
        self._sumsq = 0.0

    def add(self, block: np.ndarray) -> None:
        ref = block.astype(np.float64).mean(0)
        self.count += ref.size
        self._sum += float(ref.sum())
        self._sumsq += float(np.square(ref).sum())

    def stats(self) -> TrackStats:
        if self.count < 2:
            return TrackStats(self._sum / max(self.count, 1), 1e-8)
        mean = self._sum / self.count
        var = max(self._sumsq - self.count * mean * mean, 0.0) / (self.count - 1)
        return TrackStats(mean, var**0.5 + 1e-8)


def center_trim(x: torch.Tensor, length: int) -> torch.Tensor:
    """Keep the centre ``length`` samples of the last dimension."""
    delta = x.shape[-1] - length
    if delta < 0:
        raise ValueError(f"network returned {x.shape[-1]} samples, fewer than {length}")
    return x[..., delta // 2 : x.shape[-1] - (delta - delta // 2)]


@dataclass
class _Chunk:
    start: int  # first output sample, in track coordinates (negative inside a shift)
    length: int  # output samples kept
    input_start: int  # first input sample fed to the network, track coordinates
    input_length: int


@dataclass
class _Pass:
    """One bag member run over the track delayed by ``delay`` samples (one shift)."""

    member: int
    model: SeparationModel
    chunks: list[_Chunk]
    window: torch.Tensor
    stem_rows: list[int]
    next: int = 0
    acc: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    weight: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    base: int = 0  # track position of acc[..., 0]
    min_input_after: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        starts = [c.input_start for c in self.chunks]
        self.min_input_after = [*np.minimum.accumulate(starts[::-1])[::-1].tolist(), 1 << 62]

    @property
    def done(self) -> bool:
        return self.next >= len(self.chunks)

    def final_until(self, length: int) -> int:
        """Track position before which this pass adds nothing more."""
        return length if self.done else self.chunks[self.next].start

    def needs_input_from(self) -> int:
        return self.min_input_after[self.next]

    def add(self, chunk: _Chunk, out: torch.Tensor, length: int) -> None:
        """Weight ``out`` ``[S, C, chunk.length]`` and add it, clipped to ``[0, length)``."""
        lo = max(chunk.start, self.base)
        hi = min(chunk.start + chunk.length, length)
        if hi <= lo:
            return
        if self.acc.dim() == 1:
            self.acc = out.new_zeros(*out.shape[:-1], 0)
        grow = hi - self.base - self.acc.shape[-1]
        if grow > 0:
            self.acc = torch.cat([self.acc, out.new_zeros(*out.shape[:-1], grow)], -1)
            self.weight = torch.cat([self.weight, self.weight.new_zeros(grow)])
        w = self.window[lo - chunk.start : hi - chunk.start]
        self.acc[..., lo - self.base : hi - self.base] += (
            w * out[..., lo - chunk.start : hi - chunk.start]
        )
        self.weight[lo - self.base : hi - self.base] += w

    def take(self, until: int) -> torch.Tensor:
        """Remove and return the normalised stems before track position ``until``."""
        n = until - self.base
        out = self.acc[..., :n] / self.weight[:n]
        self.acc, self.weight, self.base = self.acc[..., n:], self.weight[n:], until
        return out


class _InputBuffer:
    """A sliding window over the incoming blocks, zero outside ``[0, length)``."""

    def __init__(self, blocks: Iterator[np.ndarray], channels: int, length: int, stats: TrackStats):
        self._blocks = blocks
        self._length = length
        self._stats = stats
        self._data = torch.zeros(channels, 0)
        self._start = 0

    @property
    def end(self) -> int:
        return self._start + self._data.shape[-1]

    def _fill(self, until: int) -> None:
        until = min(until, self._length)
        parts = [self._data]
        end = self.end
        while end < until:
            block = next(self._blocks, None)
            if block is None:
                raise ValueError(f"audio stream ended at {end} samples, {self._length} expected")
            parts.append(
                (torch.from_numpy(np.ascontiguousarray(block)) - self._stats.mean) / self._stats.std
            )
            end += block.shape[-1]
        if len(parts) > 1:
            self._data = torch.cat(parts, -1)

    def get(self, start: int, length: int) -> torch.Tensor:
        """Normalised input ``[C, length]`` from track position ``start``."""
        if max(start, 0) < self._start:
            raise RuntimeError(
                f"input at {start} was already released (buffer starts at {self._start})"
            )
        self._fill(start + length)
        out = self._data.new_zeros(self._data.shape[0], length)
        lo, hi = max(start, self._start), min(start + length, self.end, self._length)
        if hi > lo:
            out[:, lo - start : hi - start] = self._data[:, lo - self._start : hi - self._start]
        return out

    def drop_before(self, position: int) -> None:
        if position > self._start:
            cut = min(position - self._start, self._data.shape[-1])
            self._data = self._data[:, cut:]
            self._start += cut


def _plan(
    model: SeparationModel, length: int, delay: int, options: EngineOptions
) -> tuple[list[_Chunk], torch.Tensor]:
    """Chunk grid of one pass over a track of ``length`` samples delayed by ``delay``."""
    segment = model.segment if options.segment is None else int(options.segment * model.samplerate)
    overlap = model.overlap if options.overlap is None else options.overlap
    stride = max(1, int((1 - overlap) * segment))
    virtual = length + delay
    chunks = []
    for offset in range(0, virtual, stride):
        size = min(segment, virtual - offset)
        need = model.valid_length(size, segment)
        start = offset - delay
        chunks.append(_Chunk(start, size, start - (need - size) // 2, need))
    return chunks, chunk_window(model.window, segment, model.transition_power)


def _passes(bag: Bag, stem_rows: list[int], length: int, options: EngineOptions) -> list[_Pass]:
    rng = random.Random(options.seed)
    passes = []
    for index, (member, weights) in enumerate(zip(bag.members, bag.weights, strict=True)):
        if not any(weights[row] for row in stem_rows):
            continue
        max_shift = int(options.max_shift * member.samplerate)
        delays = [max_shift - rng.randint(0, max_shift) for _ in range(options.shifts)] or [0]
        for delay in delays:
            chunks, window = _plan(member, length, delay, options)
            passes.append(_Pass(index, member, chunks, window, stem_rows))
    return passes


def _forward(
    model: SeparationModel, batch: torch.Tensor, device: torch.device, precision: str
) -> torch.Tensor:
    try:
        with torch.inference_mode(), precision_context(device, precision):
            return model(batch.to(device)).float().cpu()
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(
            f"{device} ran out of memory; retry with a smaller --batch-size or --segment"
        ) from exc


def separate_stream(
    model: SeparationModel | Bag,
    blocks: Iterable[np.ndarray],
    length: int,
    sink: Sink,
    *,
    stems: list[str] | None = None,
    options: EngineOptions | None = None,
    stats: TrackStats | None = None,
    device: torch.device | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> None:
    """Separate a stream of mixture blocks, pushing finished stem blocks to ``sink``.

    Args:
        model: a model or bag, already on ``device``.
        blocks: the mixture as ``[C, n]`` float32 blocks at ``model.samplerate``,
            ``C == model.channels``, ``length`` samples in all.
        length: total samples in the stream.
        sink: called with ``(stems [S', C, n], mixture [C, n])`` for consecutive ranges
            covering ``[0, length)`` exactly once, in order; ``S'`` follows ``stems``.
        stems: names of the stems wanted (default: all); bag members that weigh none of
            them are not run.
        stats: normalisation for models with ``normalize`` (required for those).
        progress: called with the fraction of chunks done.
        cancel: polled between forward passes; when it returns True, raises Cancelled.
    """
    options = options or EngineOptions()
    bag = model if isinstance(model, Bag) else Bag([model])
    device = device or torch.device("cpu")
    names = stems or list(bag.stems)
    rows = [bag.stems.index(name) for name in names]
    if bag.normalize and stats is None:
        raise ValueError("this model normalises the track: pass its TrackStats")
    stats = stats if bag.normalize else TrackStats()
    totals = [sum(bag.weights[m][row] for m in range(len(bag.members))) for row in rows]
    passes = _passes(bag, rows, length, options)
    shifts_of = {p.member: sum(q.member == p.member for q in passes) for p in passes}
    buffer = _InputBuffer(iter(blocks), bag.channels, length, stats)
    total_chunks = sum(len(p.chunks) for p in passes)
    done_chunks = 0
    emitted = 0

    while emitted < length:
        if cancel is not None and cancel():
            raise Cancelled("separation cancelled")
        current = min((p for p in passes if not p.done), key=lambda p: p.chunks[p.next].start)
        batch = [current.chunks[current.next]]
        while len(batch) < options.batch_size and current.next + len(batch) < len(current.chunks):
            candidate = current.chunks[current.next + len(batch)]
            if candidate.input_length != batch[0].input_length:
                break
            batch.append(candidate)
        inputs = torch.stack([buffer.get(c.input_start, c.input_length) for c in batch])
        outputs = _forward(current.model, inputs, device, options.precision)
        for chunk, out in zip(batch, outputs, strict=True):
            current.add(chunk, center_trim(out[rows], chunk.length), length)
        current.next += len(batch)
        done_chunks += len(batch)
        if progress is not None:
            progress(done_chunks / total_chunks)

        final = min(p.final_until(length) for p in passes)
        if final > emitted:
            mix = buffer.get(emitted, final - emitted) * stats.std + stats.mean
            out = torch.zeros(len(rows), bag.channels, final - emitted)
            for p in passes:
                weights = torch.tensor([bag.weights[p.member][row] for row in rows])
                out += p.take(final) * (weights / shifts_of[p.member])[:, None, None]
            out = out / torch.tensor(totals)[:, None, None]
            sink(out * stats.std + stats.mean, mix)
            emitted = final
        buffer.drop_before(min([emitted] + [p.needs_input_from() for p in passes]))


def separate_array(
    model: SeparationModel | Bag,
    mix: torch.Tensor,
    *,
    stems: list[str] | None = None,
    options: EngineOptions | None = None,
    device: torch.device | None = None,
    block: int = 1 << 18,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> torch.Tensor:
    """Separate a whole ``[C, T]`` mixture at the model's rate; returns ``[S', C, T]``."""
    length = mix.shape[-1]
    bag = model if isinstance(model, Bag) else Bag([model])
    names = stems or list(bag.stems)
    result = torch.zeros(len(names), mix.shape[0], length)
    position = 0

    def collect(stems_block: torch.Tensor, _mix: torch.Tensor) -> None:
        nonlocal position
        result[..., position : position + stems_block.shape[-1]] = stems_block
        position += stems_block.shape[-1]

    array = mix.detach().cpu().float().numpy()
    blocks = (array[:, i : i + block] for i in range(0, length, block))
    stats = TrackStats.of(mix.float()) if bag.normalize else None
    separate_stream(
        model,
        blocks,
        length,
        collect,
        stems=names,
        options=options,
        stats=stats,
        device=device,
        progress=progress,
        cancel=cancel,
    )
    return result
