"""The ``fcnkit`` command line.

Every module in this package that defines ``register(subparsers)`` adds its own subcommand(s);
``register`` must call ``parser.set_defaults(func=handler)`` where ``handler(args) -> int``
returns the exit status. Modules are discovered, so adding a command touches one file.

A command whose ``--out`` names a folder (or a file) says so with
``set_defaults(out_kind="folder")`` (or ``"file"``); :func:`main` checks it before running.

Failures end in one sentence, never a traceback (unless ``--debug`` or ``FCNKIT_DEBUG=1``).
Exit status: 0 done; 1 an unexpected error (a bug, or the machine: disk full, no
permission, out of memory; ``data check``: problems found); 2 input refused
(:class:`CLIError`: a missing file, a bad option, a bad sample, a failed image of several);
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fcnkit import __version__
from fcnkit.extras import MissingExtraError

EXIT_UNEXPECTED, EXIT_REFUSED, EXIT_INTERRUPTED = 1, 2, 130
DEBUG_ENV = "FCNKIT_DEBUG"


class CLIError(Exception):
    """A user-facing error: printed as ``fcnkit: error: <message>`` with exit status 2."""


EPILOG = (
    "exit status: 0 done, 1 unexpected error (or `data check` found problems), 2 input "
    f"refused, 130 interrupted. Errors are one sentence; --debug (or {DEBUG_ENV}=1) shows the "
    "Python traceback."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcnkit",
        description="Fully Convolutional Networks: train, evaluate, predict, convert.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"fcnkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    _accept_debug_anywhere(parser)
    return parser


def _accept_debug_anywhere(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too (``fcnkit train demo --debug``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "--debug" not in sub._option_string_actions:
                    sub.add_argument(
                        "--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors",
                    )  # fmt: skip
                _accept_debug_anywhere(sub)


# --------------------------------------------------------------------- --out checks


def _file_above(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is a file, if any."""
    for parent in path.parents:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None


def check_out_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` as a folder to write into; :class:`CLIError` if it (or a parent) is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CLIError(
            f"{flag} {path} is a file, but a folder is expected (several files are written "
            "into it): give a new or existing folder"
        )
    above = _file_above(path)
    if above is not None:
        raise CLIError(f"{flag} {path}: {above} is a file, not a folder")
    return path


def check_out_file(path: str | os.PathLike, flag: str = "--out", example: str = "out") -> Path:
    """``path`` as a file to write; :class:`CLIError` if it is a folder or a parent a file."""
    path = Path(path)
    if path.is_dir():
        raise CLIError(
            f"{flag} {path} is a folder, but a file is expected: give a file name, e.g. "
            f"{path / example}"
        )
    above = _file_above(path)
    if above is not None:
        raise CLIError(f"{flag} {path}: {above} is a file, not a folder")
    return path


def _check_out(args: argparse.Namespace) -> None:
    out = getattr(args, "out", None)
    kind = getattr(args, "out_kind", None)
    if out is None or kind is None:
        return
    if kind == "folder":
        check_out_folder(out)
    else:
        check_out_file(out, example=getattr(args, "out_example", "out"))


# ------------------------------------------------------------------------- sentences


def os_error_sentence(err: OSError, path: str | os.PathLike | None = None) -> str:
    """An ``OSError`` as a sentence naming the file (``path`` when the error names none)."""
    where = err.filename if err.filename is not None else path
    if err.errno == errno.ENOSPC:
        full = "no space left on device"
        return f"{full}: cannot write {where}" if where else full
    reason = err.strerror or str(err)
    return f"{where}: {reason}" if where else reason


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """An ``OSError`` while writing ``path`` names it (disk full: ``no space left on device:
    cannot write PATH``, exit status 1 from :func:`main`)."""
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


_TRACEBACK = "Traceback (most recent call last):"
_WORKER = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\s*(Original )?")


def without_worker_traceback(text: str) -> str:
    """A DataLoader worker's error re-raised in the main process carries the worker's
    traceback in its message: keep the final error's message alone (after any prefix)."""
    worker = _WORKER.search(text)
    if worker is None or _TRACEBACK not in text:
        return text
    lines = text.rpartition(_TRACEBACK)[2].splitlines()
    start = next((i for i, line in enumerate(lines) if line and not line[0].isspace()), None)
    if start is None:
        return text
    message = "\n".join(lines[start:]).strip()
    kind, sep, rest = message.partition(": ")  # `fcnkit.data.base.DatasetError: PATH: reason`
    return text[: worker.start()] + (rest if sep and " " not in kind else message)


def _one_line(err: BaseException) -> str:
    lines = without_worker_traceback(str(err)).strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= 300 else text[:297] + "..."


def unexpected_sentence(err: BaseException) -> str:
    """One sentence for an exception that is not a :class:`CLIError`."""
    if isinstance(err, OSError):
        return os_error_sentence(err)
    if isinstance(err, MemoryError):
        return "out of memory" + (f" ({_one_line(err)})" if str(err) else "")
    text = _one_line(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _print_traceback(err: BaseException) -> None:
    """The traceback of ``err``, after that of the error it replaced (``raise ... from None``
    hides it, but with ``--debug`` it is what one wants to see)."""
    hidden = err.__context__ if err.__suppress_context__ else None
    if hidden is not None:
        traceback.print_exception(type(hidden), hidden, hidden.__traceback__)
    traceback.print_exception(type(err), err, err.__traceback__)


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    saved_argv = sys.argv
    if argv is not None:  # called in-process: run records (meta.json) show this command
        sys.argv = ["fcnkit", *argv]
    debug = _debug(args)
    try:
        _check_out(args)
        return int(args.func(args) or 0)
    except (CLIError, MissingExtraError) as err:
        if debug:
            _print_traceback(err)
        print(f"fcnkit: error: {without_worker_traceback(str(err))}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt as err:
        if debug:
            _print_traceback(err)
        print("fcnkit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if debug:
            _print_traceback(err)
        plain = debug or isinstance(err, (OSError, MemoryError))  # the machine, not a bug
        hint = "" if plain else " (run with --debug for the traceback)"
        print(f"fcnkit: error: {unexpected_sentence(err)}{hint}", file=sys.stderr)
        return EXIT_UNEXPECTED
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    raise SystemExit(main())
