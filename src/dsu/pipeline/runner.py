"""Streaming execution of a pipeline: every model of every step over the track in lockstep.

The pipeline is a graph of nodes, each publishing stem streams block by block: the
mixture, and one node per step. A step runs each of its models on the engine
(:func:`dsu.engine.overlap_add.iter_separate`, pulled block by block) over its own
subscription to the step's input — the mixture or an earlier step's stem — so a later
step reads an earlier one's stem as a stream, never as a whole-track array. An ensemble
takes the same number of samples from each model and combines them
(:mod:`dsu.pipeline.ensemble`). Outputs are pulled in turn, the one furthest behind
first, so no stream runs ahead of the others by more than a model's chunk and a
combiner's context: memory holds the models and a few chunks whatever the track's length.

A model that normalises by the whole track (Demucs' mean and std, VR's peak) needs its
input's statistics before it starts. For the mixture they are measured in the reading
pass; for an earlier step's stem the steps before are run once more to measure it
(:meth:`PipelineRunner.measure`), which costs time, not memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dsu.archs.base import Bag, SeparationModel
from dsu.archs.normalization import StatsAccumulator, TrackStats
from dsu.engine.options import EngineOptions, check_against
from dsu.engine.overlap_add import iter_separate, stats_accumulator
from dsu.errors import BadRequest
from dsu.pipeline.ensemble import Combiner, check_weights, combiner
from dsu.pipeline.preset import PreparedPipeline
from dsu.pipeline.spec import MIXTURE, Ref, Step
from dsu.pipeline.stems import canonical_stems

Model = SeparationModel | Bag
Blocks = Callable[[], Iterator[np.ndarray]]
"""Makes a new pass over the mixture, as ``[C, n]`` float32 blocks at the pipeline's rate."""
StepProgress = Callable[[str, float], None]
"""``(step, fraction of that step done)``."""
Key = tuple[str, int]
"""A model's place: (step name, index among the step's models)."""


class _Node(ABC):
    """Publishes named streams; every subscriber of a stream gets each of its blocks."""

    def __init__(self) -> None:
        self._queues: dict[str, list[deque[np.ndarray]]] = {}
        self.done = False

    def subscribe(self, stem: str) -> Iterator[np.ndarray]:
        """A new reader of ``stem`` from its first block (subscribe before pulling)."""
        queue: deque[np.ndarray] = deque()
        self._queues.setdefault(stem, []).append(queue)

        def read() -> Iterator[np.ndarray]:
            while True:
                while not queue:
                    if self.done:
                        return
                    self.advance()
                yield queue.popleft()

        return read()

    @property
    def streams(self) -> list[str]:
        return list(self._queues)

    def publish(self, stem: str, block: np.ndarray) -> None:
        for queue in self._queues.get(stem, ()):
            queue.append(block)

    @abstractmethod
    def advance(self) -> None:
        """Do some work: publish blocks, or set ``done``."""


class _Mixture(_Node):
    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        super().__init__()
        self._blocks = blocks

    def advance(self) -> None:
        block = next(self._blocks, None)
        if block is None:
            self.done = True
        else:
            self.publish(MIXTURE, np.ascontiguousarray(block, dtype=np.float32))


@dataclass
class _Member:
    """One model of a step: its engine, and what it produced that the step has not used."""

    model: Model
    engine: Iterator[tuple[torch.Tensor, torch.Tensor]]
    pending: list[np.ndarray]
    produced: int = 0
    fraction: float = 0.0


class _StepNode(_Node):
    """A step: its models in lockstep over their inputs, combined stem by stem."""

    def __init__(self, step: Step, models: Sequence[Model], length: int, channels: int) -> None:
        super().__init__()
        self.step = step
        self.models = list(models)
        self.length = length
        self.channels = channels
        self.members: list[_Member] = []
        self._combiners: dict[str, Combiner] = {}
        self._used = 0

    def start(
        self,
        inputs: Sequence[Iterator[np.ndarray]],
        stats: Mapping[Key, TrackStats],
        options: EngineOptions,
        device: torch.device,
        report: Callable[[], None] | None,
        cancel: Callable[[], bool] | None,
    ) -> None:
        """Create the engines for the stems subscribed so far (call once, before pulling)."""
        stems = self.streams
        weights = check_weights(self.step.ensemble, self.step.weights, len(self.models))
        for index, (model, blocks) in enumerate(zip(self.models, inputs, strict=True)):
            own = canonical_stems(model.stems)
            member = _Member(model, iter(()), [])

            def progress(fraction: float, member: _Member = member) -> None:
                member.fraction = fraction
                if report is not None:
                    report()

            member.engine = iter_separate(
                model,
                blocks,
                self.length,
                stems=[own[stem] for stem in stems],
                options=options,
                stats=stats.get((self.step.name, index)),
                device=device,
                progress=progress,
                cancel=cancel,
            )
            self.members.append(member)
        if len(self.models) > 1:
            self._combiners = {
                stem: combiner(self.step.ensemble, weights, self.channels, self.length)
                for stem in stems
            }

    @property
    def fraction(self) -> float:
        return sum(m.fraction for m in self.members) / max(len(self.members), 1)

    def advance(self) -> None:
        behind = min(self.members, key=lambda m: m.produced)
        if behind.produced < self.length:
            block, _mix = next(behind.engine)
            behind.pending.append(block.numpy())
            behind.produced += block.shape[-1]
        ready = min(m.produced for m in self.members) - self._used
        if ready > 0:
            blocks = np.stack([self._take(m, ready) for m in self.members])  # [M, S, C, n]
            self._used += ready
            for row, stem in enumerate(self.streams):
                if self._combiners:
                    out = self._combiners[stem].push(blocks[:, row])
                else:
                    out = blocks[0, row]
                if out.shape[-1]:
                    self.publish(stem, out)
        if self._used >= self.length:
            self.done = True

    @staticmethod
    def _take(member: _Member, count: int) -> np.ndarray:
        joined = (
            np.concatenate(member.pending, -1) if len(member.pending) > 1 else member.pending[0]
        )
        member.pending = [joined[..., count:]] if joined.shape[-1] > count else []
        return joined[..., :count]


class PipelineRunner:
    """A prepared pipeline with its models loaded, ready to run over many inputs.

    Args:
        prepared: the checked spec (:func:`dsu.pipeline.preset.prepare`).
        models: model name (as the spec names it) -> the loaded model, on ``device``.
        device: where the models are.

    Raises:
        BadRequest: the models do not all run at one sample rate and channel count.
    """

    def __init__(
        self, prepared: PreparedPipeline, models: Mapping[str, Model], device: torch.device
    ) -> None:
        self.spec = prepared.spec
        self.outputs = prepared.outputs
        self.models = dict(models)
        self.device = device
        first = self.models[self.spec.models[0]]
        for name in self.spec.models:
            model = self.models[name]
            if (model.samplerate, model.channels) != (first.samplerate, first.channels):
                raise BadRequest(
                    f"pipeline {self.spec.name!r}: model {name!r} runs at {model.samplerate} Hz "
                    f"with {model.channels} channels, {self.spec.models[0]!r} at "
                    f"{first.samplerate} Hz with {first.channels}; a pipeline's models must "
                    "share their rate and channels"
                )
        self.samplerate = first.samplerate
        self.channels = first.channels

    def check(self, options: EngineOptions) -> None:
        """The engine options against every model (:func:`check_against`)."""
        for name in self.spec.models:
            check_against(options, self.models[name])

    def _step_models(self, step: Step) -> list[Model]:
        return [self.models[name] for name in step.models]

    def mixture_accumulators(self) -> dict[Key, StatsAccumulator]:
        """Accumulators of the models that normalise the mixture, fed by the reading pass."""
        return {
            (step.name, index): stats_accumulator(model)
            for step in self.spec.steps
            if step.input.step == MIXTURE
            for index, model in enumerate(self._step_models(step))
            if model.normalize
        }

    def measure(
        self,
        blocks: Blocks,
        length: int,
        stats: dict[Key, TrackStats],
        options: EngineOptions,
        cancel: Callable[[], bool] | None = None,
        progress: StepProgress | None = None,
    ) -> dict[Key, TrackStats]:
        """``stats`` plus those of the models that normalise an earlier step's stem, each
        measured by running the steps before it once."""
        stats = dict(stats)
        for step in self.spec.steps:
            models = self._step_models(step)
            wanted = [i for i, model in enumerate(models) if model.normalize]
            if step.input.step == MIXTURE or not wanted:
                continue
            accumulators = {i: stats_accumulator(models[i]) for i in wanted}
            streams = self._build(blocks(), length, [step.input], stats, options, cancel, progress)
            for block in streams[0]:
                for accumulator in accumulators.values():
                    accumulator.add(block)
            stats.update({(step.name, i): a.stats() for i, a in accumulators.items()})
        return stats

    def run(
        self,
        blocks: Blocks,
        length: int,
        stats: Mapping[Key, TrackStats],
        push: Callable[[str, np.ndarray], None],
        options: EngineOptions,
        cancel: Callable[[], bool] | None = None,
        progress: StepProgress | None = None,
    ) -> None:
        """Run the pipeline over ``length`` samples, calling ``push(output, [C, n])`` for
        each output's blocks in order, ``length`` samples of each, in lockstep."""
        refs = [ref for _, ref in self.spec.outputs or ()]
        streams = self._build(blocks(), length, refs, dict(stats), options, cancel, progress)
        emitted = [0] * len(streams)
        live = list(range(len(streams)))
        while live:
            index = min(live, key=emitted.__getitem__)
            block = next(streams[index], None)
            if block is None:
                live.remove(index)
                continue
            push(self.outputs[index], block)
            emitted[index] += block.shape[-1]

    def _build(
        self,
        blocks: Iterator[np.ndarray],
        length: int,
        wanted: Sequence[Ref],
        stats: Mapping[Key, TrackStats],
        options: EngineOptions,
        cancel: Callable[[], bool] | None,
        progress: StepProgress | None,
    ) -> list[Iterator[np.ndarray]]:
        """The graph for ``wanted``'s streams, with only the steps and stems they need."""
        needed: dict[str, list[str]] = {}
        pending = list(wanted)
        while pending:
            ref = pending.pop()
            if ref.step == MIXTURE:
                continue
            if ref.step not in needed:
                pending.append(self.spec.step(ref.step).input)
            stems = needed.setdefault(ref.step, [])
            if ref.stem not in stems:
                stems.append(ref.stem)
        nodes: dict[str, _Node] = {MIXTURE: _Mixture(blocks)}
        steps = [s for s in self.spec.steps if s.name in needed]
        for step in steps:
            nodes[step.name] = _StepNode(step, self._step_models(step), length, self.channels)
        # Every subscription exists before any engine starts: a step runs its models for
        # exactly the stems read from it, and no reader misses a block.
        streams = [nodes[ref.step].subscribe(ref.stem or MIXTURE) for ref in wanted]
        inputs = {
            step.name: [
                nodes[step.input.step].subscribe(step.input.stem or MIXTURE) for _ in step.models
            ]
            for step in steps
        }
        for step in steps:
            node = nodes[step.name]
            assert isinstance(node, _StepNode)

            def report(node: _StepNode = node) -> None:
                if progress is not None:
                    progress(node.step.name, node.fraction)

            node.start(inputs[step.name], stats, options, self.device, report, cancel)
        return streams
