"""Infer a ``models.json`` for a directory of checkpoints in the layouts users already have.

Recognised (looking in the directory itself and its ``weights/``, ``configs/`` and
``model_data/`` folders, and UVR's ``model_data/mdx_c_configs/``, not deeper):

- Demucs repo: ``<sig>-<sha256 prefix>.th`` packages and bag ``<name>.yaml`` files
  (``models: [sig, ...]``, optional ``weights`` and ``segment``), the layout
  ``demucs --repo DIR`` reads. A bag becomes the entry ``<name>``; a ``.th`` no bag uses
  becomes the entry ``<sig>``. Stems come from the package's ``kwargs["sources"]``.
- MSST (ZFTurbo's Music-Source-Separation-Training): ``<x>.ckpt|.pth|.safetensors``
  beside ``<x>.yaml``; the family is ``training.model_type`` when the yaml names one, else
  what its ``model`` keys say (each family's recogniser in :mod:`dsu.archs.families`), the
  stems from ``training``.
- UVR: ``*.onnx`` (MDX-Net) and ``*.pth`` (VR) with parameters found by UVR's model hash in
  any ``*.json`` model-data file of those folders, else in the tables DSU ships. A ``.pth``
  is a VR model when UVR's model data says so or when its state dict has a v5 or v5.1 VR
  tensor; its stems are the primary and secondary stem of its model data.

What cannot be inferred is recorded as ``"arch": "unknown"`` with a warning on stderr.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dsu.archs.families import family_of, msst_arch
from dsu.archs.msst_config import ConfigLoader, config_stems
from dsu.errors import RegistryError
from dsu.registry.catalog import Catalog, builtin_catalog
from dsu.registry.checksum import demucs_name
from dsu.registry.manifest import MANIFEST, VERSION, write_manifest

Warn = Callable[[str], None]

FOLDERS = ("", "weights", "configs", "model_data", "model_data/mdx_c_configs", "mdx_c_configs")
CHECKPOINTS = (".ckpt", ".pth", ".safetensors")
# UVR identifies a model by the md5 of its last 10 000 KiB (the whole file if smaller).
UVR_HASH_TAIL = 10000 * 1024
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")


def scan(root: Path, *, catalog: Catalog | None = None, warn: Warn | None = None) -> dict[str, Any]:
    """Build a manifest (the ``models.json`` document) for ``root``.

    Args:
        root: the directory to look at.
        catalog: known models, used for stems without opening a checkpoint (default: the
            built-in catalog).
        warn: receives one line per thing that could not be inferred (default: stderr).

    Returns:
        ``{"version": 1, "default": name or None, "models": {...}}`` with paths relative
        to ``root``. The default is ``htdemucs`` when present, else the first bag, else the
        first model by name.
    """
    root = Path(root)
    if not root.is_dir():
        raise RegistryError(f"{root}: not a directory")
    catalog = catalog or builtin_catalog()
    warn = warn or _stderr
    files = _files(root)
    yamls = {
        rel: data
        for rel in files
        if rel.endswith((".yaml", ".yml"))
        if (data := _read_yaml(root / rel, warn)) is not None
    }
    models: dict[str, dict[str, Any]] = {}

    bags = _demucs(root, files, yamls, catalog, warn, models)
    _msst(root, files, yamls, warn, models)
    _uvr(root, files, yamls, warn, models)

    default = None
    if "htdemucs" in models:
        default = "htdemucs"
    elif bags:
        default = sorted(bags)[0]
    elif models:
        default = sorted(models)[0]
    return {"version": VERSION, "default": default, "models": dict(sorted(models.items()))}


def scan_to_file(root: Path, *, force: bool = False, warn: Warn | None = None) -> Path:
    """Scan ``root`` and write ``root/models.json``; an existing one is kept unless ``force``."""
    target = Path(root) / MANIFEST
    if target.exists() and not force:
        raise RegistryError(f"{target} already exists; overwrite it with --force")
    return write_manifest(Path(root), scan(Path(root), warn=warn))


def uvr_hash(path: Path) -> str:
    """UVR's model hash: md5 of the last 10 000 KiB of the file (of all of it if smaller)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - UVR_HASH_TAIL))
        return hashlib.md5(f.read()).hexdigest()


def _demucs(
    root: Path,
    files: list[str],
    yamls: dict[str, Any],
    catalog: Catalog,
    warn: Warn,
    models: dict[str, dict[str, Any]],
) -> set[str]:
    """Add Demucs bags and lone packages to ``models``; return the bag names."""
    by_sig: dict[str, str] = {}
    for rel in files:
        if not rel.endswith(".th"):
            continue
        file_name = Path(rel).name
        parsed = demucs_name(file_name)
        sig = parsed[0] if parsed else Path(rel).stem
        if sig in by_sig:
            warn(f"{root / rel}: duplicate Demucs signature {sig} (also {by_sig[sig]}); ignored")
            continue
        by_sig[sig] = rel

    stems_cache: dict[str, list[str]] = {}

    def stems_of(rel: str) -> list[str]:
        if rel not in stems_cache:
            stems_cache[rel] = _demucs_sources(root / rel, catalog, warn)
        return stems_cache[rel]

    used: set[str] = set()
    bags: set[str] = set()
    for rel, bag in sorted(yamls.items()):
        if not (isinstance(bag, dict) and _is_str_list(bag.get("models"))):
            continue
        name = _entry_name(Path(rel).stem)
        missing = [sig for sig in bag["models"] if sig not in by_sig]
        if missing:
            warn(f"{root / rel}: bag {name} skipped: no .th file for {', '.join(missing)}")
            continue
        weights = [by_sig[sig] for sig in bag["models"]]
        member_stems = [stems_of(w) for w in dict.fromkeys(weights)]
        if any(s != member_stems[0] for s in member_stems):
            warn(f"{root / rel}: members of bag {name} disagree on their stems: {member_stems}")
        models[name] = _demucs_entry(weights, rel, member_stems[0], bag)
        used.update(bag["models"])
        bags.add(name)

    for sig, rel in sorted(by_sig.items()):
        if sig in used:
            continue
        name = _entry_name(sig)
        if name in models:
            warn(f"{root / rel}: a model named {name} already exists; package ignored")
            continue
        models[name] = _demucs_entry([rel], None, stems_of(rel), {})
    return bags


def _demucs_entry(
    weights: list[str], config: str | None, stems: list[str], bag: dict[str, Any]
) -> dict[str, Any]:
    sha256 = {}
    for rel in weights:
        parsed = demucs_name(Path(rel).name)
        if parsed:
            sha256[Path(rel).name] = parsed[1]
    entry: dict[str, Any] = {
        "arch": "demucs",
        "weights": weights,
        "config": config,
        "stems": stems,
        "sha256": sha256,
    }
    options = {key: bag[key] for key in ("weights", "segment") if bag.get(key) is not None}
    if options:
        entry["options"] = options
    return entry


def _demucs_sources(path: Path, catalog: Catalog, warn: Warn) -> list[str]:
    """Stem names of a Demucs package, from the catalog when it knows the file name, else
    from the package's constructor kwargs (the network itself is never built)."""
    known = catalog.by_file(path.name)
    if known is not None:
        return list(known.stems)
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            package = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        sources = _package_sources(package)
        if not _is_str_list(sources):
            raise TypeError(f"sources is {sources!r}")
        return list(sources)
    except Exception as exc:
        # Quantized packages need diffq; foreign files are not packages at all. Either way
        # the entry is still worth listing, without stems.
        warn(f"{path}: cannot read the stem names of this Demucs package ({exc!s:.200})")
        return []


def _package_sources(package: dict[str, Any]) -> object:
    """``sources`` from a package's constructor arguments, given by keyword (as Demucs'
    training does) or by position (the first parameter of every Demucs class)."""
    kwargs, args = package.get("kwargs") or {}, package.get("args") or ()
    if "sources" in kwargs:
        return kwargs["sources"]
    bound = inspect.signature(package["klass"]).bind_partial(*args, **kwargs)
    return bound.arguments["sources"]


def _msst(
    root: Path,
    files: list[str],
    yamls: dict[str, Any],
    warn: Warn,
    models: dict[str, dict[str, Any]],
) -> None:
    """Add MSST checkpoints that have a same-stem yaml."""
    by_stem: dict[str, str] = {}
    for rel in yamls:
        by_stem.setdefault(Path(rel).stem, rel)
    for rel in files:
        if not rel.endswith(CHECKPOINTS) or Path(rel).stem not in by_stem:
            continue
        config = by_stem[Path(rel).stem]
        data = yamls[config]
        arch = msst_arch(data)
        if arch == "unknown":
            warn(f"{root / config}: cannot tell the model family from this config; arch unknown")
        name = _unique(_entry_name(Path(rel).stem), models)
        models[name] = {
            "arch": arch,
            "weights": rel,
            "config": config,
            "stems": _msst_stems(data, root / config, warn, arch),
        }


def _msst_stems(config: object, source: Path, warn: Warn, arch: str = "unknown") -> list[str]:
    """The stems an MSST config names (with the residual stem); [] when it has no
    ``training`` section, [] with a warning when that section is malformed."""
    if not isinstance(config, dict) or "training" not in config:
        return []
    try:
        family = family_of(arch)
        return config_stems(config, source, residual=family.residual if family else True)
    except RegistryError as exc:
        warn(f"{exc.message}; stems unknown")
        return []


def _uvr(
    root: Path,
    files: list[str],
    yamls: dict[str, Any],
    warn: Warn,
    models: dict[str, dict[str, Any]],
) -> None:
    """Add UVR ``.onnx`` / ``.pth`` / ``.ckpt`` models not already claimed by another layout."""
    claimed = {
        w
        for e in models.values()
        for w in ([e["weights"]] if isinstance(e["weights"], str) else e["weights"])
    }
    candidates = [
        rel for rel in files if rel.endswith((".onnx", ".pth", ".ckpt")) and rel not in claimed
    ]
    if not candidates:
        return
    # Imported here: the MDX and VR family packages import torch, which scanning a folder
    # without UVR files does not need.
    from dsu.archs.mdx.params import shipped_model_data as mdx_model_data
    from dsu.archs.vr.params import shipped_model_data as vr_model_data

    # The folder's own model data wins over the tables DSU ships (UVR's, by hash).
    model_data = {**mdx_model_data(), **vr_model_data(), **_uvr_model_data(root, files)}
    yaml_names = {Path(rel).name: rel for rel in yamls}
    for rel in candidates:
        digest = uvr_hash(root / rel)
        params = model_data.get(digest)
        suffix = Path(rel).suffix
        name = _unique(_entry_name(Path(rel).stem), models)
        if suffix == ".pth" and (
            "vr_model_param" in params if params is not None else _is_vr_state(root / rel)
        ):
            models[name] = _vr_entry(root, rel, digest, params, warn)
            continue
        entry: dict[str, Any] = {"arch": "unknown", "weights": rel, "config": None, "stems": []}
        if params is not None:
            entry["options"] = {"model_data": params}
            entry["stems"] = _uvr_stems(params)
        if suffix == ".onnx":
            entry["arch"] = "mdx"
        elif params is not None and "config_yaml" in params:
            # UVR's MDX-C models (MDX23C and the RoFormers) name an MSST-style yaml.
            entry["config"] = yaml_names.get(str(params["config_yaml"]))
            config = yamls.get(entry["config"]) if entry["config"] else None
            entry["arch"] = msst_arch(config) if config is not None else "mdx23c"
            stems = (
                _msst_stems(config, root / entry["config"], warn, entry["arch"]) if config else []
            )
            entry["stems"] = stems or entry["stems"]
        if params is None:
            warn(
                f"{root / rel}: no UVR model data for hash {digest}; "
                f"arch {entry['arch']}, parameters must be added to its options by hand"
            )
        elif entry["arch"] == "unknown":
            warn(f"{root / rel}: UVR model data does not say which family this is; arch unknown")
        models[name] = entry


def _is_vr_state(path: Path) -> bool:
    """Whether a ``.pth`` is a UVR VR state dict, by its tensor names (memory-mapped, so
    the tensors themselves are not read, except from a file in torch's pre-1.6 format)."""
    import torch

    from dsu.archs.vr import V5_KEY, V51_KEY

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:
                # Files in torch's pre-1.6 format cannot be memory-mapped; read them whole.
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # A pickle of objects, a foreign or damaged file: not a VR state dict either way.
        return False
    return isinstance(state, dict) and (V5_KEY in state or V51_KEY in state)


def _vr_entry(
    root: Path, rel: str, digest: str, params: dict[str, Any] | None, warn: Warn
) -> dict[str, Any]:
    """A VR entry: its UVR model data as options (what the VR family reads) and the stems
    that data names; without model data, an entry the user must complete."""
    from dsu.archs.vr import stem_name
    from dsu.archs.vr.params import MODEL_DATA_KEYS, ModelData

    entry: dict[str, Any] = {"arch": "vr", "weights": rel, "config": None, "stems": []}
    if params is None:
        warn(
            f"{root / rel}: a UVR VR checkpoint with no model data for hash {digest}; add "
            '"options": {"vr_model_param": ..., "primary_stem": ...} to its entry in '
            f"{MANIFEST} (and its stems)"
        )
        return entry
    data = {k: v for k, v in params.items() if k in MODEL_DATA_KEYS}
    try:
        parsed = ModelData.from_dict(data, f"{root / rel}: UVR model data {digest}")
    except RegistryError as exc:
        warn(f"{exc.message}; options left out")
        return entry
    entry["options"] = data
    entry["stems"] = [stem_name(parsed.primary_stem), stem_name(parsed.secondary_stem)]
    return entry


def _uvr_model_data(root: Path, files: list[str]) -> dict[str, dict[str, Any]]:
    """hash -> parameters, merged from every JSON file that looks like UVR model data."""
    table: dict[str, dict[str, Any]] = {}
    for rel in files:
        if not rel.endswith(".json") or rel == MANIFEST:
            continue
        try:
            data = json.loads((root / rel).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            table.update(
                {
                    k: v
                    for k, v in data.items()
                    if re.fullmatch(r"[0-9a-f]{32}", k) and isinstance(v, dict)
                }
            )
    return table


def _uvr_stems(params: dict[str, Any]) -> list[str]:
    from dsu.archs.mdx.params import stem_names

    primary = params.get("primary_stem")
    if not isinstance(primary, str) or not primary.strip():
        return []
    return stem_names(primary)


def _files(root: Path) -> list[str]:
    """Relative POSIX paths of the visible regular files in ``root`` and its known folders."""
    found = []
    for folder in FOLDERS:
        base = root / folder if folder else root
        if not base.is_dir():
            continue
        for path in sorted(base.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            found.append(path.relative_to(root).as_posix())
    return found


def _read_yaml(path: Path, warn: Warn) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=ConfigLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        warn(f"{path}: unreadable YAML, ignored ({exc!s:.200})")
        return None


def _entry_name(stem: str) -> str:
    name = _BAD_NAME_CHARS.sub("_", stem).lstrip("._+-")
    return name or "model"


def _unique(name: str, models: dict[str, Any]) -> str:
    candidate, n = name, 2
    while candidate in models:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
