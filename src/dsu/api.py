"""The Python API: ``Separator(model).separate(audio)`` with arrays or files in and out.

A file is streamed: decoded, resampled, separated and encoded window by window, so peak
memory does not grow with the track's length. It is read twice, once to validate it and
measure what the model needs up front (length, and the normalisation of models that use
it), once to separate it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsu import archs, audio
from dsu.archs.base import Bag, SeparationModel
from dsu.audio.encode import make_dirs, remove_empty_dirs
from dsu.engine import EngineOptions, TrackStats, resolve_device, separate_stream
from dsu.engine.allocator import keep_freed_memory, release_free_memory
from dsu.engine.options import DEFAULT_PRECISION, check_against
from dsu.engine.overlap_add import stats_accumulator
from dsu.errors import BadAudio, BadRequest, Cancelled
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
        overlap, shifts, batch_size, segment, seed: see :class:`dsu.engine.EngineOptions`;
            the defaults of every call, which ``separate(options=)`` may replace.
        downmix: mix inputs of more than two channels down to stereo instead of refusing.
        model_options: family settings overriding the registry entry's ``options``, e.g.
            ``{"framing": "overlap_add"}`` for ``tdc_unet``.
        allow_checksum_mismatch: load weights whose sha256 differs from the registry's
            (a file changed on purpose); by default such a model is refused.
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
        downmix: bool = False,
        model_options: dict[str, object] | None = None,
        allow_checksum_mismatch: bool = False,
    ) -> None:
        self.registry = Registry.open(Path(models_dir) if models_dir is not None else None)
        if isinstance(model, ModelEntry):
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
        )
        self.device = resolve_device(device)
        self.downmix = downmix
        self.model_options = dict(model_options or {})
        self._model: SeparationModel | Bag | None = None

    @property
    def name(self) -> str:
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
        return list(self.model.stems)

    @property
    def samplerate(self) -> int:
        return self.model.samplerate

    def load(self) -> None:
        """Load the weights onto the device now rather than on first separation.

        Also sets the process's C heap to reuse freed memory while separating
        (:mod:`dsu.engine.allocator`); separating and unloading hand it back after.
        """
        if self._model is None:
            keep_freed_memory()
            self._model = archs.load(self.entry, **self.model_options).to(self.device)

    def unload(self) -> None:
        """Release the weights (and the GPU memory they held)."""
        self._model = None
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
        available = list(self.model.stems)
        if two_stems is not None:
            if stems:
                raise BadRequest("give either stems or two_stems, not both")
            stems = [two_stems]
        wanted = list(dict.fromkeys(stems or available))
        unknown = [s for s in wanted if s not in available]
        if unknown:
            raise BadRequest(
                f"model {self.name!r} has no stem {', '.join(map(repr, unknown))}; "
                f"its stems are {', '.join(available)}"
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
            progress: ``(stage, fraction)``; stages ``reading`` then ``separating``.
            cancel: a callable or Event; when set the call raises :class:`Cancelled`.
            options: engine options for this call only (default: the separator's).
        """
        started = time.perf_counter()
        check_against(options or self.options, self.model)
        source = (
            file_input(Path(audio_input))
            if isinstance(audio_input, str | Path)
            else array_input(audio_input, samplerate)
        )
        wanted, complement_of = self.check_stems(stems, two_stems)
        model = self.model
        should_cancel = _cancel_check(cancel)
        out_rate = output_samplerate or source.samplerate
        out_channels = 1 if source.channels == 1 else model.channels

        frames, length, stats = self._measure(source, progress, should_cancel)
        out_length = round(frames * out_rate / source.samplerate)
        names = wanted + ([f"no_{complement_of}"] if complement_of else [])
        sinks = {
            name: StemSink(model.samplerate, model.channels, out_rate, out_channels, out_length)
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

            separate_stream(
                model,
                self._model_blocks(source),
                length,
                sink,
                stems=wanted,
                options=options or self.options,
                stats=stats,
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

    def _model_blocks(
        self, source: Input, blocks: Iterator[np.ndarray] | None = None
    ) -> Iterator[np.ndarray]:
        """The input's blocks, with the model's channels and at the model's rate."""
        model = self.model
        resampler = audio.Resampler(source.samplerate, model.samplerate, model.channels)
        for block in blocks if blocks is not None else source.blocks():
            block = audio.conform_channels(
                block, model.channels, downmix=self.downmix, path=source.name
            )
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
    ) -> tuple[int, int, TrackStats | None]:
        """First pass: validate every sample; the input's length, and the length and
        normalisation at the model's rate."""
        accumulator = stats_accumulator(self.model)
        frames = 0

        def counted() -> Iterator[np.ndarray]:
            nonlocal frames
            for block in source.blocks():
                frames += block.shape[-1]
                yield block

        for block in self._model_blocks(source, counted()):
            if cancel is not None and cancel():
                raise Cancelled("separation cancelled")
            accumulator.add(block)
            if progress is not None:
                progress("reading", min(frames / max(source.frames, 1), 1.0))
        if accumulator.count == 0:
            raise BadAudio(source.name, "no audio samples (zero length)")
        stats = accumulator.stats() if self.model.normalize else None
        return frames, accumulator.count, stats
