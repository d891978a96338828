"""The uniform model object every family returns.

A family module (``dsu.archs.<family>``) knows one checkpoint format and builds a
:class:`SeparationModel`; the engine knows nothing else about it. A bag of models
(Demucs' ensembles) is a :class:`Bag`: members with per-stem weights, each run with its
own chunk grid and combined by the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from dsu.archs.normalization import StatsAccumulator


class SeparationModel(ABC):
    """One network that maps a mixture chunk to stem chunks.

    Attributes:
        samplerate: rate the network runs at, in Hz.
        channels: audio channels it expects (2 for every stereo model).
        stems: names of the sources it returns, in output order.
        segment: preferred chunk length in samples at ``samplerate``.
        overlap: preferred fraction of overlap between consecutive chunks, in [0, 1).
        normalize: if True the engine standardises the whole track (mean and std of its
            mono mix) before the network and undoes it after, as Demucs does (and MSST
            with ``inference.normalize``).
        window: cross-fade between chunks, ``"triangle"`` (Demucs) or ``"rect"`` (no
            cross-fade: overlapping chunks are averaged).
        transition_power: exponent applied to the triangle window.
        framing: one of :data:`dsu.engine.options.FRAMINGS`. ``"demucs"``: chunks
            ``segment * (1 - overlap)`` apart, zeros past the track's ends, ``window``
            cross-fade, as ``demucs.apply.apply_model``. ``"msst"``: chunks
            ``segment // num_overlap`` apart over the track reflected by ``segment - step``
            samples at both ends, a short last chunk padded to ``segment``, MSST's linear
            fade, as MSST's ``demix`` (``overlap``, ``window``, ``valid_length`` are then
            unused; a user's ``--overlap`` still replaces ``num_overlap``). ``"mdx"``: UVR's MDX-Net
            ``demix`` (audio-separator's): ``trim`` zeros before the track, chunks
            ``segment * (1 - overlap)`` apart, each output's head kept. ``"uvr"``:
            audio-separator's RoFormer path (``MDXCSeparator.demix``): chunks
            ``segment // num_overlap`` apart over the plain track, the last one ending at
            the track's end, a Hamming window.
        framings: the framings a user may pick for this model (``EngineOptions.framing``);
            its own ``framing`` by default.
        trim: ``"mdx"`` framing: the zeros ``demix`` puts before the track (``n_fft // 2``).
        num_overlap: ``"msst"`` framing: how many chunks cover each sample.
        batch_size: chunks per forward pass the model's config asks for, or None; the
            engine runs it on a GPU when ``EngineOptions.batch_size`` is None (on the CPU
            batching buys no speed and multiplies activation memory, so it runs 1).
        positional: the engine calls :meth:`forward_at` (with each chunk's place in the
            track) instead of :meth:`forward`: for models whose output depends on where a
            chunk lies (VR's whole-track window grid, Apollo's exact track ends).
        max_segment: the longest chunk in samples the network takes, or None for no limit
            (a user's ``--segment`` is checked against it).
        backends: the runtimes the model can run on besides torch's eager mode
            (:data:`dsu.engine.options.BACKENDS`); the engine picks one with
            :meth:`use_backend`.
    """

    samplerate: int
    channels: int
    stems: list[str]
    segment: int
    overlap: float = 0.25
    normalize: bool = False
    window: str = "triangle"
    transition_power: float = 1.0
    framing: str = "demucs"
    num_overlap: int = 4
    trim: int = 0
    batch_size: int | None = None
    max_segment: int | None = None
    positional: bool = False

    backends: tuple[str, ...] = ()

    @property
    def framings(self) -> tuple[str, ...]:
        return (self.framing,)

    def use_backend(self, backend: str, *, requested: bool) -> None:
        """Run later forward passes with ``backend`` (``torch`` or one of
        :attr:`backends`); ``requested``: the user asked for it (rather than ``auto``), so
        a failure to set it up is an error instead of a fall back to torch.

        Only torch's eager mode here: the engine passes ``torch`` to a model whose
        :attr:`backends` is empty.
        """
        if backend != "torch":
            raise ValueError(f"{type(self).__name__} runs on torch only, not {backend}")

    def valid_length(self, length: int, segment: int) -> int:
        """Input length the network needs to produce ``length`` output samples.

        The engine feeds ``valid_length(n, segment)`` samples centred on an ``n``-sample
        chunk (``n <= segment``, the engine's chunk size, which the user may override),
        taken from the surrounding audio (zeros past the track's ends), and keeps the
        centre ``n`` samples of the output.
        """
        return length

    @abstractmethod
    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate a batch of chunks.

        Args:
            mix: ``[B, C, T]`` float tensor on the model's device.

        Returns:
            ``[B, S, C, T']`` with ``S = len(stems)``; ``T' >= `` the chunk length, the
            engine centre-trims.
        """

    def forward_at(self, mix: torch.Tensor, starts: list[int], length: int) -> torch.Tensor:
        """:meth:`forward` for a ``positional`` model.

        Args:
            mix: ``[B, C, T]`` chunks with their context.
            starts: the track position of each chunk's first input sample.
            length: the track's length in samples.
        """
        return self.forward(mix)

    def stats_accumulator(self) -> StatsAccumulator | None:
        """The model's own per-track normalisation (e.g. VR's spectrogram peak): an object
        with ``add(block)``, ``count`` and ``stats() -> TrackStats`` like
        :class:`~dsu.archs.normalization.StatsAccumulator`, fed the whole stream before
        separating; None for Demucs' mean and std when ``normalize`` is set."""
        return None

    @abstractmethod
    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> SeparationModel:
        """Move parameters to ``device``/``dtype`` in place and return self."""

    def __call__(self, mix: torch.Tensor) -> torch.Tensor:
        return self.forward(mix)


@dataclass
class Bag:
    """An ensemble: every member separates the mix, stems are weighted per member.

    ``weights[m][s]`` is member ``m``'s weight for stem ``s``; each stem is divided by the
    sum of its weights. A member whose weight is zero for every requested stem is not run.
    """

    members: list[SeparationModel]
    weights: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a bag needs at least one model")
        first = self.members[0]
        for member in self.members[1:]:
            if (member.stems, member.samplerate, member.channels) != (
                first.stems,
                first.samplerate,
                first.channels,
            ):
                raise ValueError("every model of a bag must share stems, rate and channels")
        if not self.weights:
            self.weights = [[1.0] * len(first.stems) for _ in self.members]
        if len(self.weights) != len(self.members) or any(
            len(w) != len(first.stems) for w in self.weights
        ):
            raise ValueError("a bag needs one weight per model and stem")

    @property
    def samplerate(self) -> int:
        return self.members[0].samplerate

    @property
    def channels(self) -> int:
        return self.members[0].channels

    @property
    def stems(self) -> list[str]:
        return self.members[0].stems

    @property
    def normalize(self) -> bool:
        return self.members[0].normalize

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> Bag:
        for member in self.members:
            member.to(device, dtype)
        return self


Separable = SeparationModel | Bag


def as_bag(model: Separable) -> Bag:
    """View any model as a bag (a single model is a bag of one)."""
    return model if isinstance(model, Bag) else Bag([model])
