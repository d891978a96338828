"""``dsu presets``: the pipelines shipped with DSU, and the models each needs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "presets",
        help="list the shipped pipelines (dsu separate --pipeline PRESET)",
        description="List the presets: pipelines shipped as data, each with the models it "
        "runs and whether they are installed in the models directory.",
    )
    p.add_argument("--models-dir", type=Path, help="models directory (default: DSU_MODELS_DIR)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsu.pipeline.preset import load_preset, preset_names
    from dsu.registry import Registry

    registry = Registry.open(args.models_dir)
    installed = {
        info.name for info in registry.listing() if info.status in ("installed", "builtin")
    }
    presets = []
    for name in preset_names():
        spec = load_preset(name)
        missing = [m for m in spec.models if m not in installed]
        presets.append(
            {
                "name": name,
                "description": spec.description,
                "models": spec.models,
                "missing": missing,
            }
        )
    if args.json:
        json.dump({"presets": presets}, sys.stdout, indent=2)
        print()
        return 0
    for preset in presets:
        print(f"{preset['name']}: {preset['description']}")
        print(f"  models: {', '.join(preset['models'])}")
        if preset["missing"]:
            print(f"  to install: dsu models pull {' '.join(preset['missing'])}")
    return 0
