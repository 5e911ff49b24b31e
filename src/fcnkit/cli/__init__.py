"""The ``fcnkit`` command line.

Every module in this package that defines ``register(subparsers)`` adds its own subcommand(s);
``register`` must call ``parser.set_defaults(func=handler)`` where ``handler(args) -> int``
returns the exit status. Modules are discovered, so adding a command touches one file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from fcnkit import __version__


class CLIError(Exception):
    """A user-facing error: printed as ``fcnkit: error: <message>`` with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcnkit",
        description="Fully Convolutional Networks: train, evaluate, predict, convert.",
    )
    parser.add_argument("--version", action="version", version=f"fcnkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    saved_argv = sys.argv
    if argv is not None:  # called in-process: run records (meta.json) show this command
        sys.argv = ["fcnkit", *argv]
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"fcnkit: error: {err}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    raise SystemExit(main())
