"""Stem names across models: the same source under the names different models give it.

Two-stem models name their second stem after what it is not: ``instrumental``,
``no_vocals``, ``accompaniment``, or just ``other`` beside ``vocals``. An ensemble
combines stems by their canonical name (:func:`canonical_stems`), so a Mel-Band
RoFormer's ``other`` and an MDX-Net's ``instrumental`` are averaged together, and a
request may name a stem by any of its names (:func:`find_stem`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dsu.errors import BadRequest

INSTRUMENTAL = "instrumental"
SYNONYMS = {
    "no_vocals": INSTRUMENTAL,
    "accompaniment": INSTRUMENTAL,
    "noreverb": "no_reverb",
    "no_echo_reverb": "no_reverb",
}
"""Names that always mean the canonical stem they map to."""


def canonical(stem: str, stems: Sequence[str]) -> str:
    """The canonical name of ``stem`` among a model's ``stems``.

    ``other`` is the instrumental only in a two-stem model whose other stem is vocals (in
    a four-stem model it is what is left beside drums and bass).
    """
    if stem == "other" and len(stems) == 2 and "vocals" in stems:
        return INSTRUMENTAL
    return SYNONYMS.get(stem, stem)


def canonical_stems(stems: Sequence[str]) -> dict[str, str]:
    """Canonical name -> the model's own name, for each of a model's ``stems``."""
    return {canonical(stem, stems): stem for stem in stems}


def shared_stems(models: Mapping[str, Sequence[str]]) -> dict[str, dict[str, str]]:
    """The stems every model has: canonical name -> {model: its own name for it}, in the
    first model's order.

    Raises:
        BadRequest: the models have no stem in common.
    """
    names = {model: canonical_stems(stems) for model, stems in models.items()}
    first = next(iter(names.values()))
    shared = [stem for stem in first if all(stem in own for own in names.values())]
    if not shared:
        listing = "; ".join(f"{m}: {', '.join(s)}" for m, s in models.items())
        raise BadRequest(
            f"these models share no stem, so they cannot be ensembled ({listing}); "
            "ensemble models of the same target"
        )
    return {stem: {model: own[stem] for model, own in names.items()} for stem in shared}


def find_stem(name: str, available: Sequence[str]) -> str | None:
    """The stem of ``available`` (canonical names) that ``name`` means, or None."""
    if name in available:
        return name
    alias = canonical(name, ["vocals", name] if INSTRUMENTAL in available else [name])
    return alias if alias in available else None
