"""BS-RoFormer HyperACE: BS-RoFormer whose mask estimators carry a convolutional
segmentation network with a hypergraph core (pymss-core's ``BSRoformerHyperACE``).

Each stem's mask estimator keeps BS-RoFormer's per-band MLPs and adds a dense estimate
of the same mask, :class:`~dsu.archs.roformer.hyperace_segm.SegmentationNet` (its layers
are in :mod:`dsu.archs.roformer.hyperace_segm` and
:mod:`dsu.archs.roformer.hyperace_blocks`).

:data:`MASK_MODES` say which estimates make the mask; pymss-core's default
(:data:`DEFAULT_MASK_MODE`) is the MLPs alone.

Module and parameter names are pymss-core's (``mask_estimators.<s>.segm.backbone...``),
so its state dicts and the published checkpoints load strictly; :func:`is_hyperace`
recognises a checkpoint by them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import accumulate

import torch

from dsu.archs.roformer.bands import MaskEstimator
from dsu.archs.roformer.bs_roformer import BSRoformer
from dsu.archs.roformer.config import BSRoformerConfig
from dsu.archs.roformer.hyperace_segm import SEGM_OUTPUTS, SegmentationNet
from dsu.errors import BadRequest, UnsupportedModel

FULL, NO_SEGM, SEGM_ONLY = "full", "no_segm", "segm_only"
MASK_MODES: tuple[str, ...] = (FULL, NO_SEGM, SEGM_ONLY)
"""What a mask is: MLP masks + segmentation masks, MLP masks alone, segmentation alone
(pymss-core's names)."""

DEFAULT_MASK_MODE = NO_SEGM
"""pymss-core's default: the segmentation network is loaded but not run."""

_SEGM_KEY = re.compile(r"mask_estimators\.\d+\.segm\.")


def is_hyperace(state_dict_keys: Iterable[str]) -> bool:
    """Whether a BS-RoFormer checkpoint is the HyperACE variant (its mask estimators hold
    a ``segm`` network). Works on keys with or without a ``module.`` prefix."""
    return any(_SEGM_KEY.search(key) for key in state_dict_keys)


# --- the mask estimator and the network -----------------------------------------------


class HyperACEMaskEstimator(MaskEstimator):
    """BS-RoFormer's mask estimator plus a :class:`SegmentationNet` (``segm``); which of
    the two make the mask is :attr:`mask_mode` (one of :data:`MASK_MODES`).

    The bands must be contiguous and disjoint (BS-RoFormer's): the dense estimate is laid
    out bin by bin and is reordered here into the band split's computation order.

    Shapes: ``[B, T, bands, dim]`` -> ``[B, T, sum(dims_in)]``, as
    :class:`~dsu.archs.roformer.bands.MaskEstimator`.
    """

    def __init__(
        self, dim: int, dims_in: Sequence[int], hidden_layers: int, mlp_expansion_factor: int = 4
    ) -> None:
        super().__init__(dim, dims_in, hidden_layers, mlp_expansion_factor)
        self.mask_mode = DEFAULT_MASK_MODE
        total = sum(self.dims_in)
        # The reference sizes the dense estimate for a stereo model (4 values per bin).
        self.segm = SegmentationNet(len(self.dims_in), dim, total // SEGM_OUTPUTS)
        self.segm_fits = total % SEGM_OUTPUTS == 0
        starts = [0, *accumulate(self.dims_in)]
        index = torch.cat(
            [torch.arange(starts[band], starts[band + 1]) for band in self.groups.order]
        )
        self.register_buffer(
            "segm_index", None if self.groups.is_natural else index, persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask_mode == NO_SEGM:
            return super().forward(x)
        dense = self.segm(x.permute(0, 3, 1, 2))  # [B, 4, T, bins]
        dense = dense.permute(0, 2, 3, 1).flatten(2)  # [B, T, bins * 4], bin-major
        if self.segm_index is not None:
            dense = dense.index_select(-1, self.segm_index)
        if self.mask_mode == SEGM_ONLY:
            return dense
        return super().forward(x) + dense


class BSRoformerHyperACE(BSRoformer):
    """BS-RoFormer with :class:`HyperACEMaskEstimator` s.

    Args:
        config: the BS-RoFormer hyperparameters (HyperACE adds none).
        mask_mode: one of :data:`MASK_MODES`.

    Shapes: ``forward(raw_audio [B, C, L]) -> [B, N, C, L]`` (``[B, C, L]`` for one
    stem), as :class:`~dsu.archs.roformer.bs_roformer.BSRoformer`.

    Raises:
        BadRequest: an unknown ``mask_mode``.
        UnsupportedModel: a mode that runs the segmentation network on a mono model
            (the network is laid out for two channels).
    """

    mask_estimator_cls = HyperACEMaskEstimator

    def __init__(self, config: BSRoformerConfig, mask_mode: str = DEFAULT_MASK_MODE) -> None:
        super().__init__(config)
        self.set_mask_mode(mask_mode)

    @property
    def mask_mode(self) -> str:
        return self._estimators()[0].mask_mode

    def set_mask_mode(self, mode: str) -> None:
        """Choose what the masks are made of (see :data:`MASK_MODES`).

        Raises:
            BadRequest: an unknown mode.
            UnsupportedModel: a mode that needs the segmentation network on a mono model.
        """
        if mode not in MASK_MODES:
            raise BadRequest(
                f"unknown HyperACE mask mode {mode!r}; choose one of {', '.join(MASK_MODES)}"
            )
        estimators = self._estimators()
        if mode != NO_SEGM and not all(estimator.segm_fits for estimator in estimators):
            raise UnsupportedModel(
                f"HyperACE mask mode {mode!r} needs a stereo model; use {NO_SEGM!r}"
            )
        for estimator in estimators:
            estimator.mask_mode = mode

    def _estimators(self) -> list[HyperACEMaskEstimator]:
        return [e for e in self.mask_estimators if isinstance(e, HyperACEMaskEstimator)]
