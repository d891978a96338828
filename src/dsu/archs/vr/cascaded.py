"""UVR VR v5.1 network: ``CascadedNet`` (U-Nets with a BiLSTM on the second decoder level).

Widths come from the model data (``nout``, ``nout_lstm``) or, equally, from the
checkpoint's tensors (:func:`v51_widths`); never from the file size. A magnitude
``[B, 2, bins + 1, T]`` goes in and a mask of the same shape comes out; ``T`` must be a
multiple of 16.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.vr.nets import ConvBnAct, crop_time

V51_OFFSET = 64
"""Frames the network needs on each side of the frames whose mask it gives."""

ASPP_DILATIONS = (4, 8, 12)


class Encoder(nn.Module):
    """Strided conv block then a plain one: ``[B, nin, F, T] -> [B, nout, F/2, T/2]``."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(nin, nout, 3, 2, 1, act=nn.LeakyReLU)
        self.conv2 = ConvBnAct(nout, nout, 3, 1, 1, act=nn.LeakyReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class Decoder(nn.Module):
    """Bilinear 2x upsampling, concatenated skip, one conv block."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(nin, nout, 3, 1, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv1(torch.cat([x, crop_time(skip, x)], dim=1))


class Aspp(nn.Module):
    """Pooled, 1x1 and three dilated conv branches, fused by a 1x1 conv (dropout in training)."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        d = ASPP_DILATIONS
        self.conv1 = nn.Sequential(nn.AdaptiveAvgPool2d((1, None)), ConvBnAct(nin, nout, 1, 1, 0))
        self.conv2 = ConvBnAct(nin, nout, 1, 1, 0)
        self.conv3 = ConvBnAct(nin, nout, 3, 1, d[0], d[0])
        self.conv4 = ConvBnAct(nin, nout, 3, 1, d[1], d[1])
        self.conv5 = ConvBnAct(nin, nout, 3, 1, d[2], d[2])
        self.bottleneck = ConvBnAct(nout * 5, nout, 1, 1, 0)
        self.dropout = nn.Dropout2d(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.conv1(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        feats = [pooled, self.conv2(x), self.conv3(x), self.conv4(x), self.conv5(x)]
        return self.dropout(self.bottleneck(torch.cat(feats, dim=1)))


class LstmModule(nn.Module):
    """A 1-channel projection read as a sequence over frames by a BiLSTM.

    ``[B, nin_conv, bins, T] -> [B, 1, bins, T]`` (``bins == nin_lstm``).
    """

    def __init__(self, nin_conv: int, nin_lstm: int, nout_lstm: int) -> None:
        super().__init__()
        self.conv = ConvBnAct(nin_conv, 1, 1, 1, 0)
        self.lstm = nn.LSTM(input_size=nin_lstm, hidden_size=nout_lstm // 2, bidirectional=True)
        self.dense = nn.Sequential(
            nn.Linear(nout_lstm, nin_lstm), nn.BatchNorm1d(nin_lstm), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, bins, frames = x.shape
        seq = self.conv(x)[:, 0].permute(2, 0, 1)  # [T, B, bins]
        seq, _ = self.lstm(seq)
        out = self.dense(seq.reshape(-1, seq.shape[-1]))  # [T * B, bins]
        return out.reshape(frames, batch, 1, bins).permute(1, 2, 3, 0)


class BaseNet(nn.Module):
    """Five-level U-Net with ASPP and an LSTM branch: ``[B, nin, F, T] -> [B, nout, F, T]``."""

    def __init__(self, nin: int, nout: int, nin_lstm: int, nout_lstm: int) -> None:
        super().__init__()
        self.enc1 = ConvBnAct(nin, nout, 3, 1, 1)
        self.enc2 = Encoder(nout, nout * 2)
        self.enc3 = Encoder(nout * 2, nout * 4)
        self.enc4 = Encoder(nout * 4, nout * 6)
        self.enc5 = Encoder(nout * 6, nout * 8)
        self.aspp = Aspp(nout * 8, nout * 8)
        self.dec4 = Decoder(nout * (6 + 8), nout * 6)
        self.dec3 = Decoder(nout * (4 + 6), nout * 4)
        self.dec2 = Decoder(nout * (2 + 4), nout * 2)
        self.lstm_dec2 = LstmModule(nout * 2, nin_lstm, nout_lstm)
        self.dec1 = Decoder(nout * (1 + 2) + 1, nout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        h = self.aspp(self.enc5(e4))
        h = self.dec4(h, e4)
        h = self.dec3(h, e3)
        h = self.dec2(h, e2)
        h = torch.cat([h, self.lstm_dec2(h)], dim=1)
        return self.dec1(h, e1)


def v51_widths(state: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """``(nout, nout_lstm)`` of a v5.1 state dict, from its tensor shapes.

    Raises:
        KeyError: the state dict is not a CascadedNet.
    """
    nout = state["out.weight"].shape[1]
    hidden = state["stg3_full_band_net.lstm_dec2.lstm.weight_hh_l0"].shape[1]
    return int(nout), int(hidden * 2)


class CascadedNet(nn.Module):
    """UVR v5.1: two band-split stages and a full-band stage.

    ``[B, 2, bins + 1, T] -> mask [B, 2, bins + 1, T]``; the top row is dropped on the way in
    and the mask's last row repeated on the way out.
    """

    offset = V51_OFFSET

    def __init__(self, bins: int, nout: int = 32, nout_lstm: int = 128) -> None:
        super().__init__()
        self.max_bin = bins
        self.output_bin = bins + 1
        nin_lstm = bins // 2
        self.stg1_low_band_net = nn.Sequential(
            BaseNet(2, nout // 2, nin_lstm // 2, nout_lstm),
            ConvBnAct(nout // 2, nout // 4, 1, 1, 0),
        )
        self.stg1_high_band_net = BaseNet(2, nout // 4, nin_lstm // 2, nout_lstm // 2)
        self.stg2_low_band_net = nn.Sequential(
            BaseNet(nout // 4 + 2, nout, nin_lstm // 2, nout_lstm),
            ConvBnAct(nout, nout // 2, 1, 1, 0),
        )
        self.stg2_high_band_net = BaseNet(nout // 4 + 2, nout // 2, nin_lstm // 2, nout_lstm // 2)
        self.stg3_full_band_net = BaseNet(3 * nout // 4 + 2, nout, nin_lstm, nout_lstm)
        self.out = nn.Conv2d(nout, 2, 1, bias=False)
        # Training-only head, kept so the public checkpoints load strictly.
        self.aux_out = nn.Conv2d(3 * nout // 4, 2, 1, bias=False)

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        x = mag[:, :, : self.max_bin]
        half = x.shape[2] // 2
        low, high = x[:, :, :half], x[:, :, half:]
        l1 = self.stg1_low_band_net(low)
        h1 = self.stg1_high_band_net(high)
        l2 = self.stg2_low_band_net(torch.cat([low, l1], dim=1))
        h2 = self.stg2_high_band_net(torch.cat([high, h1], dim=1))
        aux1 = torch.cat([l1, h1], dim=2)
        aux2 = torch.cat([l2, h2], dim=2)
        h = self.stg3_full_band_net(torch.cat([x, aux1, aux2], dim=1))
        mask = torch.sigmoid(self.out(h))
        return F.pad(mask, (0, 0, 0, self.output_bin - mask.shape[2]), mode="replicate")
