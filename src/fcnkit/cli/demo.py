"""``fcnkit demo``: train, evaluate and report on the built-in dataset (README's main command)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _recipe_defaults() -> tuple[int | None, int | None]:
    """``(train.steps, data.options.size)`` of the shipped ``demo`` recipe, for ``--help``."""
    import yaml

    from fcnkit.engine.config import recipe_text

    data = yaml.safe_load(recipe_text("demo")) or {}
    steps = (data.get("train") or {}).get("steps")
    size = ((data.get("data") or {}).get("options") or {}).get("size")
    return steps, size


def register(subparsers: argparse._SubParsersAction) -> None:
    steps, size = _recipe_defaults()
    p = subparsers.add_parser(
        "demo",
        help="train an FCN-8s on built-in synthetic data on the CPU (<5 min), write a report",
        description="Train the `demo` recipe (FCN-8s on synthetic shapes) on the CPU, evaluate "
        "it on the held-out test split and write a report (overlays, curves, metrics, "
        "confusion matrix) into the run directory.",
    )
    p.add_argument(
        "--run-dir", type=Path, default=Path("runs/demo"), help="run directory (default: runs/demo)"
    )
    p.add_argument(
        "--steps",
        type=int,
        help=f"training steps; fewer = a shorter demo (default: {steps}, the demo recipe's)",
    )
    p.add_argument(
        "--size",
        type=int,
        help=f"image size in pixels; smaller = faster (default: {size}, the demo recipe's)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier demo run (else a new runs/demo-N is used)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a value of the demo recipe (`fcnkit recipes show demo`)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcnkit.cli import CLIError
    from fcnkit.demo import run_demo
    from fcnkit.engine.config import ConfigError

    try:
        run_demo(
            args.run_dir,
            steps=args.steps,
            size=args.size,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            overrides=args.overrides,
        )
    except ConfigError as err:
        raise CLIError(str(err)) from None
    return 0
