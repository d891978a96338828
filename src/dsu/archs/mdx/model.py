"""The uniform model object for an MDX-Net ``.onnx`` network, as UVR runs it.

One chunk of ``hop * (frames - 1)`` samples goes through the STFT (torch, fp32), its
lowest three bins zeroed, through the ONNX graph (optionally also on the negated
spectrogram, averaged: UVR's denoise) and back through the iSTFT; that is the primary
stem. The secondary stem is the mixture minus the primary times ``compensate``, as
audio-separator's ``MDXSeparator.separate`` computes it; it is formed chunk by chunk,
which the overlap-add turns into exactly that, since the windows sum the mixture back.
The engine cuts the track with the ``"mdx"`` framing (UVR's ``demix``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dsu.archs.base import SeparationModel
from dsu.archs.mdx.onnx_runtime import OnnxNet
from dsu.archs.mdx.params import CHANNELS, DEFAULT_OVERLAP, FROZEN_BINS, SAMPLERATE, MdxParams
from dsu.archs.mdx.stft import to_spec, to_wave
from dsu.errors import BadRequest


class MdxModel(SeparationModel):
    """An MDX-Net network with UVR's spectrogram, denoise and secondary stem.

    Attributes:
        params: the model's UVR parameters.
        denoise: also run the network on the negated spectrogram and average.
        trim: zeros the ``"mdx"`` framing puts before the track (``n_fft // 2``).
    """

    framing = "mdx"

    def __init__(self, net: OnnxNet, params: MdxParams, *, denoise: bool = False) -> None:
        self.net = net
        self.params = params
        self.denoise = denoise
        self.samplerate = SAMPLERATE
        self.channels = CHANNELS
        self.stems = params.stems
        self.segment = params.chunk
        self.overlap = DEFAULT_OVERLAP
        self.trim = params.trim
        self.device = torch.device("cpu")

    def valid_length(self, length: int, segment: int) -> int:
        """The chunk the ``"mdx"`` framing cuts for a segment of ``length`` samples: a whole
        number of hops (``hop * (frames - 1)``), at least one hop more than UVR trims.

        Raises:
            BadRequest: the segment leaves nothing between the two trims.
        """
        hop = self.params.hop_length
        chunk = hop * math.ceil(length / hop)
        if chunk <= 2 * self.trim:
            shortest = (2 * self.trim + hop) / self.samplerate
            raise BadRequest(
                f"segment {length / self.samplerate:.3f} s is too short for this MDX-Net "
                f"model's FFT of {self.params.n_fft}; use at least {shortest:.2f} s"
            )
        return chunk

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate chunks.

        Args:
            mix: ``[B, 2, T]`` with ``T`` a multiple of the hop (1024).

        Returns:
            ``[B, 2, 2, T]``: the primary stem, then the secondary.

        Raises:
            BadRequest: the graph takes a fixed number of frames and ``T`` is another.
        """
        params = self.params
        frames = mix.shape[-1] // params.hop_length + 1
        if not self.net.accepts(frames):
            native = params.chunk / self.samplerate
            raise BadRequest(
                f"this MDX-Net model's ONNX graph takes chunks of exactly {params.dim_t} STFT "
                f"frames ({native:.2f} s); leave the segment out (asked: {frames} frames)"
            )
        planes = to_spec(mix, params.n_fft, params.hop_length, params.dim_f)
        planes[:, :, :FROZEN_BINS] = 0
        spec = planes.cpu().numpy()
        estimate = self.net(spec)
        if self.denoise:
            estimate = self.net(-spec) * -0.5 + estimate * 0.5
        primary = to_wave(
            torch.from_numpy(np.ascontiguousarray(estimate)).to(mix.device),
            params.n_fft,
            params.hop_length,
        )
        secondary = mix.float() - primary * params.compensate
        return torch.stack([primary, secondary], 1)

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> MdxModel:
        """Run on ``device``'s ONNX Runtime provider; the graph stays fp32 whatever
        ``dtype`` (ONNX weights are fixed at export)."""
        self.device = torch.device(device)
        self.net.to(self.device)
        return self
