"""The Python API: ``Separator(model).separate(audio)`` with arrays or files in and out.

A file is streamed: decoded, resampled, separated and encoded window by window, so peak
memory does not grow with the track's length. It is read twice, once to validate it and
measure what the model needs up front (length, and the normalisation of models that use
it), once to separate it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsu import archs, audio
from dsu.archs.base import Bag, SeparationModel
from dsu.archs.normalization import StatsAccumulator
from dsu.audio.encode import make_dirs, remove_empty_dirs
from dsu.engine import EngineOptions, resolve_device, separate_stream
from dsu.engine.allocator import keep_freed_memory, release_free_memory
from dsu.engine.options import DEFAULT_BACKEND, DEFAULT_PRECISION, check_against
from dsu.engine.overlap_add import stats_accumulator
from dsu.errors import BadAudio, BadRequest, Cancelled
from dsu.pipeline.ensemble import DEFAULT_ALGORITHM
from dsu.pipeline.preset import PreparedPipeline, pipeline_from, prepare
from dsu.pipeline.runner import PipelineRunner, StepProgress
from dsu.pipeline.spec import PipelineSpec, short_spec
from dsu.progress import ProgressCallback
from dsu.registry import Registry
from dsu.registry.entry import ModelEntry
from dsu.registry.verify import ensure_checksums
from dsu.streams import Input, StemSink, array_input, file_input

CancelLike = Callable[[], bool] | threading.Event


@dataclass
class SeparationResult:
    """What :meth:`Separator.separate` produced.

    Attributes:
        stems: stem name -> ``[C, T]`` float32 at ``samplerate`` (array output).
        files: stem name -> written path (file output).
        samplerate: rate of the outputs, the input's unless told otherwise.
        elapsed: wall seconds.
        clipped: stem name -> samples beyond full scale that the file's format clipped
            (file output; stems with none are absent). Float WAV (``bit_depth=32``)
            keeps them.
    """

    stems: dict[str, np.ndarray] | None
    files: dict[str, Path] | None
    samplerate: int
    elapsed: float
    clipped: dict[str, int] = field(default_factory=dict)


def _cancel_check(cancel: CancelLike | None) -> Callable[[], bool] | None:
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


class Separator:
    """A model kept loaded, ready to separate many inputs.

    Args:
        model: registry name or alias, or an entry already resolved from ``models_dir``
            (so a caller that looked the name up does not resolve it twice); None takes
            the models directory's default, or the weight-free ``center`` when there is none.
        models_dir: the models directory (DESIGN §2); None uses ``DSU_MODELS_DIR`` or
            ``~/.cache/dsu/models``.
        device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        precision: ``fp32``; ``fp16``/``bf16`` autocast on GPUs.
        overlap, shifts, batch_size, segment, seed, framing, backend: see
            :class:`dsu.engine.EngineOptions`;
            the defaults of every call, which ``separate(options=)`` may replace.
        downmix: mix inputs of more than two channels down to stereo instead of refusing.
        model_options: family settings overriding the registry entry's ``options``, e.g.
            ``{"framing": "overlap_add"}`` for ``tdc_unet``.
        allow_checksum_mismatch: load weights whose sha256 differs from the registry's
            (a file changed on purpose); by default such a model is refused.
        models, ensemble, weights: instead of ``model``, an ensemble: these models combined
            per stem by ``ensemble`` (:data:`dsu.pipeline.ensemble.ALGORITHMS`, default
            ``avg_wave``) with per-model ``weights``.
        pipeline: instead of ``model``, a pipeline: a preset name, a spec object or a
            :class:`~dsu.pipeline.spec.PipelineSpec` (:mod:`dsu.pipeline.spec`); its
            outputs are the stems.
        member_loader: how a pipeline gets each of its models, loaded (default: a
            :class:`Separator` of its own); the worker and the service pass their cache's.

    Raises:
        BadRequest: ``model`` together with ``models``/``pipeline``, or a bad pipeline.
        ModelNotFound: a model that is not installed (a pipeline names all of them).
    """

    def __init__(
        self,
        model: str | ModelEntry | None = None,
        *,
        models_dir: str | Path | None = None,
        device: str = "auto",
        precision: str = DEFAULT_PRECISION,
        overlap: float | None = None,
        shifts: int = 0,
        batch_size: int | None = None,
        segment: float | None = None,
        seed: int = 0,
        framing: str | None = None,
        backend: str = DEFAULT_BACKEND,
        downmix: bool = False,
        model_options: dict[str, object] | None = None,
        allow_checksum_mismatch: bool = False,
        models: Sequence[str] | None = None,
        ensemble: str | None = None,
        weights: Sequence[float] | None = None,
        pipeline: str | Mapping[str, object] | PipelineSpec | None = None,
        member_loader: Callable[[str], Separator] | None = None,
    ) -> None:
        self.registry = Registry.open(Path(models_dir) if models_dir is not None else None)
        self.pipeline: PreparedPipeline | None = None
        if models is not None or pipeline is not None:
            if model is not None or (models is not None and pipeline is not None):
                raise BadRequest("give one of model, models (an ensemble) or pipeline")
            spec = (
                pipeline_from(pipeline)
                if pipeline is not None
                else short_spec(list(models or ()), ensemble or DEFAULT_ALGORITHM, weights)
            )
            self.pipeline = prepare(spec, self.registry)
            self._member_loader = member_loader or (
                lambda name: Separator(
                    name,
                    models_dir=self.registry.root,
                    device=device,
                    model_options=model_options,
                    allow_checksum_mismatch=allow_checksum_mismatch,
                )
            )
        self.entry: ModelEntry | None = None
        if self.pipeline is not None:
            pass  # each model is resolved by member_loader when the pipeline loads
        elif isinstance(model, ModelEntry):
            ensure_checksums(model, allow_mismatch=allow_checksum_mismatch)
            self.entry = model
        else:
            self.entry = self.registry.resolve(
                model,
                allow_checksum_mismatch=allow_checksum_mismatch,
            )
        self.options = EngineOptions(
            overlap=overlap,
            shifts=shifts,
            batch_size=batch_size,
            segment=segment,
            precision=precision,
            seed=seed,
            framing=framing,
            backend=backend,
        )
        self.device = resolve_device(device)
        self.downmix = downmix
        self.model_options = dict(model_options or {})
        self._model: SeparationModel | Bag | None = None
        self._runner: PipelineRunner | None = None

    @property
    def name(self) -> str:
        if self.pipeline is not None:
            return self.pipeline.spec.name
        assert self.entry is not None
        return self.entry.name

    @property
    def model(self) -> SeparationModel | Bag:
        """The loaded network (loads it on first use)."""
        if self._model is None:
            self.load()
        assert self._model is not None
        return self._model

    @property
    def stems(self) -> list[str]:
        if self.pipeline is not None:
            return self.pipeline.outputs
        return list(self.model.stems)

    @property
    def samplerate(self) -> int:
        return self.runner.samplerate if self.pipeline else self.model.samplerate

    @property
    def channels(self) -> int:
        return self.runner.channels if self.pipeline else self.model.channels

    @property
    def runner(self) -> PipelineRunner:
        """The pipeline's models, loaded (loads them on first use)."""
        if self._runner is None:
            self.load()
        assert self._runner is not None
        return self._runner

    def check_options(self, options: EngineOptions | None = None) -> None:
        """The engine options against the model, or every model of the pipeline.

        Raises:
            BadRequest: see :func:`dsu.engine.options.check_against`.
        """
        options = options or self.options
        if self.pipeline is not None:
            self.runner.check(options)
        else:
            check_against(options, self.model)

    def load(self) -> None:
        """Load the weights onto the device now rather than on first separation.

        Also sets the process's C heap to reuse freed memory while separating
        (:mod:`dsu.engine.allocator`); separating and unloading hand it back after.
        """
        if self.pipeline is not None:
            if self._runner is None:
                keep_freed_memory()
                # Take each network as soon as its member loads: a one-model cache
                # (the service's) evicts the previous member on the next load.
                models = {
                    name: self._member_loader(name).model for name in self.pipeline.spec.models
                }
                self._runner = PipelineRunner(self.pipeline, models, self.device)
        elif self._model is None:
            assert self.entry is not None
            keep_freed_memory()
            self._model = archs.load(self.entry, **self.model_options).to(self.device)

    def unload(self) -> None:
        """Release the weights (and the GPU memory they held)."""
        self._model = None
        self._runner = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        release_free_memory()

    def check_stems(
        self, stems: list[str] | None, two_stems: str | None
    ) -> tuple[list[str], str | None]:
        """Stems to ask the engine for, and the one whose complement is also written.

        Raises:
            BadRequest: both are given, or a stem the model does not have.
        """
        available = self.stems
        if two_stems is not None and self.pipeline is not None:
            raise BadRequest(
                "two_stems is for one model; a pipeline writes the outputs it names "
                f"({', '.join(available)})"
            )
        if two_stems is not None:
            if stems:
                raise BadRequest("give either stems or two_stems, not both")
            stems = [two_stems]
        wanted = list(dict.fromkeys(stems or available))
        unknown = [s for s in wanted if s not in available]
        if unknown:
            raise BadRequest(
                f"{'pipeline' if self.pipeline else 'model'} {self.name!r} has no stem "
                f"{', '.join(map(repr, unknown))}; its stems are {', '.join(available)}"
            )
        return wanted, two_stems

    def separate(
        self,
        audio_input: str | Path | np.ndarray | torch.Tensor,
        samplerate: int | None = None,
        *,
        stems: list[str] | None = None,
        two_stems: str | None = None,
        output_dir: str | Path | None = None,
        format: str = "wav",
        bit_depth: int | None = None,
        bitrate: int | None = None,
        output_samplerate: int | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelLike | None = None,
        options: EngineOptions | None = None,
        step_progress: StepProgress | None = None,
    ) -> SeparationResult:
        """Separate a file or an array.

        Args:
            audio_input: a path, or an array ``[C, T]`` (or ``[T]``) with ``samplerate``.
            stems: the stems wanted (default all); others are not computed where the
                model allows (bag members that weigh none of them are skipped).
            two_stems: write this stem and ``no_<stem>`` = mixture - stem.
            output_dir: write ``<output_dir>/<stem>.<ext>`` (atomically; nothing is left
                behind on error or cancel) instead of returning arrays.
            format, bit_depth, bitrate: the output encoding (``dsu.audio.OUTPUT_FORMATS``).
            output_samplerate: rate of the outputs; default the input's.
            progress: ``(stage, fraction)``; stages ``reading`` then ``separating`` (a
                pipeline's fraction is its steps' mean; before it, ``measuring`` when a
                step normalises an earlier step's stem).
            cancel: a callable or Event; when set the call raises :class:`Cancelled`.
            options: engine options for this call only (default: the separator's).
            step_progress: a pipeline's ``(step, fraction of that step)``, as each step
                advances (its steps run together, in lockstep).
        """
        started = time.perf_counter()
        options = options or self.options
        self.check_options(options)
        source = (
            file_input(Path(audio_input))
            if isinstance(audio_input, str | Path)
            else array_input(audio_input, samplerate)
        )
        wanted, complement_of = self.check_stems(stems, two_stems)
        should_cancel = _cancel_check(cancel)
        out_rate = output_samplerate or source.samplerate
        out_channels = 1 if source.channels == 1 else self.channels

        accumulators = (
            self.runner.mixture_accumulators()
            if self.pipeline is not None
            else {None: stats_accumulator(self.model)}
        )
        frames, length = self._measure(source, progress, should_cancel, accumulators)
        out_length = round(frames * out_rate / source.samplerate)
        names = wanted + ([f"no_{complement_of}"] if complement_of else [])
        sinks = {
            name: StemSink(self.samplerate, self.channels, out_rate, out_channels, out_length)
            for name in names
        }
        writers: dict[str, audio.AudioWriter] = {}
        created: list[Path] = []
        try:
            if output_dir is not None:
                # Directories this call creates are removed again if nothing is written.
                created = make_dirs(output_dir)
                ext = audio.extension_for(format)
                for name in names:
                    writers[name] = sinks[name].writer = audio.AudioWriter(
                        Path(output_dir) / f"{name}.{ext}",
                        out_rate,
                        out_channels,
                        format,
                        bit_depth,
                        bitrate,
                    )

            def sink(block: torch.Tensor, mix: torch.Tensor) -> None:
                for row, name in enumerate(wanted):
                    sinks[name].push(block[row])
                if complement_of:
                    sinks[f"no_{complement_of}"].push(mix - block[wanted.index(complement_of)])

            if self.pipeline is not None:
                self._run_pipeline(
                    source,
                    length,
                    accumulators,
                    sinks,
                    options,
                    progress,
                    step_progress,
                    should_cancel,
                )
            else:
                separate_stream(
                    self.model,
                    self._model_blocks(source),
                    length,
                    sink,
                    stems=wanted,
                    options=options,
                    stats=accumulators[None].stats() if self.model.normalize else None,
                    device=self.device,
                    progress=(lambda f: progress("separating", f)) if progress else None,
                    cancel=should_cancel,
                )
            results = {name: s.finish() for name, s in sinks.items()}
            files = {name: writer.commit() for name, writer in writers.items()}
        except BaseException:
            for writer in writers.values():
                writer.abort()
            remove_empty_dirs(created)
            raise
        finally:
            release_free_memory()
        elapsed = time.perf_counter() - started
        if writers:
            clipped = {name: w.clipped for name, w in writers.items() if w.clipped}
            return SeparationResult(None, files, out_rate, elapsed, clipped)
        return SeparationResult(
            {k: v for k, v in results.items() if v is not None}, None, out_rate, elapsed
        )

    def _run_pipeline(
        self,
        source: Input,
        length: int,
        accumulators: Mapping[object, StatsAccumulator],
        sinks: dict[str, StemSink],
        options: EngineOptions,
        progress: ProgressCallback | None,
        step_progress: StepProgress | None,
        cancel: Callable[[], bool] | None,
    ) -> None:
        """Run the pipeline over ``source``, its outputs wanted in ``sinks``."""
        runner = self.runner
        fractions = dict.fromkeys((step.name for step in runner.spec.steps), 0.0)

        def advanced(step: str, fraction: float) -> None:
            fractions[step] = fraction
            if step_progress is not None:
                step_progress(step, fraction)
            if progress is not None:
                progress("separating", sum(fractions.values()) / len(fractions))

        def measuring(step: str, fraction: float) -> None:
            if progress is not None:
                progress("measuring", fraction)

        def push(name: str, block: np.ndarray) -> None:
            if name in sinks:
                sinks[name].push(torch.from_numpy(block))

        blocks = lambda: self._model_blocks(source)  # noqa: E731 - one pass per call
        stats = {key: acc.stats() for key, acc in accumulators.items()}
        stats = runner.measure(blocks, length, stats, options, cancel, measuring)
        runner.run(blocks, length, stats, push, options, cancel, advanced)

    def _model_blocks(
        self, source: Input, blocks: Iterator[np.ndarray] | None = None
    ) -> Iterator[np.ndarray]:
        """The input's blocks, with the model's channels and at the model's rate."""
        rate, channels = self.samplerate, self.channels
        resampler = audio.Resampler(source.samplerate, rate, channels)
        for block in blocks if blocks is not None else source.blocks():
            block = audio.conform_channels(block, channels, downmix=self.downmix, path=source.name)
            out = resampler.process(block)
            if out.shape[-1]:
                yield out
        tail = resampler.flush()
        if tail.shape[-1]:
            yield tail

    def _measure(
        self,
        source: Input,
        progress: ProgressCallback | None,
        cancel: Callable[[], bool] | None,
        accumulators: Mapping[object, StatsAccumulator],
    ) -> tuple[int, int]:
        """First pass: validate every sample, feed the models' normalisation
        ``accumulators``; the input's length, and the length at the model's rate."""
        frames = count = 0

        def counted() -> Iterator[np.ndarray]:
            nonlocal frames
            for block in source.blocks():
                frames += block.shape[-1]
                yield block

        for block in self._model_blocks(source, counted()):
            if cancel is not None and cancel():
                raise Cancelled("separation cancelled")
            for accumulator in accumulators.values():
                accumulator.add(block)
            count += block.shape[-1]
            if progress is not None:
                progress("reading", min(frames / max(source.frames, 1), 1.0))
        if count == 0:
            raise BadAudio(source.name, "no audio samples (zero length)")
        return frames, count
