"""Streaming chunked overlap-add: the one place audio is cut into chunks and stitched.

A track of ``T`` samples (at the model's rate) arrives as a stream of blocks. Every bag
member, and every random shift of it, is one *pass*: a grid of chunks over the track,
each chunk fed to the network, weighted by its window and summed; the sum is divided by
the summed windows. Passes advance in step; as soon as every pass has moved past a
position, the stems before it are final and go to the sink. Memory therefore holds a
few chunks, never the track, whatever its length.

Each model declares its framing (``SeparationModel.framing``); :mod:`dsu.engine.framing`
plans the chunks of each (Demucs', MSST's and UVR's MDX-Net arithmetic) and this module
runs them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from dsu.archs.base import Bag, SeparationModel
from dsu.archs.normalization import StatsAccumulator, TrackStats
from dsu.engine.backends import resolve_backend
from dsu.engine.device import configure_threads, precision_context
from dsu.engine.framing import Chunk, msst_index, plan
from dsu.engine.options import EngineOptions
from dsu.errors import Cancelled, OutOfMemory

Sink = Callable[[torch.Tensor, torch.Tensor], None]
"""Receives each finished block: stems ``[S, C, n]`` and the mixture ``[C, n]``."""
Progress = Callable[[float], None]
CancelCheck = Callable[[], bool]


def stats_accumulator(model: SeparationModel | Bag) -> StatsAccumulator:
    """The accumulator of a model's per-track normalisation: the model's own
    (``stats_accumulator()``, e.g. VR's spectrogram peak) or Demucs' mean and std."""
    first = model.members[0] if isinstance(model, Bag) else model
    own = first.stats_accumulator()
    return own if own is not None else StatsAccumulator()


def array_stats(model: SeparationModel | Bag, mix: np.ndarray) -> TrackStats:
    """Normalisation of a whole ``[C, T]`` mixture for ``model``."""
    first = model.members[0] if isinstance(model, Bag) else model
    if first.stats_accumulator() is None:
        return TrackStats.of(torch.from_numpy(mix))
    accumulator = stats_accumulator(model)
    accumulator.add(mix)
    return accumulator.stats()


@dataclass
class _Pass:
    """One bag member run over the track delayed by ``delay`` samples (one shift)."""

    member: int
    model: SeparationModel
    chunks: list[Chunk]
    stem_rows: list[int]
    next: int = 0
    acc: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    weight: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    base: int = 0  # track position of acc[..., 0]
    min_input_after: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        starts = [c.source_start for c in self.chunks]
        self.min_input_after = [*np.minimum.accumulate(starts[::-1])[::-1].tolist(), 1 << 62]

    @property
    def done(self) -> bool:
        return self.next >= len(self.chunks)

    def final_until(self, length: int) -> int:
        """Track position before which this pass adds nothing more."""
        return length if self.done else min(self.chunks[self.next].start, length)

    def needs_input_from(self) -> int:
        return self.min_input_after[self.next]

    def add(self, chunk: Chunk, out: torch.Tensor, length: int) -> None:
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
        w = chunk.window[lo - chunk.start : hi - chunk.start]
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

    def get_mirrored(self, start: int, count: int, length: int, tail: str) -> torch.Tensor:
        """Normalised MSST chunk input ``[C, length]`` (:func:`~dsu.engine.framing.msst_index`)."""
        index = msst_index(start, count, length, tail, self._length)
        if index is None:
            return torch.nn.functional.pad(self.get(start, count), (0, length - count))
        if int(index.min()) < self._start:
            raise RuntimeError(
                f"input at {int(index.min())} was already released (buffer starts at {self._start})"
            )
        self._fill(int(index.max()) + 1)
        out = self._data[:, index - self._start]
        return torch.nn.functional.pad(out, (0, length - out.shape[-1]))

    def drop_before(self, position: int) -> None:
        if position > self._start:
            cut = min(position - self._start, self._data.shape[-1])
            self._data = self._data[:, cut:]
            self._start += cut


def _passes(bag: Bag, stem_rows: list[int], length: int, options: EngineOptions) -> list[_Pass]:
    rng = random.Random(options.seed)
    passes = []
    for index, (member, weights) in enumerate(zip(bag.members, bag.weights, strict=True)):
        if not any(weights[row] for row in stem_rows):
            continue
        max_shift = int(options.max_shift * member.samplerate)
        delays = [max_shift - rng.randint(0, max_shift) for _ in range(options.shifts)] or [0]
        for delay in delays:
            passes.append(_Pass(index, member, plan(member, length, delay, options), stem_rows))
    return passes


def _forward(
    model: SeparationModel,
    batch: torch.Tensor,
    device: torch.device,
    precision: str,
    starts: list[int],
    length: int,
) -> torch.Tensor:
    """Run one batch; a ``positional`` model is also told where each chunk's input starts
    in the track and the track's length (``forward_at``)."""
    try:
        with torch.inference_mode(), precision_context(device, precision):
            if model.positional:
                return model.forward_at(batch.to(device), starts, length).float().cpu()
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
    """Separate a stream of mixture blocks, pushing finished stem blocks to ``sink``
    (:func:`iter_separate`, whose arguments these are, with each block sent to ``sink``)."""
    for stems_block, mix in iter_separate(
        model,
        blocks,
        length,
        stems=stems,
        options=options,
        stats=stats,
        device=device,
        progress=progress,
        cancel=cancel,
    ):
        sink(stems_block, mix)


def iter_separate(
    model: SeparationModel | Bag,
    blocks: Iterable[np.ndarray],
    length: int,
    *,
    stems: list[str] | None = None,
    options: EngineOptions | None = None,
    stats: TrackStats | None = None,
    device: torch.device | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Separate a stream of mixture blocks, yielding finished stem blocks as they are ready.

    Pulled, not pushed, so that several models can run over one input in lockstep and a
    later model can read an earlier one's stem as its input (:mod:`dsu.pipeline.runner`).

    Args:
        model: a model or bag, already on ``device``.
        blocks: the mixture as ``[C, n]`` float32 blocks at ``model.samplerate``,
            ``C == model.channels``, ``length`` samples in all.
        length: total samples in the stream.
        stems: names of the stems wanted (default: all); bag members that weigh none of
            them are not run.
        stats: normalisation for models with ``normalize`` (required for those).
        progress: called with the fraction of chunks done.
        cancel: polled between forward passes; when it returns True, raises Cancelled.

    Yields:
        ``(stems [S', C, n], mixture [C, n])`` for consecutive ranges covering
        ``[0, length)`` exactly once, in order; ``S'`` follows ``stems``.
    """
    configure_threads()
    options = options or EngineOptions()
    bag = model if isinstance(model, Bag) else Bag([model])
    device = device or torch.device("cpu")
    names = stems or list(bag.stems)
    rows = [bag.stems.index(name) for name in names]
    if bag.normalize and stats is None:
        raise ValueError("this model normalises the track: pass its TrackStats")
    stats = stats if bag.normalize else TrackStats()
    totals = [sum(bag.weights[m][row] for m in range(len(bag.members))) for row in rows]
    for member in bag.members:
        backend = resolve_backend(options.backend, member.backends, device.type, options.precision)
        member.use_backend(backend, requested=options.backend != "auto")
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
        # A config's batch size is a GPU setting: on the CPU a batch is no faster and
        # holds several chunks' activations at once (bench/bench_roformer.py).
        preferred = current.model.batch_size if device.type != "cpu" else None
        limit = options.batch_size or preferred or 1
        while len(batch) < limit and current.next + len(batch) < len(current.chunks):
            candidate = current.chunks[current.next + len(batch)]
            if candidate.input_length != batch[0].input_length:
                break
            batch.append(candidate)
        inputs = torch.stack([c.read(buffer) for c in batch])
        outputs = _forward(
            current.model,
            inputs,
            device,
            options.precision,
            [c.input_start for c in batch],
            length,
        )
        for chunk, out in zip(batch, outputs, strict=True):
            current.add(chunk, chunk.kept(out[rows]), length)
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
            yield out * stats.std + stats.mean, mix
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
    stats = array_stats(bag, array) if bag.normalize else None
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
