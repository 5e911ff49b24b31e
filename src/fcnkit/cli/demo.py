"""``fcnkit demo``: train, evaluate and report on the built-in dataset (README's main command)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train an FCN-8s on built-in synthetic data on the CPU (<5 min), write a report",
    )
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="default runs/demo")
    p.add_argument("--steps", type=int, help="training steps (shorter demo)")
    p.add_argument("--size", type=int, help="image size in pixels (smaller = faster)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run")
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
