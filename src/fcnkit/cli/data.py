"""``fcnkit data``: list the datasets, check one on disk, or summarise its classes.

    fcnkit data list
    fcnkit data check NAME --root DIR [--split S ...] [--option k=v ...] [--limit N]
    fcnkit data stats NAME --root DIR [--split S] [--option k=v ...] [--out DIR] [--limit N]

``--option`` values are JSON when they parse as JSON (numbers, true/false, lists, objects),
else plain strings: ``--option value_map=0:0,255:1 --option classes=membrane,cell``.
``check`` exits 1 when it finds any problem, after listing them all. ``--limit N`` here takes
N samples spread evenly over the split (first and last included), unlike ``fcnkit eval
--limit N`` (the first N): a quick check should see the whole range of a sorted list.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from fcnkit.cli import CLIError, check_out_folder


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: value}`` (JSON values where they parse, else strings)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--option expects key=value, got {pair!r}")
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            value: Any = lowered == "true"
        else:
            try:
                value = json.loads(text)
            except ValueError:
                value = text
        options[key.strip().replace("-", "_")] = value
    return options


LIMIT_HELP = (
    "look at only N samples spread evenly over the split (indices round(k*(n-1)/(N-1)), "
    "k = 0..N-1: first and last included), not the first N as `fcnkit eval --limit` does "
    "(default: every sample)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="list, check and summarise datasets")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    q = sub.add_parser("list", help="list the registered datasets and their splits")
    q.set_defaults(func=run_list)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("name", help="dataset name (see `fcnkit data list`)")
        q.add_argument(
            "--root",
            default=None,
            help="the folder holding the dataset's files (not needed for built-in data)",
        )
        q.add_argument(
            "--option",
            action="append",
            metavar="KEY=VALUE",
            help="dataset option, repeatable; values are JSON where they parse, else strings",
        )
        q.add_argument("--limit", type=int, default=None, metavar="N", help=LIMIT_HELP)

    q = sub.add_parser(
        "check",
        help="verify every sample; report all problems with file names",
        description="Verify every sample of the split(s): files exist and decode, image and "
        "label sizes agree, label values are classes or ignore. Lists every problem, then "
        "exits 1 if there was any.",
    )
    common(q)
    q.add_argument(
        "--split",
        action="append",
        metavar="S",
        help="split to check; repeatable (--split train --split val). Default: every split "
        "of the dataset, skipping those whose list is absent under --root",
    )
    q.add_argument(
        "--max-problems",
        type=int,
        default=200,
        metavar="N",
        help="problems printed per split; all are counted (default: %(default)s)",
    )
    q.set_defaults(func=run_check)

    q = sub.add_parser(
        "stats",
        help="class pixel frequencies (table + bar chart), class weights, sample grid",
        description="Per-class pixel frequencies (a table, class_frequency.csv and a bar "
        "chart), median-frequency class weights (Eigen & Fergus 2015: w_c = median_k f_k / "
        "f_c, f_c = pixels of c / labelled pixels of the images holding c; a class with no "
        "pixel gets 1) as a column of the CSV, a `loss.class_weights: [...]` line and "
        "class_weights.yaml, and a grid of sample overlays in the dataset's palette. "
        "`loss.class_weights: median_frequency` in a config computes the same weights from "
        "the training split when the run starts.",
    )
    common(q)
    q.add_argument(
        "--split",
        default=None,
        metavar="S",
        help="the one split to summarise (default: the dataset's first split as listed by "
        "`fcnkit data list`, e.g. train for voc, trainval for siftflow)",
    )
    q.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: data-stats/NAME-SPLIT)",
    )
    q.add_argument(
        "--samples",
        type=int,
        default=16,
        metavar="N",
        help="samples in the overlay grid, spread evenly like --limit (default: %(default)s)",
    )
    q.set_defaults(func=run_stats, out_kind="folder")  # --out checked by fcnkit.cli.main


def run_list(args: argparse.Namespace) -> int:
    from fcnkit.data import get_dataset_entry, list_datasets

    names = list_datasets()
    width = max(len(n) for n in names)
    for name in names:
        e = get_dataset_entry(name)
        print(f"{name:<{width}}  splits: {', '.join(e.splits):<28}  {e.description}")
    return 0


def _entry(name: str) -> Any:
    from fcnkit.data import get_dataset_entry

    try:
        return get_dataset_entry(name)
    except ValueError as err:
        raise CLIError(str(err)) from None


def _root(args: argparse.Namespace, entry: Any) -> Path | None:
    if args.root is None:
        if entry.needs_root:
            raise CLIError(f"dataset {entry.name!r} needs --root DIR (the folder of its files)")
        return None
    root = Path(args.root).expanduser()
    if not root.is_dir():
        raise CLIError(f"--root {root}: not a folder")
    return root


def run_check(args: argparse.Namespace) -> int:
    from fcnkit.data.check import check

    entry = _entry(args.name)
    root = _root(args, entry)
    for s in args.split or []:
        if s not in entry.splits:
            raise CLIError(f"dataset {args.name!r} has no split {s!r}; splits: {entry.splits}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reports = check(args.name, root, args.split, parse_options(args.option), args.limit)
    except (TypeError, ValueError) as err:
        raise CLIError(f"{args.name}: {err}") from None
    notes = [str(w.message) for w in caught] + [n for r in reports for n in r.notes]
    for note in dict.fromkeys(notes):
        print(f"note: {note}")
    n_problems = 0
    for r in reports:
        if r.skipped:
            print(f"[{r.split}] skipped: {r.skipped}")
            continue
        scope = f"{r.checked} of {r.total}" if r.checked < r.total else f"all {r.total}"
        status = "OK" if not r.problems else f"{len(r.problems)} problem(s)"
        print(f"[{r.split}] checked {scope} samples: {status}")
        for p in r.problems[: args.max_problems]:
            print(f"  - {p}")
        if len(r.problems) > args.max_problems:
            print(f"  ... and {len(r.problems) - args.max_problems} more")
        n_problems += len(r.problems)
    if n_problems:
        print(f"{args.name}: {n_problems} problem(s) found", file=sys.stderr)
        return 1
    print(f"{args.name}: no problems found")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from fcnkit.data import create_dataset
    from fcnkit.data.base import DatasetError
    from fcnkit.data.check import sample_indices
    from fcnkit.data.stats import (
        class_weights_line,
        format_table,
        sample_overlays,
        target_palettes,
        write_stats,
    )
    from fcnkit.plots import plot_class_frequency, sample_overlay_grid

    entry = _entry(args.name)
    root = _root(args, entry)
    split = args.split or entry.splits[0]
    if split not in entry.splits:
        raise CLIError(f"dataset {args.name!r} has no split {split!r}; splits: {entry.splits}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = create_dataset(args.name, root, split, **parse_options(args.option))
    except (DatasetError, TypeError, ValueError) as err:
        raise CLIError(f"{args.name} ({split}): {err}") from None
    for note in dict.fromkeys([str(w.message) for w in caught] + getattr(dataset, "notes", [])):
        print(f"note: {note}")
    out = check_out_folder(args.out or Path("data-stats") / f"{args.name}-{split}")
    title = f"{args.name} {split}"
    stats = write_stats(dataset, out, args.limit, source=title)
    plot_class_frequency(stats, target_palettes(dataset), out / "class_frequency.png", title)
    picked = sample_indices(len(dataset), args.samples)
    sample_overlay_grid(sample_overlays(dataset, picked), out / "samples.png")
    print(format_table(stats, getattr(dataset, "eval_exclude", None)))
    primary = next(iter(stats.targets.values()))
    print(f"median-frequency class weights: {class_weights_line(primary.median_frequency_weights)}")
    names = ("class_frequency.csv", "class_weights.yaml", "class_frequency.png", "samples.png")
    print(f"wrote {', '.join(str(out / n) for n in names)}")
    return 0
