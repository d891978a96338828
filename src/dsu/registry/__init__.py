"""Model registry: a models directory (``models.json``, ``configs/``, ``weights/``), the
built-in catalog of public models, and pull / scan / verify (DESIGN §2).

Import-light: nothing here imports torch (a scan imports it only to read the stem names
of a Demucs package the catalog does not know).
"""

from __future__ import annotations

from dsu.registry.catalog import Catalog, CatalogEntry, builtin_catalog
from dsu.registry.entry import ModelEntry
from dsu.registry.pull import pull
from dsu.registry.registry import BUILTIN, ModelInfo, Registry
from dsu.registry.scan import scan, scan_to_file
from dsu.registry.settings import RegistrySettings, default_models_dir, settings
from dsu.registry.verify import VerifyResult, verify

__all__ = [
    "BUILTIN",
    "Catalog",
    "CatalogEntry",
    "ModelEntry",
    "ModelInfo",
    "Registry",
    "RegistrySettings",
    "VerifyResult",
    "builtin_catalog",
    "default_models_dir",
    "pull",
    "scan",
    "scan_to_file",
    "settings",
    "verify",
]
