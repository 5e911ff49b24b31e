"""``fcnkit analyze``: the paper's analysis tools.

    fcnkit analyze stride-bound DATASET --root DIR [--split S] [--option k=v ...]
        [--strides 4,8,16,32,64,128] [--target T] [--limit N] [--json OUT]

``stride-bound`` (Appendix A of the paper): each label map downsampled by each stride
(majority vote per cell, and nearest sampling) and upsampled back, scored against the
originals with the four metrics: the best any predictor at that output stride can score.
See :mod:`fcnkit.analysis` for the exact rules (ties, ignored pixels).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from fcnkit.cli import CLIError


def _strides(text: str) -> tuple[int, ...]:
    try:
        strides = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 4,8,16, got {text!r}") from None
    if not strides or any(s < 1 for s in strides):
        raise argparse.ArgumentTypeError(f"expected positive integers like 4,8,16, got {text!r}")
    return strides


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("analyze", help="the paper's analysis tools (stride-label bound)")
    sub = p.add_subparsers(dest="analyze_command", metavar="ACTION", required=True)
    q = sub.add_parser(
        "stride-bound",
        help="upper bound of each output stride: labels down- and upsampled, scored",
        description="The paper's Appendix A: every label map is downsampled by each stride "
        "(majority vote per cell, ignore pixels not voting, ties to the smallest class index; "
        "and nearest sampling of each cell's centre pixel), upsampled back (nearest) and "
        "scored against the original with the four metrics (the dataset's ignore label and "
        "excluded classes honoured): the best any predictor at that output stride can score.",
    )
    q.add_argument("name", metavar="DATASET", help="dataset name (see `fcnkit data list`)")
    q.add_argument("--root", default=None, help="the folder holding the dataset's files")
    q.add_argument("--split", default=None, help="split (default: the dataset's first)")
    q.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="dataset option, repeatable; values are JSON where they parse, else strings",
    )
    q.add_argument(
        "--strides",
        type=_strides,
        default=None,
        metavar="S,S,...",
        help="output strides (default: 4,8,16,32,64,128, the paper's factors)",
    )
    q.add_argument(
        "--target",
        action="append",
        default=None,
        metavar="T",
        help="label of a multi-target dataset (SIFT Flow: sem, geo); repeatable "
        "(default: every label)",
    )
    q.add_argument("--limit", type=int, default=None, metavar="N", help="first N samples only")
    q.add_argument(
        "--no-boundary-f",
        action="store_true",
        help="skip the boundary F-score's bound (as `fcnkit eval`)",
    )
    q.add_argument(
        "--no-size-iu",
        action="store_true",
        help="skip the bound of IU by object size (small/medium/large)",
    )
    q.add_argument("--json", default=None, metavar="OUT", help="also write the numbers as JSON")
    q.set_defaults(func=run_stride_bound)


def run_stride_bound(args: argparse.Namespace) -> int:
    from fcnkit.analysis import DEFAULT_STRIDES, PAPER_STRIDE_BOUND, stride_bound
    from fcnkit.cli.data import parse_options
    from fcnkit.data import DatasetError, create_dataset, get_dataset_entry
    from fcnkit.metrics import DEFAULT_BOUNDARY_TOLERANCE

    try:
        entry = get_dataset_entry(args.name)
    except ValueError as err:
        raise CLIError(str(err)) from None
    root = Path(args.root).expanduser() if args.root is not None else None
    if root is None and entry.needs_root:
        raise CLIError(f"dataset {args.name!r} needs --root DIR (the folder of its files)")
    if root is not None and not root.is_dir():
        raise CLIError(f"--root {root}: not a folder")
    split = args.split or entry.splits[0]
    if split not in entry.splits:
        raise CLIError(f"dataset {args.name!r} has no split {split!r}; splits: {entry.splits}")
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be at least 1, got {args.limit}")
    strides = args.strides or DEFAULT_STRIDES
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = create_dataset(args.name, root, split, **parse_options(args.option))
        for note in dict.fromkeys(
            [str(w.message) for w in caught] + list(getattr(dataset, "notes", []))
        ):
            print(f"note: {note}")
        result = stride_bound(
            dataset, strides, targets=args.target, limit=args.limit,
            boundary_f=not args.no_boundary_f, size_iu=not args.no_size_iu,
        )  # fmt: skip
    except (DatasetError, TypeError, ValueError) as err:
        raise CLIError(f"{args.name} ({split}): {err}") from None
    wall = time.perf_counter() - start

    print(
        f"stride-label upper bound: {args.name} {split}, {result.num_images} images, "
        "labels downsampled by each stride and upsampled back (percent)"
    )
    print("majority: most frequent labelled class per cell (ties: smallest class index);")
    print("nearest: each cell's centre pixel (unlabelled centre: its pixels count as errors)")
    for target, classes in result.classes.items():
        excluded = result.exclude[target]
        title = f"[{target}] " if target else ""
        note = f", excluding {', '.join(excluded)}" if excluded else ""
        print(f"\n{title}{len(classes)} classes{note}")
        print(result.table(target))
        beyond = result.beyond_table(target)
        if beyond:
            print(f"beyond mean IU (boundary F: tolerance {DEFAULT_BOUNDARY_TOLERANCE} of the "
                  "diagonal; IU by the size of the true regions):")  # fmt: skip
            print(beyond)
    paper = ", ".join(f"{s}: {PAPER_STRIDE_BOUND[s]}" for s in sorted(PAPER_STRIDE_BOUND))
    print(f"\npaper (Appendix A, mean IU, PASCAL VOC 2011 val subset): {paper}")
    print(f"wall time {wall:.1f} s")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "dataset": args.name,
            "split": split,
            "root": str(root) if root is not None else None,
            "command": "fcnkit " + " ".join(sys.argv[1:]),
            "wall_seconds": wall,
            **result.to_dict(),
        }
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {out}")
    return 0
