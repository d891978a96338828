"""Chunk plans: where each chunk of a pass starts, what it reads, how it is weighed.

Each model declares its framing (``SeparationModel.framing``):

- ``demucs``: the arithmetic of ``demucs.apply.apply_model`` (chunk grid, context of
  ``valid_length`` samples centred on each chunk with zeros past the track's ends,
  centre-trimmed output, triangle window, normalisation), which tests/test_demucs_parity.py
  checks.
- ``msst``: the arithmetic of MSST's ``demix`` (``msst.utils.model_utils``): chunks of
  ``segment`` samples every ``step = segment // num_overlap`` over the track mirrored by
  ``border = segment - step`` samples at both ends (when the track is longer than
  ``2 * border``), a short last chunk padded to ``segment`` (mirrored if it is more than
  half a chunk, else zeros), the first ``length`` output samples kept, a linear fade
  window without fade-in on the first chunk and fade-out on the last, the border trimmed;
  tests/test_msst_framing_parity.py checks it. A chunk of that grid lying wholly in a
  mirrored border (every output sample of it cropped) is not run: the output is the same
  with one chunk fewer on most tracks. The mirrored start needs only the first
  ``border + 1`` samples and the mirrored end only the last ``border + 1``, so this too
  streams. Where MSST's ``demix`` weighs chunks by their position in a batch (with
  ``batch_size > 1`` every chunk of the last batch loses its fade-out), the engine weighs
  each chunk by its position in the track, as ``demix`` does with ``batch_size=1``:
  batching never changes the result.
- ``mdx``: the arithmetic of UVR's MDX-Net ``demix`` (audio-separator's
  ``MDXSeparator.demix``): the track preceded by ``trim`` zeros and followed by zeros up to
  a whole number of ``segment - 2 * trim`` steps plus ``trim``; chunks of ``segment`` samples
  every ``int((1 - overlap) * segment)`` samples over that, zeros past its end; each
  chunk's output aligned with its input (the first samples kept, no centre trim), weighted
  by a symmetric Hann window of the chunk's length within the padded track (flat with no
  overlap).
- ``uvr``: the arithmetic of audio-separator's RoFormer path (``MDXCSeparator.demix`` with
  ``is_roformer``), which also runs MSST checkpoints: chunks of ``segment`` samples every
  ``step = segment // num_overlap`` over the plain track (no mirroring), the last chunk
  moved back to end at the track's end (a track shorter than a chunk is one short
  chunk), each weighted by a symmetric Hamming window of ``segment`` samples (its first
  samples for a short chunk), outputs aligned with their inputs. It runs fewer chunks than
  ``msst`` (no border chunks); tests/test_uvr_framing_parity.py checks it.
- ``msst_demucs``: the arithmetic of MSST's ``demix`` in its mode for HTDemucs
  (``model_type: htdemucs``): chunks of ``segment`` samples every ``segment // num_overlap``
  from the track's start, zeros past its end, each output's first samples kept, every
  chunk weighted equally (no fade, no mirrored border); tests/test_msst_htdemucs.py checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from dsu.archs.base import SeparationModel
from dsu.engine.options import FRAMINGS, EngineOptions
from dsu.engine.window import chunk_window, fade_window, msst_fade_length


class InputSource(Protocol):
    """The engine's normalised view of the incoming track."""

    def get(self, start: int, length: int) -> torch.Tensor: ...

    def get_mirrored(self, start: int, count: int, length: int, tail: str) -> torch.Tensor: ...


def center_trim(x: torch.Tensor, length: int) -> torch.Tensor:
    """Keep the centre ``length`` samples of the last dimension."""
    delta = x.shape[-1] - length
    if delta < 0:
        raise ValueError(f"network returned {x.shape[-1]} samples, fewer than {length}")
    return x[..., delta // 2 : x.shape[-1] - (delta - delta // 2)]


def reflect_index(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Map integer positions onto ``[0, size)`` by mirroring about the end samples.

    Within one mirror length of the ends this is ``reflect`` padding (``-1 -> 1``,
    ``size -> size - 2``); further out the mirroring repeats.
    """
    if size == 1:
        return torch.zeros_like(positions)
    period = 2 * (size - 1)
    folded = positions.remainder(period)
    return torch.where(folded < size, folded, period - folded)


def msst_index(
    start: int, count: int, input_length: int, tail: str, length: int
) -> torch.Tensor | None:
    """Track samples an MSST chunk reads, or None when it is the plain slice.

    The chunk is the ``count`` samples from ``start`` of the track mirrored at its ends;
    with ``tail="reflect"`` it is then mirrored about its own last sample up to
    ``input_length`` (``"constant"``: the rest is zeros, added by the caller).
    """
    span = input_length if tail == "reflect" else count
    if start >= 0 and start + count <= length and span == count:
        return None
    local = torch.arange(span)
    local = torch.where(local < count, local, 2 * (count - 1) - local)
    return reflect_index(start + local, length)


@dataclass
class Chunk:
    start: int  # first output sample, in track coordinates (negative inside a shift)
    length: int  # output samples kept
    input_start: int  # first input sample fed to the network, track coordinates
    input_length: int  # samples fed to the network
    window: torch.Tensor  # weight of output sample i of the chunk: window[i], i < length
    source_start: int  # lowest track sample the input reads
    # MSST framing: the input is ``length`` samples mirrored at the track's ends, padded to
    # ``input_length`` by ``tail`` ("reflect" or "constant"), and the output's first
    # ``length`` samples are kept. None (Demucs): zeros outside the track, centre-trimmed.
    tail: str | None = None
    # MDX framing: the output is aligned with the input and its first ``length`` samples are
    # kept (the input is still the plain slice, zeros outside the track).
    head: bool = False

    def read(self, buffer: InputSource) -> torch.Tensor:
        """The network input ``[C, input_length]``."""
        if self.tail is None:
            return buffer.get(self.input_start, self.input_length)
        return buffer.get_mirrored(self.input_start, self.length, self.input_length, self.tail)

    def kept(self, out: torch.Tensor) -> torch.Tensor:
        """The ``length`` output samples this chunk contributes, from ``out [..., T']``."""
        if self.tail is None and not self.head:
            return center_trim(out, self.length)
        if out.shape[-1] < self.length:
            raise ValueError(f"network returned {out.shape[-1]} samples, fewer than {self.length}")
        return out[..., : self.length]


def _segment(model: SeparationModel, options: EngineOptions) -> int:
    if options.segment is None:
        return model.segment
    return max(1, int(options.segment * model.samplerate))


def _demucs_plan(
    model: SeparationModel, length: int, delay: int, options: EngineOptions
) -> list[Chunk]:
    """Chunk grid of ``demucs.apply.apply_model`` over ``length`` samples delayed by ``delay``."""
    segment = _segment(model, options)
    overlap = model.overlap if options.overlap is None else options.overlap
    stride = max(1, int((1 - overlap) * segment))
    window = chunk_window(model.window, segment, model.transition_power)
    virtual = length + delay
    chunks = []
    for offset in range(0, virtual, stride):
        size = min(segment, virtual - offset)
        need = model.valid_length(size, segment)
        start = offset - delay
        first = start - (need - size) // 2
        chunks.append(Chunk(start, size, first, need, window, first))
    return chunks


def _msst_plan(
    model: SeparationModel, length: int, delay: int, options: EngineOptions
) -> list[Chunk]:
    """Chunk grid of MSST's ``demix`` over ``length`` samples delayed by ``delay``."""
    chunk = _segment(model, options)
    if options.overlap is None:
        step = max(1, chunk // max(1, model.num_overlap))
    else:
        step = max(1, round(chunk * (1 - options.overlap)))
    border = chunk - step
    # demix mirrors the track only when it is longer than both borders together.
    pad = border if border > 0 and length > 2 * border else 0
    fade = msst_fade_length(chunk, step)
    windows = {
        (fade_in, fade_out): fade_window(chunk, fade, fade_in=fade_in, fade_out=fade_out)
        for fade_in in (False, True)
        for fade_out in (False, True)
    }
    virtual = length + 2 * pad + delay
    chunks = []
    for offset in range(0, virtual, step):
        count = min(chunk, virtual - offset)
        start = offset - pad - delay
        if start >= length or start + count <= 0:
            # Wholly in a mirrored border: demix crops all of its output, so it is not run
            # (the others keep the windows they have in demix's full grid).
            continue
        tail = "reflect" if count > chunk // 2 else "constant"
        window = windows[offset > 0, offset + step < virtual]
        index = msst_index(start, count, chunk, tail, length)
        source = start if index is None else int(index.min())
        chunks.append(Chunk(start, count, start, chunk, window, source, tail))
    return chunks


def _mdx_plan(
    model: SeparationModel, length: int, delay: int, options: EngineOptions
) -> list[Chunk]:
    """Chunk grid of UVR's MDX-Net ``demix`` over ``length`` samples delayed by ``delay``.

    ``model.valid_length(segment, segment)`` rounds the segment to a chunk the network's
    STFT frames fit; ``model.trim`` is the zeros ``demix`` puts before the track.
    """
    chunk = model.valid_length(_segment(model, options), _segment(model, options))
    trim = model.trim
    generated = chunk - 2 * trim
    if generated <= 0:
        raise ValueError(f"a chunk of {chunk} samples is too short for a trim of {trim}")
    overlap = model.overlap if options.overlap is None else options.overlap
    step = max(1, int((1 - overlap) * chunk))
    virtual = length + delay
    padded = trim + virtual + generated + trim - virtual % generated
    windows: dict[int, torch.Tensor] = {}
    chunks = []
    for offset in range(0, padded, step):
        size = min(chunk, padded - offset)
        if size not in windows:
            windows[size] = (
                torch.hann_window(size, periodic=False, dtype=torch.float64).float()
                if overlap != 0
                else torch.ones(size)
            )
        start = offset - trim - delay
        chunks.append(Chunk(start, size, start, chunk, windows[size], start, head=True))
    return chunks


def _uvr_plan(
    model: SeparationModel, length: int, delay: int, options: EngineOptions
) -> list[Chunk]:
    """Chunk grid of audio-separator's RoFormer ``demix`` over ``length`` samples delayed
    by ``delay``."""
    chunk = _segment(model, options)
    if options.overlap is None:
        step = max(1, chunk // max(1, model.num_overlap))
    else:
        step = max(1, round(chunk * (1 - options.overlap)))
    virtual = length + delay
    offsets = []
    for offset in range(0, virtual, step):
        if offset + chunk >= virtual:
            tail = max(virtual - chunk, 0)
            if not offsets or offsets[-1] != tail:
                offsets.append(tail)
            break
        offsets.append(offset)
    window = torch.hamming_window(chunk, periodic=False, dtype=torch.float64).float()
    chunks = []
    for offset in offsets:
        size = min(chunk, virtual - offset)
        start = offset - delay
        chunks.append(Chunk(start, size, start, size, window[:size], start, head=True))
    return chunks


def _msst_demucs_plan(
    model: SeparationModel, length: int, delay: int, options: EngineOptions
) -> list[Chunk]:
    """Chunk grid of MSST's ``demix`` for HTDemucs over ``length`` samples delayed by
    ``delay``."""
    chunk = _segment(model, options)
    if options.overlap is None:
        step = max(1, chunk // max(1, model.num_overlap))
    else:
        step = max(1, round(chunk * (1 - options.overlap)))
    window = torch.ones(chunk)
    virtual = length + delay
    chunks = []
    for offset in range(0, virtual, step):
        start = offset - delay
        size = min(chunk, virtual - offset)
        chunks.append(Chunk(start, size, start, chunk, window, start, head=True))
    return chunks


_PLANS = {
    "demucs": _demucs_plan,
    "msst": _msst_plan,
    "mdx": _mdx_plan,
    "uvr": _uvr_plan,
    "msst_demucs": _msst_demucs_plan,
}
"""Planner of each of :data:`dsu.archs.base.FRAMINGS`."""


def plan(model: SeparationModel, length: int, delay: int, options: EngineOptions) -> list[Chunk]:
    """Chunk grid of one pass over a track of ``length`` samples delayed by ``delay``, in
    ``options.framing`` or else the model's own."""
    framing = options.framing or model.framing
    planner = _PLANS.get(framing)
    if planner is None:
        raise ValueError(f"unknown framing {framing!r}; expected one of {FRAMINGS}")
    return planner(model, length, delay, options)
