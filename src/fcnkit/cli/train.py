"""``fcnkit train`` and ``fcnkit plot`` (``fcnkit recipes``: cli/recipes.py).

``fcnkit train CONFIG_OR_RECIPE [--set KEY=VALUE ...] [--run-dir DIR | --name NAME]
[--resume] [--init-from RUN] [--device DEV]`` trains into ``runs/NAME`` (default: the
config's name); ``--resume`` continues a run with its saved ``config.yaml`` (plus ``--set``).
Under ``torchrun --nproc_per_node N -m fcnkit train ...`` every process runs it (DDP; rank 0
writes).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fcnkit.cli import CLIError

if TYPE_CHECKING:
    from fcnkit.engine.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an FCN from a recipe or config file",
        description="Train from a shipped recipe (see `fcnkit recipes`) or a YAML config file. "
        "--resume continues a run from its own config.yaml (plus --set overrides).",
    )
    p.add_argument(
        "config",
        nargs="?",
        help="recipe name or YAML file (optional with --resume and --name/--run-dir: the "
        "run's own config.yaml is used)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--run-dir", type=Path, help="run directory (default runs/NAME)")
    where.add_argument("--name", help="run name: the run directory is runs/NAME")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its checkpoints/last.pt with its saved config.yaml",
    )
    p.add_argument(
        "--init-from",
        metavar="RUN",
        help="start from an earlier stage's run dir or checkpoint (Sec. 4.2 staged training)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the config's train.device)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    pl = subparsers.add_parser(
        "plot",
        help="plot a run's training curves (loss, mean IU) to PNG",
        description="Plot the training loss and validation mean IU of a run's log.jsonl.",
    )
    pl.add_argument("run", type=Path, help="run directory")
    pl.add_argument("--out", type=Path, help="PNG path (default RUN/curves.png)")
    pl.set_defaults(func=run_plot)


def resolve_run_dir(args: argparse.Namespace, config_name: str) -> Path:
    if args.run_dir is not None:
        return args.run_dir
    return Path("runs") / (args.name or config_name)


def _load(source: str | Path, overrides: list[str]) -> Config:
    from fcnkit.engine.config import ConfigError, load_config

    try:
        return load_config(source, overrides)
    except ConfigError as err:
        raise CLIError(str(err)) from None


def resume_config(args: argparse.Namespace) -> tuple[Config, Path]:
    """``--resume``: the run's own ``config.yaml`` plus ``--set`` overrides, and the run dir.

    A recipe or config file given as well only names the run (``runs/NAME``) when neither
    ``--name`` nor ``--run-dir`` does; where it differs from the saved config a warning says
    so, and the saved one is used.
    """
    from fcnkit.engine.config import config_diff

    given = _load(args.config, args.overrides) if args.config is not None else None
    if given is None and args.run_dir is None and args.name is None:
        raise CLIError(
            "train --resume: which run? pass --name NAME (runs/NAME) or --run-dir DIR "
            "(or the recipe / config file the run was started with)"
        )
    run_dir = resolve_run_dir(args, given.name if given is not None else "")
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise CLIError(
            f"--resume: no run at {run_dir} ({saved} is missing); pass the run with "
            "--name NAME or --run-dir DIR"
        )
    config = _load(saved, args.overrides)
    if given is not None:
        changes = config_diff(config.to_dict(), given.to_dict())
        if changes and _is_main():
            print(
                f"fcnkit: warning: resuming with {saved}, not {args.config}; they differ in:\n  "
                + "\n  ".join(changes)
                + "\n(change values of a resumed run with --set KEY=VALUE)",
                file=sys.stderr,
            )
    return config, run_dir


def resume_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The command line that continues the run in ``run_dir`` (under torchrun: torchrun's)."""
    words = ["fcnkit", "train", "--resume", "--run-dir", str(run_dir)]
    if args.device:
        words += ["--device", args.device]
    world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if world > 1:
        words = ["torchrun", "--nproc_per_node", str(world), "-m", *words]
    return shlex.join(words)


def engine_terms(args: argparse.Namespace, run_dir: Path) -> dict[str, str]:
    """The engine's errors name options (resume=True, ...): here, the flags that set them."""
    return {
        "resume": "--resume",
        "overwrite": "--overwrite",
        "run_dir": "--name/--run-dir",
        "init_from": "--init-from {}",
        "set": "--set {}",
        "train": "fcnkit train {}",
        "resume_command": resume_command(args, run_dir),
    }


def run_train(args: argparse.Namespace) -> int:
    """``fcnkit train``; SIGINT / SIGTERM end it with a checkpoint, the command that
    continues, and exit status 128 + the signal (130 / 143)."""
    from fcnkit.engine.errors import HintedError, TrainingInterrupted
    from fcnkit.engine.train import train

    if args.resume:
        config, run_dir = resume_config(args)
    elif args.config is None:
        raise CLIError(
            "give a recipe or config file (see `fcnkit recipes`), or --resume with "
            "--name NAME / --run-dir DIR"
        )
    else:
        config = _load(args.config, args.overrides)
        run_dir = resolve_run_dir(args, config.name)
    try:
        metrics = train(
            config,
            run_dir,
            resume=args.resume,
            init_from=args.init_from,
            device=args.device,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except TrainingInterrupted as err:
        if _is_main():
            print(f"fcnkit: {err.render(engine_terms(args, run_dir))}", file=sys.stderr)
        return 128 + err.signum
    except HintedError as err:
        raise CLIError(err.render(engine_terms(args, run_dir))) from None
    except (FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    except TypeError as err:  # e.g. a dataset given an option it does not take
        raise dataset_option_error(config, err) from None
    if _is_main():
        from fcnkit.metrics import METRIC_NAMES, format_metrics

        if all(k in metrics for k in METRIC_NAMES):
            print("final evaluation: " + format_metrics(metrics))
        print(f"run directory: {run_dir}")
    return 0


_UNEXPECTED_OPTION = re.compile(r"unexpected keyword argument '(\w+)'")


def dataset_option_error(config: Config, err: TypeError) -> Exception:
    """A dataset given an option it does not take, as a sentence naming the config key
    (``data.options`` / ``data.val_options``); any other ``TypeError`` unchanged."""
    from fcnkit.data import get_dataset_entry

    found = _UNEXPECTED_OPTION.search(str(err))
    d = config.data
    keys = [k for k in ("options", "val_options") if found and found[1] in (getattr(d, k) or {})]
    if found is None or not keys:
        return err
    remove = " ".join(f"--set data.{k}={{}}" for k in keys)
    text = (
        f"dataset {d.dataset!r} takes no option {found[1]!r} (given in "
        f"{' and '.join('data.' + k for k in keys)}): drop it, e.g. {remove}"
    )
    if get_dataset_entry(d.dataset).needs_root and (d.root is None or not Path(d.root).is_dir()):
        text += f"; data.root {d.root} is not a folder either"
    return CLIError(text)


def _is_main() -> bool:
    """Rank 0 (or no torchrun): the process that prints."""
    return int(os.environ.get("RANK", "0")) == 0


def run_plot(args: argparse.Namespace) -> int:
    from fcnkit.plots import plot_curves

    try:
        out = plot_curves(args.run, args.out or args.run / "curves.png")
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    print(out)
    return 0
