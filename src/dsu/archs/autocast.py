"""Where a network must stay in fp32 whatever the compute precision.

Families run under fp16/bf16 autocast on request; STFTs, norms, rotary angles and masks
lose too much there, so their modules wrap those ops in :func:`float32_region`.
"""

from __future__ import annotations

import contextlib

import torch


def float32_region(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Suspend autocast on ``device``: the enclosed ops run in their inputs' dtype (cast
    them with ``.float()``)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
