"""``fcnkit models``: list every registered model with its parameter count."""

from __future__ import annotations

import argparse
import sys

import torch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the registered models with parameter counts")
    p.add_argument("--num-classes", type=int, default=None, help="classes (default: each model's)")
    p.add_argument("--tag", default=None, help="only models with this tag (e.g. paper, modern)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcnkit.models import build_model, get_model_entry, list_models

    names = list_models(args.tag)
    width = max((len(n) for n in names), default=5)
    print(f"{'model':<{width}}  {'classes':>7}  {'parameters':>13}  description")
    failed = []
    for name in names:
        entry = get_model_entry(name)
        try:
            # Built on the meta device: shapes only, no memory, no initialisation cost.
            with torch.device("meta"):
                model = build_model(name, args.num_classes)
        except Exception as err:  # report every model, then fail
            failed.append(name)
            print(f"{name:<{width}}  {'?':>7}  {'?':>13}  cannot build: {err}")
            continue
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name:<{width}}  {model.num_classes:>7}  {n_params:>13,}  {entry.description}")
    if failed:
        print(f"fcnkit: error: cannot build {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
