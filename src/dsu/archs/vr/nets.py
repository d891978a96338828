"""UVR VR v5 networks: the cascaded ASPP U-Nets (``nets`` family).

Every v5 checkpoint is the same :class:`CascadedASPPNet` at one base width ``ch`` (16, 32
or 64) with an ASPP of 5, 6 or 7 branches, the 6-branch one with a fifth encoder level.
UVR names the variants by the checkpoint's size in KiB (31191, 33966, 123821, 129605,
537238, ...) and audio-separator guesses the variant from the file size; DSU reads it
from the checkpoint's own tensors (:func:`v5_shape`).

A spectrogram magnitude ``[B, 2, bins + 1, frames]`` goes in; the mask, the same shape,
comes out. The lower and upper halves of the bins pass a first U-Net each, then two
full-band U-Nets refine, each fed the input and the earlier outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

V5_OFFSET = 128
"""Frames the network needs on each side of the frames whose mask it gives."""

ASPP_DILATIONS = (4, 8, 16)


class ConvBnAct(nn.Module):
    """Conv2d (no bias), BatchNorm2d, activation: ``[B, nin, F, T] -> [B, nout, F', T']``."""

    def __init__(
        self,
        nin: int,
        nout: int,
        kernel: int = 3,
        stride: int = 1,
        pad: int = 1,
        dilation: int = 1,
        act: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(nin, nout, kernel, stride, pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(nout),
            act(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SeparableConvBnAct(nn.Module):
    """Depthwise conv, pointwise conv, BatchNorm2d, ReLU (shape-preserving here)."""

    def __init__(self, nin: int, nout: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(nin, nin, 3, 1, dilation, dilation=dilation, groups=nin, bias=False),
            nn.Conv2d(nin, nout, 1, bias=False),
            nn.BatchNorm2d(nout),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def crop_time(skip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Centre-crop ``skip`` ``[B, C, F, T]`` to ``like``'s frame count."""
    extra = skip.shape[3] - like.shape[3]
    if extra < 0:
        raise ValueError("a skip connection is shorter than the upsampled features")
    return skip[..., extra // 2 : extra // 2 + like.shape[3]] if extra else skip


class Encoder(nn.Module):
    """Two conv blocks, the second strided: returns ``(downsampled, skip)``."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(nin, nout, 3, 1, 1, act=nn.LeakyReLU)
        self.conv2 = ConvBnAct(nout, nout, 3, 2, 1, act=nn.LeakyReLU)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv1(x)
        return self.conv2(skip), skip


class Decoder(nn.Module):
    """Bilinear 2x upsampling, concatenated skip, one conv block."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv = ConvBnAct(nin, nout, 3, 1, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([x, crop_time(skip, x)], dim=1))


class Aspp(nn.Module):
    """Atrous spatial pyramid pooling: frequency-pooled, 1x1 and dilated branches.

    ``branches`` is 5, 6 or 7; the sixth and seventh are extra dilated convolutions at the
    largest dilation.
    """

    def __init__(self, nin: int, nout: int, branches: int = 5) -> None:
        super().__init__()
        d = ASPP_DILATIONS
        self.branches = branches
        self.conv1 = nn.Sequential(nn.AdaptiveAvgPool2d((1, None)), ConvBnAct(nin, nin, 1, 1, 0))
        self.conv2 = ConvBnAct(nin, nin, 1, 1, 0)
        self.conv3 = SeparableConvBnAct(nin, nin, d[0])
        self.conv4 = SeparableConvBnAct(nin, nin, d[1])
        self.conv5 = SeparableConvBnAct(nin, nin, d[2])
        if branches >= 6:
            self.conv6 = SeparableConvBnAct(nin, nin, d[2])
        if branches >= 7:
            self.conv7 = SeparableConvBnAct(nin, nin, d[2])
        self.bottleneck = nn.Sequential(ConvBnAct(nin * branches, nout, 1, 1, 0), nn.Dropout2d(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.conv1(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        feats = [pooled, self.conv2(x), self.conv3(x), self.conv4(x), self.conv5(x)]
        if self.branches >= 6:
            feats.append(self.conv6(x))
        if self.branches >= 7:
            feats.append(self.conv7(x))
        return self.bottleneck(torch.cat(feats, dim=1))


class AsppUNet(nn.Module):
    """A 4-level (or 5-level) U-Net around an ASPP: ``[B, nin, F, T] -> [B, ch, F, T]``."""

    def __init__(self, nin: int, ch: int, branches: int = 5, levels: int = 4) -> None:
        super().__init__()
        self.levels = levels
        self.enc1 = Encoder(nin, ch)
        self.enc2 = Encoder(ch, ch * 2)
        self.enc3 = Encoder(ch * 2, ch * 4)
        self.enc4 = Encoder(ch * 4, ch * 8)
        deepest = ch * 8
        if levels == 5:
            self.enc5 = Encoder(ch * 8, ch * 16)
            deepest = ch * 16
        self.aspp = Aspp(deepest, deepest * 2, branches)
        if levels == 5:
            self.dec5 = Decoder(ch * (16 + 32), ch * 16)
        self.dec4 = Decoder(ch * (8 + 16), ch * 8)
        self.dec3 = Decoder(ch * (4 + 8), ch * 4)
        self.dec2 = Decoder(ch * (2 + 4), ch * 2)
        self.dec1 = Decoder(ch * (1 + 2), ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, s1 = self.enc1(x)
        h, s2 = self.enc2(h)
        h, s3 = self.enc3(h)
        h, s4 = self.enc4(h)
        if self.levels == 5:
            h, s5 = self.enc5(h)
            h = self.dec5(self.aspp(h), s5)
        else:
            h = self.aspp(h)
        h = self.dec4(h, s4)
        h = self.dec3(h, s3)
        h = self.dec2(h, s2)
        return self.dec1(h, s1)


@dataclass(frozen=True)
class V5Shape:
    """A v5 variant: base width, ASPP branches and U-Net depth."""

    ch: int
    branches: int = 5
    levels: int = 4


def v5_shape(state: Mapping[str, torch.Tensor]) -> V5Shape:
    """The variant a v5 state dict holds, from its tensors' names and shapes.

    Raises:
        KeyError: the state dict is not a v5 cascaded ASPP net.
    """
    ch = state["stg1_low_band_net.enc1.conv1.conv.0.weight"].shape[0]
    prefix = "stg1_low_band_net.aspp."
    branches = (
        7
        if any(k.startswith(prefix + "conv7.") for k in state)
        else (6 if any(k.startswith(prefix + "conv6.") for k in state) else 5)
    )
    levels = 5 if any(k.startswith("stg1_low_band_net.enc5.") for k in state) else 4
    return V5Shape(int(ch), branches, levels)


class CascadedASPPNet(nn.Module):
    """UVR v5's three-stage network: ``[B, 2, bins + 1, T] -> mask [B, 2, bins + 1, T]``.

    ``bins`` is the band parameters' ``bins``; the top row is dropped on the way in and
    the mask's last row repeated on the way out. ``T`` must be a multiple of
    ``2 ** levels``.
    """

    offset = V5_OFFSET

    def __init__(self, bins: int, shape: V5Shape) -> None:
        super().__init__()
        c, b, lv = shape.ch, shape.branches, shape.levels
        self.max_bin = bins
        self.output_bin = bins + 1
        self.stg1_low_band_net = AsppUNet(2, c, b, lv)
        self.stg1_high_band_net = AsppUNet(2, c, b, lv)
        self.stg2_bridge = ConvBnAct(2 + c, c // 2, 1, 1, 0)
        self.stg2_full_band_net = AsppUNet(c // 2, c, b, lv)
        self.stg3_bridge = ConvBnAct(2 + 2 * c, c, 1, 1, 0)
        self.stg3_full_band_net = AsppUNet(c, 2 * c, b, lv)
        self.out = nn.Conv2d(2 * c, 2, 1, bias=False)
        # Training-only heads, kept so the public checkpoints load strictly.
        self.aux1_out = nn.Conv2d(c, 2, 1, bias=False)
        self.aux2_out = nn.Conv2d(c, 2, 1, bias=False)

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        x = mag[:, :, : self.max_bin]
        half = x.shape[2] // 2
        aux1 = torch.cat(
            [self.stg1_low_band_net(x[:, :, :half]), self.stg1_high_band_net(x[:, :, half:])],
            dim=2,
        )
        aux2 = self.stg2_full_band_net(self.stg2_bridge(torch.cat([x, aux1], dim=1)))
        h = self.stg3_full_band_net(self.stg3_bridge(torch.cat([x, aux1, aux2], dim=1)))
        mask = torch.sigmoid(self.out(h))
        return F.pad(mask, (0, 0, 0, self.output_bin - mask.shape[2]), mode="replicate")
