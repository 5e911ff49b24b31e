"""``fcnkit train``, ``fcnkit recipes`` and ``fcnkit plot``.

``fcnkit train CONFIG_OR_RECIPE [--set KEY=VALUE ...] [--run-dir DIR | --name NAME]
[--resume] [--init-from RUN] [--device DEV]`` trains into ``runs/NAME`` (default: the
config's name). Under ``torchrun --nproc_per_node N -m fcnkit train ...`` every process runs
it (DDP; rank 0 writes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnkit.cli import CLIError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an FCN from a recipe or config file",
        description="Train from a shipped recipe (see `fcnkit recipes`) or a YAML config file.",
    )
    p.add_argument(
        "config",
        nargs="?",
        help="recipe name or YAML file (optional with --resume: the run's config.yaml)",
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
    p.add_argument("--resume", action="store_true", help="continue the run from its last.pt")
    p.add_argument(
        "--init-from",
        metavar="RUN",
        help="start from an earlier stage's run dir or checkpoint (Sec. 4.2 staged training)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the config's train.device)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    r = subparsers.add_parser("recipes", help="list the shipped training recipes, or show one")
    r.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    r.add_argument("name", nargs="?", help="recipe to show (YAML, to copy and edit)")
    r.set_defaults(func=run_recipes)

    pl = subparsers.add_parser("plot", help="plot a run's training curves (loss, mean IU) to PNG")
    pl.add_argument("run", type=Path, help="run directory")
    pl.add_argument("--out", type=Path, help="PNG path (default RUN/curves.png)")
    pl.set_defaults(func=run_plot)


def resolve_run_dir(args: argparse.Namespace, config_name: str) -> Path:
    if args.run_dir is not None:
        return args.run_dir
    return Path("runs") / (args.name or config_name)


def run_train(args: argparse.Namespace) -> int:
    from fcnkit.engine.config import ConfigError, load_config
    from fcnkit.engine.train import NonFiniteLossError, RunDirExistsError, train

    source = args.config
    if source is None:
        if not args.resume or (args.run_dir is None and args.name is None):
            raise CLIError("give a recipe or config file (see `fcnkit recipes`)")
        source = resolve_run_dir(args, "") / "config.yaml"
    try:
        config = load_config(source, args.overrides)
    except ConfigError as err:
        raise CLIError(str(err)) from None
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
    except (RunDirExistsError, FileNotFoundError, NonFiniteLossError, ValueError) as err:
        raise CLIError(str(err)) from None
    _print_metrics(metrics, run_dir)
    return 0


def _print_metrics(metrics: dict, run_dir: Path) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    labels = {"pixel_acc": "pixel acc", "mean_acc": "mean acc", "mean_iu": "mean IU"}
    labels["fw_iu"] = "f.w. IU"
    parts = [f"{label} {100 * metrics[k]:.2f}" for k, label in labels.items() if k in metrics]
    if parts:
        print("final evaluation: " + ", ".join(parts))
    print(f"run directory: {run_dir}")


def run_recipes(args: argparse.Namespace) -> int:
    from fcnkit.engine.config import ConfigError, list_recipes, recipe_description, recipe_text

    if args.action == "show" or args.name:
        if not args.name:
            raise CLIError("usage: fcnkit recipes show NAME")
        try:
            print(recipe_text(args.name), end="")
        except ConfigError as err:
            raise CLIError(str(err)) from None
        return 0
    names = list_recipes()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {recipe_description(name)}")
    print("\n`fcnkit recipes show NAME` prints one (copy it, edit it, `fcnkit train FILE`).")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from fcnkit.engine.train import plot_curves

    try:
        out = plot_curves(args.run, args.out or args.run / "curves.png")
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    print(out)
    return 0
