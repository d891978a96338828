"""UVR's MDX-Net spectrogram: the STFT outside the ONNX graph, in torch, always in fp32.

A stereo chunk becomes four real planes (left real, left imaginary, right real, right
imaginary) of the lowest ``dim_f`` bins of a centred, Hann-windowed STFT; the network's
four planes go back the same way, the bins above ``dim_f`` set to zero.
"""

from __future__ import annotations

import torch


def _window(n_fft: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, device=device)


def to_spec(wave: torch.Tensor, n_fft: int, hop: int, dim_f: int) -> torch.Tensor:
    """Stereo audio to the network's input planes.

    Args:
        wave: ``[B, 2, T]``.

    Returns:
        ``[B, 4, dim_f, T // hop + 1]`` fp32: per channel its real then imaginary part.
    """
    batch, channels, length = wave.shape
    with torch.autocast(wave.device.type, enabled=False):
        spec = torch.stft(
            wave.float().reshape(batch * channels, length),
            n_fft=n_fft,
            hop_length=hop,
            window=_window(n_fft, wave.device),
            center=True,
            return_complex=True,
        )
    planes = torch.view_as_real(spec).permute(0, 3, 1, 2)  # [B*C, 2, F, frames]
    planes = planes.reshape(batch, channels * 2, *planes.shape[-2:])
    return planes[:, :, :dim_f].contiguous()


def to_wave(planes: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """The network's output planes back to stereo audio.

    Args:
        planes: ``[B, 4, dim_f, frames]`` as :func:`to_spec` lays them out.

    Returns:
        ``[B, 2, hop * (frames - 1)]`` fp32.
    """
    batch, four, dim_f, frames = planes.shape
    bins = n_fft // 2 + 1
    with torch.autocast(planes.device.type, enabled=False):
        full = torch.nn.functional.pad(planes.float(), (0, 0, 0, bins - dim_f))
        pairs = full.reshape(batch * four // 2, 2, bins, frames).permute(0, 2, 3, 1)
        wave = torch.istft(
            torch.view_as_complex(pairs.contiguous()),
            n_fft=n_fft,
            hop_length=hop,
            window=_window(n_fft, planes.device),
            center=True,
        )
    return wave.reshape(batch, four // 2, -1)
