"""U-Net with TDC blocks (Choi et al., ISMIR 2020): a complex-as-channels vocals model.

Loads ``cac_tdc_17_vocals_top1.pt`` from ws-choi/ISMIR2020_U_Nets_SVS as published
(``../shared/models/tdc-vocals-ismir2020/SPEC.md`` is the reference for every detail).
The network maps the stereo STFT ``[B, 4, 1025, T]`` (L.re, L.im, R.re, R.im) to the
vocals' STFT directly (no mask); accompaniment is the mixture minus the vocals.

Framing: the original cuts the track into 64-frame segments of 66,560 samples that
advance by 56,560 and keeps each segment's centre (5,000 samples trimmed per side), with
no cross-fade. That is exactly the engine's chunking with ``segment = 56,560``,
``overlap = 0``, a rect window and ``valid_length(n) = n + 10,000``: the engine's chunks
start at the same positions, the context it adds is the trim, and zeros past the track
end are the original's padding. ``framing="overlap_add"`` keeps the same segments but
lets the engine cross-fade overlapping chunks with its triangle window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dsu.archs.base import SeparationModel
from dsu.errors import BadRequest, RegistryError, UnsupportedModel
from dsu.registry.entry import ModelEntry

SAMPLERATE = 44_100
STEMS = ["vocals", "accompaniment"]
N_FFT = 2048
HOP = 1024
FRAMES = 64
SEGMENT = HOP * (FRAMES + 1)  # 66,560 input samples: exactly 64 frames with center=False
TRIM = 5_000
STEP = SEGMENT - 2 * TRIM  # 56,560 output samples kept per segment
SEGMENTS_PER_PASS = 16  # the original's batch; bounds memory for long chunks
FRAMINGS = ("original", "overlap_add")


class FreqConv(nn.Conv1d):
    """A Conv1d along frequency applied to every frame of ``[B, C, T, F]``.

    Run as a (1, k) Conv2d: the same arithmetic as folding T into the batch, without the
    copies, and about twice as fast on CPU in channels-last layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x, self.weight.unsqueeze(2), self.bias, (1, *self.stride), (0, *self.padding)
        )


class FreqConvTranspose(nn.ConvTranspose1d):
    """A ConvTranspose1d along frequency applied to every frame of ``[B, C, T, F]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(
            x, self.weight.unsqueeze(2), self.bias, (1, *self.stride), (0, *self.padding)
        )


def frame_bn(dim: int) -> nn.BatchNorm2d:
    """The original's per-frame BatchNorm1d: in eval mode both kinds are the same
    per-channel affine map with the same keys, and 2d takes ``[B, C, T, F]`` as it is."""
    return nn.BatchNorm2d(dim)


class TDC(nn.Module):
    """Time-distributed dense convolutions: a dense block along frequency, per frame.

    Layer ``l`` sees ``[y_{l-1}, ..., y_0, x]`` (newest first) and adds ``growth``
    channels; the block returns only the last layer's output (no residual).
    """

    def __init__(self, dim_in: int, growth: int = 24, layers: int = 5, kernel: int = 3):
        super().__init__()
        self.growth = growth
        self.H = nn.ModuleList(
            nn.Sequential(
                FreqConv(dim_in + growth * i, growth, kernel, padding=kernel // 2),
                frame_bn(growth),
                nn.ReLU(),
            )
            for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, T, F] -> [B, growth, T, F]``."""
        b, c, t, f = x.shape
        # One buffer filled right to left instead of a torch.cat per layer: layer l reads
        # its tail [y_{l-1}, ..., y_0, x], already in the newest-first order.
        stack = torch.empty(
            b,
            c + self.growth * (len(self.H) - 1),
            t,
            f,
            dtype=x.dtype,
            device=x.device,
            memory_format=torch.channels_last,
        )
        stack[:, -c:] = x
        start = stack.shape[1] - c
        for layer in self.H:
            y = layer(stack[:, start:])
            if start > 0:
                stack[:, start - self.growth : start] = y
                start -= self.growth
        return y


class FreqResample(nn.Module):
    """Halve or double the frequency axis per frame with a stride-2 (transposed) conv, then BN."""

    def __init__(self, conv: FreqConv | FreqConvTranspose):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, F] -> [B, C, T, F / 2 or 2 F]``."""
        return self.bn(self.conv(x))


class TDCUNet(nn.Module):
    """The 17-block U-Net: 8 TDC encoders, a TDC mid block, 8 TDC decoders.

    Attribute names and registration order follow the checkpoint's keys, so
    ``state_dict()`` lists them as the published file does.
    """

    def __init__(self, channels: int = 4, dim: int = 24, depth: int = 8):
        super().__init__()
        self.first_conv = nn.Sequential(
            nn.Conv2d(channels, dim, kernel_size=(2, 1)), nn.BatchNorm2d(dim), nn.ReLU()
        )
        self.encoders = nn.ModuleList(TDC(dim) for _ in range(depth))
        self.downsampling = nn.ModuleList(
            FreqResample(FreqConv(dim, dim, 2, stride=2)) for _ in range(depth)
        )
        self.decoders = nn.ModuleList(TDC(2 * dim) for _ in range(depth))
        self.upsampling = nn.ModuleList(
            FreqResample(FreqConvTranspose(dim, dim, 2, stride=2)) for _ in range(depth)
        )
        self.final_conv = nn.Sequential(
            nn.Conv2d(dim, channels, kernel_size=(2, 1), padding=(1, 0)), nn.Identity()
        )
        self.mid_block = TDC(dim)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """Mixture STFT ``[B, 4, 1025, T]`` -> vocals STFT ``[B, 4, 1025, T]``.

        The (2, 1) first conv merges neighbouring bins (1025 -> 1024 = 2^10, so eight
        halvings reach 4 bins); the last conv pads and expands back to 1025.
        """
        h = rearrange(self.first_conv(spec), "b c f t -> b c t f")
        h = h.contiguous(memory_format=torch.channels_last)
        skips = []
        for encode, down in zip(self.encoders, self.downsampling, strict=True):
            h = encode(h)
            skips.append(h)
            h = down(h)
        h = self.mid_block(h)
        for up, decode in zip(self.upsampling, self.decoders, strict=True):
            h = decode(torch.cat((up(h), skips.pop()), dim=1))
        return self.final_conv(rearrange(h, "b c t f -> b c f t").contiguous())


def stft(audio: torch.Tensor) -> torch.Tensor:
    """``[B, C, L]`` float32 -> complex-as-channels ``[B, 2C, 1025, T]``.

    ``T = 1 + (L - 2048) // 1024`` frames. Periodic Hann, no centring, no normalisation
    (librosa's ``stft(center=False)``).
    """
    window = torch.hann_window(N_FFT, device=audio.device)
    spec = torch.stft(
        rearrange(audio, "b c l -> (b c) l"),
        N_FFT,
        HOP,
        window=window,
        center=False,
        return_complex=True,
    )
    return rearrange(torch.view_as_real(spec), "(b c) f t z -> b (c z) f t", b=audio.shape[0])


def _overlap_add(frames: torch.Tensor) -> torch.Tensor:
    """``[..., T, 2 * HOP]`` frames at hop HOP -> ``[..., HOP * (T + 1)]`` summed."""
    first, second = frames[..., :HOP], frames[..., HOP:]
    out = F.pad(first.flatten(-2), (0, HOP))
    return out + F.pad(second.flatten(-2), (HOP, 0))


def istft(spec: torch.Tensor) -> torch.Tensor:
    """Complex-as-channels ``[B, 2C, 1025, T]`` -> ``[B, C, 1024 * (T + 1)]``.

    librosa's ``istft(center=False)``: irfft per frame (which ignores the imaginary parts
    of the DC and Nyquist bins), Hann synthesis window, overlap-add, and division by the
    window-square sum where it is above float32 tiny. ``torch.istft`` refuses this
    configuration (the sum is 0 at sample 0), hence the manual overlap-add.
    """
    window = torch.hann_window(N_FFT, device=spec.device)
    z = torch.complex(spec[:, 0::2], spec[:, 1::2])
    frames = torch.fft.irfft(rearrange(z, "b c f t -> b c t f"), n=N_FFT) * window
    norm = _overlap_add(window.square().expand(spec.shape[-1], N_FFT))
    audio = _overlap_add(frames)
    return torch.where(norm > torch.finfo(norm.dtype).tiny, audio / norm, audio)


@dataclass(frozen=True)
class TDCOptions:
    """Inference settings, from the registry entry's ``options`` and the loader's kwargs.

    Attributes:
        framing: ``original`` (hard-concatenated trimmed segments, as published) or
            ``overlap_add`` (the same segments cross-faded by the engine's triangle).
        overlap: chunk overlap for ``overlap_add``; ignored by ``original`` (always 0).
    """

    framing: str = "original"
    overlap: float = 0.5

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise BadRequest(
                f"tdc_unet framing must be one of {', '.join(FRAMINGS)}, got {self.framing!r}"
            )
        if not 0.0 <= self.overlap < 1.0:
            raise BadRequest(f"tdc_unet overlap must be in [0, 1), got {self.overlap}")


class TDCVocals(SeparationModel):
    """The uniform model object: stereo mixture -> (vocals, accompaniment)."""

    samplerate = SAMPLERATE
    channels = 2
    transition_power = 1.0

    def __init__(self, net: TDCUNet, options: TDCOptions | None = None):
        self.net = net.eval()
        self.options = options or TDCOptions()
        self.stems = list(STEMS)
        self.segment = STEP
        self.normalize = False
        if self.options.framing == "original":
            self.overlap, self.window = 0.0, "rect"
        else:
            self.overlap, self.window = self.options.overlap, "triangle"

    def valid_length(self, length: int, segment: int) -> int:
        """The chunk plus the trimmed context on each side, whatever the segment."""
        return length + 2 * TRIM

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> TDCVocals:
        self.net.to(device, dtype)
        return self

    def vocals(self, mix: torch.Tensor) -> torch.Tensor:
        """Vocals of the centre of ``mix``, by the original framing.

        Args:
            mix: ``[B, 2, TRIM + n + TRIM]``: ``n`` samples with their context.

        Returns:
            ``[B, 2, n]``: segments of SEGMENT samples advancing by STEP, each trimmed
            by TRIM per side and concatenated; a short last segment is padded with zeros
            (past a track's end, which is where the engine puts one, they are the
            original's padding).
        """
        b = mix.shape[0]
        n = mix.shape[-1] - 2 * TRIM
        count = max(1, math.ceil(n / STEP))
        mix = F.pad(mix, (0, count * STEP + 2 * TRIM - mix.shape[-1]))
        segments = rearrange(mix.unfold(-1, SEGMENT, STEP), "b c k l -> (b k) c l")
        dtype = next(self.net.parameters()).dtype
        kept = []
        for part in segments.split(SEGMENTS_PER_PASS):
            # FFTs stay in float32 whatever the engine's autocast; only the network follows it.
            with torch.autocast(part.device.type, enabled=False):
                spec = stft(part.float())
            est = self.net(spec.to(dtype)).float()
            with torch.autocast(part.device.type, enabled=False):
                kept.append(istft(est)[..., TRIM : TRIM + STEP])
        return rearrange(torch.cat(kept), "(b k) c l -> b c (k l)", b=b)[..., :n]

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``[B, 2, n + 2 * TRIM] -> [B, 2 stems, 2, n + 2 * TRIM]``.

        Vocals are zero over the context (the engine trims it); accompaniment is
        mixture - vocals everywhere.
        """
        vocals = F.pad(self.vocals(mix), (TRIM, TRIM)).to(mix.dtype)
        return torch.stack((vocals, mix - vocals), dim=1)


def _read_state(path: Any) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise RegistryError(f"tdc_unet weights not found: {path}") from exc
    except Exception as exc:
        raise UnsupportedModel(f"{path} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise UnsupportedModel(f"{path} holds a {type(state).__name__}, not a tdc_unet state_dict")
    return state


def load(
    entry: ModelEntry,
    *,
    framing: str | None = None,
    overlap: float | None = None,
    **_: Any,
) -> TDCVocals:
    """Build the network and load the entry's checkpoint strictly (every key and shape).

    Args:
        entry: a registry entry with one weights file.
        framing: ``original`` (default) or ``overlap_add``; overrides
            ``entry.options["framing"]``.
        overlap: overlap of the ``overlap_add`` framing (default 0.5); overrides
            ``entry.options["overlap"]``.
        **_: options meant for other families (the family table passes the same to all).

    Raises:
        RegistryError: no or several weight files, stems other than vocals/accompaniment.
        UnsupportedModel: the file is not a tdc_unet checkpoint (keys or shapes differ).
        BadRequest: an unknown framing or an overlap outside [0, 1).
    """
    if len(entry.weights) != 1:
        raise RegistryError(f"{entry.name}: tdc_unet needs exactly one weights file")
    if entry.stems and list(entry.stems) != STEMS:
        raise RegistryError(f"{entry.name}: tdc_unet stems are {STEMS}, not {list(entry.stems)}")
    settings = {**entry.options}
    if framing is not None:
        settings["framing"] = framing
    if overlap is not None:
        settings["overlap"] = overlap
    unknown = set(settings) - {"framing", "overlap"}
    if unknown:
        raise RegistryError(f"{entry.name}: unknown tdc_unet options {sorted(unknown)}")
    options = TDCOptions(**settings)
    net = TDCUNet()
    try:
        net.load_state_dict(_read_state(entry.weights[0]), strict=True)
    except RuntimeError as exc:
        raise UnsupportedModel(
            f"{entry.weights[0]} does not match the tdc_unet layout: {exc}"
        ) from exc
    return TDCVocals(net, options)
