"""Every model family DSU knows, declared once.

A :class:`Family` says which ``arch`` names (``models.json``) it covers, which module
loads them, which optional extra it needs, which seed launchers serve it and how
``dsu models scan`` recognises its MSST-style configs. Everything else — the loader
(:func:`dsu.archs.load`), the registry scan, the launchers and the worker's
``--arch`` check — reads this table, so adding a family is one module plus one entry
here.

This module imports nothing heavy: the worker reads it before its ``ready`` line.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MsstRecogniser = Callable[[Mapping[str, Any]], str | None]
"""Given an MSST config's ``model:`` section, the arch it describes, or None."""


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: the family's name, for messages.
        archs: the ``arch`` names of its models.
        module: the module whose ``load(entry, **options)`` builds its models; None for a
            family this version of DSU lists (its launchers serve it) but cannot run yet.
        extra: the ``dsu[...]`` extra that installs ``requires``.
        requires: modules the family imports beyond the core install.
        launchers: the seed's worker executables that serve it.
        builtin: weight-free models shipped with DSU (no launcher owns them).
        recognise: tells this family's arch from an MSST config's ``model:`` section.
        residual: whether a model with a ``training.target_instrument`` also writes the
            residual stem (mixture - target), as MSST's separators do; a restorer does not.
    """

    name: str
    archs: tuple[str, ...]
    module: str | None
    extra: str | None = None
    requires: tuple[str, ...] = ()
    launchers: tuple[str, ...] = ()
    builtin: bool = False
    recognise: MsstRecogniser | None = None
    residual: bool = True

    def missing(self) -> str | None:
        """The first module of ``requires`` that is not installed, or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return module
        return None

    def install_hint(self) -> str:
        """What to run to install the family's extra."""
        return f"pip install 'dsu[{self.extra}]'" if self.extra else "pip install dsu"


def _roformer(model: Mapping[str, Any]) -> str | None:
    if "freqs_per_bands" in model:
        return "bs_roformer"
    if "num_bands" in model:
        return "mel_band_roformer"
    return None


def _mdx23c(model: Mapping[str, Any]) -> str | None:
    return "mdx23c" if "num_subbands" in model and "num_scales" in model else None


def _scnet(model: Mapping[str, Any]) -> str | None:
    # scnet_masked has scnet's keys: training.model_type (or the checkpoint) tells them apart.
    if any(str(key).startswith("tran_") for key in model):
        return "scnet_tran"
    if "band_SR" in model or {"dims", "num_dplayer"} <= model.keys():
        return "scnet"
    return None


def _bandit(model: Mapping[str, Any]) -> str | None:
    return "bandit_v2" if "n_sqm_modules" in model and "band_type" in model else None


def _msst_demucs(model: Mapping[str, Any]) -> str | None:
    # The `htdemucs:` section MSST's `model: htdemucs` names: the transformer's keys.
    return "htdemucs" if "t_layers" in model and "dconv_mode" in model else None


FAMILIES: tuple[Family, ...] = (
    Family(
        "Demucs",
        ("demucs",),
        "dsu.archs.demucs",
        launchers=("dsu-demucs", "dsu-audio-separator"),
    ),
    Family("built-in", ("center", "hpss"), "dsu.archs.builtin", builtin=True),
    Family("TDC U-Net", ("tdc_unet",), "dsu.archs.tdc_unet"),
    Family(
        "RoFormer",
        ("bs_roformer", "mel_band_roformer"),
        "dsu.archs.roformer",
        launchers=("dsu-bsroformer", "dsu-audio-separator"),
        recognise=_roformer,
    ),
    Family(
        "MDX23C",
        ("mdx23c",),
        "dsu.archs.mdx23c",
        launchers=("dsu-bsroformer", "dsu-audio-separator"),
        recognise=_mdx23c,
    ),
    Family(
        "SCNet",
        ("scnet", "scnet_masked", "scnet_tran"),
        "dsu.archs.scnet",
        launchers=("dsu-bsroformer", "dsu-audio-separator"),
        recognise=_scnet,
    ),
    Family(
        "BandIt",
        ("bandit_v2",),
        "dsu.archs.bandit",
        launchers=("dsu-audio-separator", "dsu-bsroformer"),
        recognise=_bandit,
    ),
    Family(
        "HTDemucs (MSST layout)",
        ("htdemucs",),
        "dsu.archs.msst_htdemucs",
        launchers=("dsu-demucs", "dsu-audio-separator"),
        recognise=_msst_demucs,
    ),
    Family(
        "MDX-Net",
        ("mdx",),
        "dsu.archs.mdx",
        extra="onnx",
        requires=("onnxruntime",),
        launchers=("dsu-audio-separator",),
    ),
    Family("VR", ("vr",), "dsu.archs.vr", launchers=("dsu-audio-separator",)),
    Family(
        "Apollo",
        ("apollo",),
        "dsu.archs.apollo",
        launchers=("dsu-apollo", "dsu-audio-separator"),
        residual=False,
    ),
)

LAUNCHERS: tuple[str, ...] = ("dsu-demucs", "dsu-bsroformer", "dsu-audio-separator", "dsu-apollo")
"""The seed's per-family worker executables."""

BUILTIN_ARCHS: frozenset[str] = frozenset(a for f in FAMILIES if f.builtin for a in f.archs)
"""Archs of the weight-free built-in models."""


def family_of(arch: str) -> Family | None:
    """The family an ``arch`` name belongs to."""
    return next((f for f in FAMILIES if arch in f.archs), None)


def known_archs() -> list[str]:
    """Every arch name DSU knows, runnable or not."""
    return sorted(a for f in FAMILIES for a in f.archs)


def runnable_archs() -> list[str]:
    """Arch names this version of DSU can load."""
    return sorted(a for f in FAMILIES if f.module is not None for a in f.archs)


def launcher_archs(launcher: str) -> tuple[str, ...]:
    """The archs a seed launcher serves, in the table's order."""
    return tuple(a for f in FAMILIES if launcher in f.launchers for a in f.archs)


def msst_arch(config: object) -> str:
    """The arch an MSST config describes: ``training.model_type`` when it names one DSU
    knows, else what the keys of its model section say (``model:``, the section a
    ``model: htdemucs`` names, or BandIt v2's ``kwargs:``); ``"unknown"`` when neither
    tells."""
    from dsu.archs.msst_config import model_section  # yaml: only when a config is read

    if not isinstance(config, Mapping):
        return "unknown"
    training = config.get("training")
    model_type = training.get("model_type") if isinstance(training, Mapping) else None
    if isinstance(model_type, str) and family_of(model_type) is not None:
        return model_type
    model = model_section(config)
    if not isinstance(model, Mapping):
        return "unknown"
    for family in FAMILIES:
        arch = family.recognise(model) if family.recognise else None
        if arch is not None:
            return arch
    return "unknown"
